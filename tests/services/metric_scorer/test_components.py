"""Combined metric specs: planning and objective components (pure). The merge rules are the
aggregator's arithmetic (tests/services/aggregator/test_report.py)."""

from __future__ import annotations

import pytest

from metric_scorer.core.components import Plan, plan, score_objective
from metric_scorer.core.types import ItemKey

KPR, LEX = "key_point_recall+judge", "key_point_recall_lexical+judge"


@pytest.mark.parametrize(
    ("spec", "key_points", "judge_key_points", "expected"),
    [
        ("choice_single", (), True, Plan(("choice_single",), False, False, "choice_single")),
        # The judge decides the key points of an item it judges: nothing objective is left.
        (KPR, ("要点",), True, Plan((), True, True, KPR)),
        # With no judge deciding them, they are matched here, and the spec says so.
        (KPR, ("要点",), False, Plan(("key_point_recall",), True, False, LEX)),
        # No key points: judged on the rest, never scored 0 for a key the bank lacks.
        (KPR, (), True, Plan((), True, False, KPR)),
        (KPR, (), False, Plan((), True, False, KPR)),
        ("judge", (), True, Plan((), True, False, "judge")),
        (
            "label_accuracy+key_point_recall+judge",
            ("a",),
            True,
            Plan(("label_accuracy",), True, True, "label_accuracy+key_point_recall+judge"),
        ),
        (
            "label_accuracy+key_point_recall+judge",
            ("a",),
            False,
            Plan(
                ("label_accuracy", "key_point_recall"),
                True,
                False,
                "label_accuracy+key_point_recall_lexical+judge",
            ),
        ),
        # A spec without the judge: nobody else could decide the key points; labelled lexical.
        (
            "choice_single+key_point_recall",
            ("a",),
            True,
            Plan(
                ("choice_single", "key_point_recall"),
                False,
                False,
                "choice_single+key_point_recall_lexical",
            ),
        ),
    ],
)
def test_plan_splits_objective_and_judge_components(
    spec: str, key_points: tuple[str, ...], judge_key_points: bool, expected: Plan
) -> None:
    assert plan(spec, key_points, judge_key_points=judge_key_points) == expected


def test_records_count_one_per_scorer_involved() -> None:
    assert plan("choice_single", (), judge_key_points=True).records == 1
    # Judged key points ride on the judge's part: one record, not two.
    assert plan(KPR, ("x",), judge_key_points=True).records == 1
    assert plan(KPR, ("x",), judge_key_points=False).records == 2
    assert plan("micro_f1+key_point_recall+judge", ("x",), judge_key_points=True).records == 2
    assert plan("judge", (), judge_key_points=True).records == 1


def test_lexical_key_point_recall_is_recorded_under_its_labelled_name() -> None:
    key = ItemKey("i", "MedHC", KPR, (), ("低盐饮食", "规律服药"))
    scored = score_objective(
        "低盐饮食", key, plan(KPR, key.key_points, judge_key_points=False).objective
    )
    assert scored.components == (("key_point_recall_lexical", 0.5),)
    assert score_objective(None, key, ["key_point_recall"]).components == (
        ("key_point_recall_lexical", 0.0),
    )


def test_missing_answers_score_zero_on_every_objective_component() -> None:
    key = ItemKey("i", "MedExam", "choice_single", ("B",))
    assert score_objective(None, key, ["choice_single"]).components == (("choice_single", 0.0),)
    assert score_objective("<B>", key, ["choice_single"]).components == (("choice_single", 1.0),)


def test_every_metric_component_of_the_registry_is_implemented() -> None:
    from metric_scorer.core.library import LIBRARY
    from rotator.core.registry import load_registry
    from rotator.registry import DEFAULT_REGISTRY_PATH

    registry = load_registry(DEFAULT_REGISTRY_PATH)
    used = {c for d in registry.datasets for p in d.parts for c in p.metric.split("+")}
    assert used - {"judge"} <= set(LIBRARY), sorted(used - {"judge"} - set(LIBRARY))
