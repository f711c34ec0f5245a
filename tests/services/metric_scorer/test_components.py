"""Combined metric specs: planning and objective components (pure). The merge rules are the
aggregator's arithmetic (tests/services/aggregator/test_report.py)."""

from __future__ import annotations

import pytest

from metric_scorer.core.components import Plan, plan, score_objective
from metric_scorer.core.types import ItemKey


@pytest.mark.parametrize(
    ("spec", "key_points", "expected"),
    [
        ("choice_single", (), Plan(("choice_single",), False)),
        ("key_point_recall+judge", ("要点",), Plan(("key_point_recall",), True)),
        # No key points: judged on the rest, never scored 0 for a key the bank lacks.
        ("key_point_recall+judge", (), Plan((), True)),
        ("judge", (), Plan((), True)),
        (
            "label_accuracy+key_point_recall+judge",
            ("a",),
            Plan(("label_accuracy", "key_point_recall"), True),
        ),
    ],
)
def test_plan_splits_objective_and_judge_components(
    spec: str, key_points: tuple[str, ...], expected: Plan
) -> None:
    assert plan(spec, key_points) == expected


def test_records_count_one_per_scorer_involved() -> None:
    assert plan("choice_single", ()).records == 1
    assert plan("key_point_recall+judge", ("x",)).records == 2
    assert plan("judge", ()).records == 1


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
