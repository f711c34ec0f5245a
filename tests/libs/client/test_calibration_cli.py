"""`python -m medbench_client calibration RUBRIC`: the calibration report as maintainers read it."""

from __future__ import annotations

from medbench.judge.v1 import judge_service_pb2 as js
from medbench_client.cli import calibration_text


def report(calibrated: bool, reason: str) -> js.Calibration:
    return js.Calibration(
        judge="qwen2.5-72b-instruct",
        rubric_id="generic",
        rubric_version=1,
        rubric_hash="ab" * 32,
        n=230,
        answers=200,
        min_ratings=200,
        threshold=0.8,
        calibrated=calibrated,
        reason=reason,
        quadratic=js.KappaInterval(kappa=0.832, low=0.771, high=0.88),
        unweighted=js.KappaInterval(kappa=0.41, low=0.33, high=0.49),
        interval_method="percentile bootstrap over rated answers, 1000 resamples",
        gated_on="quadratic",
        score_bins=[0, 5, 10],
        confusion=[
            js.ConfusionRow(counts=[50, 3, 0]),
            js.ConfusionRow(counts=[4, 60, 6]),
            js.ConfusionRow(counts=[0, 7, 70]),
        ],  # fmt: skip
        dimensions=[
            js.DimensionAgreement(
                dimension="knowledge_qa",
                answers=200,
                quadratic=js.KappaInterval(kappa=0.832, low=0.771, high=0.88),
                unweighted=js.KappaInterval(kappa=0.41, low=0.33, high=0.49),
                passed=False,
            )
        ],
        physician_ceiling=js.PhysicianCeiling(
            quadratic=js.KappaInterval(kappa=0.9, low=0.85, high=0.94), answers=30, pairs=30
        ),
    )


def test_a_refused_calibration_says_why_with_both_kappas_and_the_matrix() -> None:
    text = calibration_text(report(False, "kappa lower bound 0.771 < 0.80"))
    lines = text.splitlines()
    assert lines[0] == "qwen2.5-72b-instruct on generic v1 (abababababab): NOT CALIBRATED"
    assert lines[1] == "  kappa lower bound 0.771 < 0.80"
    assert "rated answers 200 (ratings 230; minimum 200)" in text
    assert "quadratic kappa 0.832 [0.771, 0.880]" in text
    assert "unweighted kappa 0.410 [0.330, 0.490]" in text
    assert "knowledge_qa" in text and "FAIL" in text
    assert "confusion (rows: judge score, columns: physician score)" in text
    assert "      10     0     7    70" in text
    assert "ceiling: quadratic kappa 0.900 [0.850, 0.940] over 30 double-rated answers" in text


def test_a_passing_calibration_reads_calibrated() -> None:
    assert calibration_text(report(True, "")).splitlines()[0].endswith(": CALIBRATED")
