"""Merging an item's components from several scorers; judge failures are not zeros."""

from __future__ import annotations

from typing import Any

from aggregator.core.parts import dataset_metrics, entry_of, merge_parts, merged_items


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


def judged_key_points(item: str, verdict: float, recall: float, **extra: Any) -> dict[str, Any]:
    """A judge part that carries the judge's key-point recall (no metric part for it)."""
    return {
        **part(item, "judge", verdict, **extra),
        "metric": "key_point_recall+judge",
        "components": [["judge", verdict], ["key_point_recall", recall]],
    }


def test_a_judge_part_with_judged_key_points_merges_both_by_the_rule() -> None:
    merged = merged_items([judged_key_points("a", 0.8, 0.4)])
    assert [(m.item_id, round(m.score, 9)) for m in merged] == [("a", 0.6)]
    # Unscored (the judge failed): its key-point recall is unknown too, not a zero.
    assert merged_items([judged_key_points("b", 0.0, 0.0, unscored=True)]) == []
    # The report's metric spec says the judge part's spec when no metric part names one.
    records = [judged_key_points("a", 0.8, 0.4), part("c", "metric", 1.0, metric="choice_single")]
    assert dataset_metrics(entry_of(r) for r in records) == {"MedHC": "choice_single"}
    assert dataset_metrics([entry_of(judged_key_points("a", 0.8, 0.4))]) == {
        "MedHC": "key_point_recall+judge"
    }


def test_each_panel_judges_alternative_keeps_the_judged_key_point_recall() -> None:
    panel = {"judge": {"judge_scores": [0.2, 1.0]}}
    [(item, alternatives)] = merge_parts([judged_key_points("a", 0.6, 0.5, **panel)])
    assert round(item.score, 9) == 0.55
    # Each judge's score replaces the panel's; the recall stays in every alternative.
    assert [round(a, 9) for a in alternatives] == [0.35, 0.75]
    # With a metric part besides (e.g. micro_f1), every other component stays too.
    [(_, alternatives)] = merge_parts(
        [part("a", "metric", 0.1), judged_key_points("a", 0.6, 0.5, **panel)]
    )
    assert [round(a, 9) for a in alternatives] == [round((0.1 + 0.5 + j) / 3, 9) for j in (0.2, 1)]
