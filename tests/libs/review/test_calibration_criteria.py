"""The calibration page shows the agreement per criterion (and says when a calibration has none)."""

from __future__ import annotations

from medbench.judge.v1 import judge_service_pb2
from medbench_review.pages import calibration_page


def calibration(*criteria: judge_service_pb2.CriterionAgreement) -> judge_service_pb2.Calibration:
    return judge_service_pb2.Calibration(
        calibration_id="c", judge="qwen", rubric_id="generic", rubric_version=1, criteria=criteria
    )


def test_each_criterion_has_a_row_with_n_and_both_kappas() -> None:
    interval = judge_service_pb2.KappaInterval
    page = calibration(
        judge_service_pb2.CriterionAgreement(
            criterion="医学准确性",
            n=30,
            answers=28,
            quadratic=interval(kappa=0.912, low=0.85, high=0.96),
            unweighted=interval(kappa=0.7, low=0.6, high=0.8),
        ),
        judge_service_pb2.CriterionAgreement(criterion="安全性<b>", n=0, answers=0),
    )
    _, body = calibration_page("zh", "token", page, 1)
    table = body.split('<table id="criteria">', 1)[1].split("</table>", 1)[0]
    assert '<th scope="row">医学准确性</th><td>30</td><td>28</td>' in table
    assert "0.912 [0.850, 0.960]" in table and "0.700 [0.600, 0.800]" in table
    assert '<th scope="row">安全性&lt;b&gt;</th><td>0</td><td>0</td><td>—</td><td>—</td>' in table
    assert "各评分维度一致性" in body
    _, english = calibration_page("en", "token", page, 1)
    assert "Agreement per criterion" in english


def test_a_calibration_without_criteria_says_to_measure_again() -> None:
    _, body = calibration_page("en", "token", calibration(), 1)
    assert 'id="criteria"' not in body
    assert "measured before the judge scored each criterion" in body
