"""Merging an item's components from several scorers; judge failures are not zeros."""

from __future__ import annotations

from typing import Any

from aggregator.core.parts import merged_items


def part(item: str, component: str, score: float, **extra: Any) -> dict[str, Any]:
    return {
        "item_id": item,
        "dataset": "MedHC",
        "dimension": "medical_knowledge",
        "group_id": item,
        "component": component,
        "score": score,
        "components": [[component, score]],
        "merge_rule": "mean",
        **extra,
    }


def test_metric_and_judge_components_merge_by_the_rule() -> None:
    merged = merged_items([part("a", "metric", 0.5), part("a", "judge", 0.9)])
    assert [(m.item_id, round(m.score, 9)) for m in merged] == [("a", 0.7)]


def test_an_unscored_judge_part_leaves_the_metric_component_alone() -> None:
    merged = merged_items([part("a", "metric", 0.5), part("a", "judge", 0.0, unscored=True)])
    assert [(m.item_id, m.score) for m in merged] == [("a", 0.5)]


def test_an_item_only_the_judge_scores_is_left_out_when_the_judge_failed() -> None:
    merged = merged_items([part("a", "judge", 0.0, unscored=True), part("b", "judge", 0.8)])
    assert [(m.item_id, m.score) for m in merged] == [("b", 0.8)]
