"""Tests for the leaderboard arithmetic of the aggregator."""

from __future__ import annotations

import random

import pytest

from aggregator.core.report import (
    ConflictingScores,
    DatasetRule,
    DatasetScore,
    DimensionScore,
    ScoredItem,
    build_report,
    merge,
)
from medbench.scoring.v1 import scoring_events_pb2


def _item(
    item_id: str, score: float, dataset: str = "D1", dimension: str = "dim", group: str = ""
) -> ScoredItem:
    return ScoredItem(item_id, dataset, dimension, group or item_id, score)


def _binary_items(dataset: str, dimension: str, per_mille: int) -> list[ScoredItem]:
    """1000 items of which per_mille score 1, so the dataset scores per_mille / 10."""
    return [
        _item(f"{dataset}-{i}", 1.0 if i < per_mille else 0.0, dataset, dimension)
        for i in range(1000)
    ]


def test_mean_rule_averages_item_scores_on_a_0_to_100_scale() -> None:
    report = build_report([_item("a", 1.0), _item("b", 0.0), _item("c", 0.5)])
    assert report.datasets == (
        DatasetScore(
            dataset="D1", dimension="dim", score=50.0, n_items=3, n_units=3, item_mean=50.0
        ),
    )
    assert report.dimensions == (DimensionScore(dimension="dim", score=50.0, n_datasets=1),)
    assert report.overall == 50.0


def test_all_permutations_rule_counts_a_question_only_if_every_permutation_is_right() -> None:
    items = [_item(f"q1-p{p}", 1.0, group="q1") for p in range(1, 6)]
    items += [_item(f"q2-p{p}", 0.0 if p == 3 else 1.0, group="q2") for p in range(1, 6)]
    strict = build_report(items, {"D1": "all_permutations"})
    lenient = build_report(items, {})
    assert strict.datasets[0].score == 50.0
    # The per-permutation accuracy is reported beside the strict score: 9 of 10 items right.
    assert strict.datasets[0].item_mean == 90.0
    assert (strict.datasets[0].n_items, strict.datasets[0].n_units) == (10, 2)
    assert lenient.datasets[0].score == 90.0
    assert lenient.datasets[0].n_units == 10


def test_all_permutations_rule_keeps_the_score_of_a_single_item_group() -> None:
    items = [_item("scq-p1", 1.0, group="scq"), _item("scq-p2", 1.0, group="scq")]
    items.append(_item("sq", 0.4))
    report = build_report(items, {"D1": DatasetRule.ALL_PERMUTATIONS})
    assert report.datasets[0].score == pytest.approx(70.0)


def test_dimension_is_the_unweighted_mean_of_its_datasets_and_overall_of_dimensions() -> None:
    items = [_item("a1", 1.0, "A", "x"), _item("a2", 1.0, "A", "x")]
    items += [_item("b1", 0.0, "B", "x")]
    items += [_item(f"c{i}", 0.5, "C", "y") for i in range(10)]
    report = build_report(items)
    assert [d.score for d in report.dimensions] == [50.0, 50.0]
    assert report.overall == 50.0


def test_a_duplicated_item_counts_once() -> None:
    report = build_report([_item("a", 1.0), _item("a", 1.0), _item("b", 0.0)])
    assert report.datasets[0].n_items == 2
    assert report.overall == 50.0


def test_a_duplicated_item_with_another_score_is_a_conflict() -> None:
    with pytest.raises(ConflictingScores, match="'a'"):
        build_report([_item("a", 1.0), _item("a", 0.0)])


def test_no_items_is_an_error() -> None:
    with pytest.raises(ValueError):
        build_report([])


def test_an_unknown_rule_is_an_error() -> None:
    with pytest.raises(ValueError):
        build_report([_item("a", 1.0)], {"D1": "median"})


def test_a_dataset_spread_over_two_dimensions_is_an_error() -> None:
    with pytest.raises(ValueError, match="several dimensions"):
        build_report([_item("a", 1.0, dimension="x"), _item("b", 1.0, dimension="y")])


def test_scores_outside_the_unit_interval_are_refused() -> None:
    with pytest.raises(ValueError):
        _item("a", 1.01)


def test_the_report_does_not_depend_on_item_order() -> None:
    rng = random.Random(7)
    items = [
        ScoredItem(
            f"{dataset}-{q}-p{p}",
            dataset,
            f"dim{ord(dataset[-1]) % 3}",
            f"{dataset}-{q}",
            rng.choice([0.0, 1.0, rng.random()]),
        )
        for dataset in ("MedA", "MedB", "MedC", "MedD", "MedE")
        for q in range(40)
        for p in range(1, 6)
    ]
    rules = {"MedA": "all_permutations", "MedC": "all_permutations"}
    expected = build_report(items, rules)
    for _ in range(5):
        shuffled = items + rng.sample(items, 50)
        rng.shuffle(shuffled)
        assert build_report(shuffled, rules) == expected
    assert [d.dataset for d in expected.datasets] == sorted(d.dataset for d in expected.datasets)
    assert [d.dimension for d in expected.dimensions] == sorted(
        d.dimension for d in expected.dimensions
    )


# MEDBENCH_V4.md 1.7: LLM self-test leaderboard row 1, dataset scores per dimension.
LEADERBOARD_ROW_1 = {
    "knowledge_qa": [100.0, 75.7, 88.0, 85.8, 96.7, 94.2, 69.5, 86.7, 78.0, 75.3],
    "language_generation": [84.2, 80.0, 75.1, 70.3, 99.3],
    "complex_reasoning": [77.0, 43.3, 90.3, 55.2, 96.7, 80.2, 56.7, 75.4, 69.9, 89.5],
    "language_understanding": [69.6, 58.7, 90.8, 71.4, 84.6, 57.5, 95.4, 87.2, 94.7],
    "safety_ethics": [100.0, 100.0],
}


def test_reproduces_the_llm_leaderboard_row_from_its_dataset_scores() -> None:
    items = [
        item
        for dimension, scores in LEADERBOARD_ROW_1.items()
        for n, score in enumerate(scores)
        for item in _binary_items(f"{dimension}-{n}", dimension, round(score * 10))
    ]
    report = build_report(items)
    dimension_scores = {d.dimension: d.score for d in report.dimensions}
    assert dimension_scores == pytest.approx(
        {
            "knowledge_qa": 84.99,
            "language_generation": 81.78,
            "complex_reasoning": 73.42,
            "language_understanding": 78.8778,
            "safety_ethics": 100.0,
        },
        abs=1e-3,
    )
    # The board rounds dimensions before showing them (85.0, 81.8, 73.4, 78.9, 100.0 -> 83.82);
    # from unrounded dimensions the overall is 83.81, shown as the same 83.8.
    assert f"{report.overall:.1f}" == "83.8"
    assert report.overall == pytest.approx(83.82, abs=0.01)
    shown = [round(score, 1) for score in dimension_scores.values()]
    assert sum(shown) / len(shown) == pytest.approx(83.82)


# MEDBENCH_V4.md 1.7: agent submission 1; the memory datasets' own scores are not public,
# only their mean (96.7), so any pair with that mean reproduces the board.
AGENT_SUBMISSION_1 = {
    "task_planning": [88.7, 86.7, 96.7, 83.0],
    "tool_use": [88.7, 98.0, 82.7],
    "scenario_interaction": [73.3, 80.7],
    "memory_context": [100.0, 93.4],
    "multi_agent_collaboration": [84.7],
    "agent_safety_compliance": [79.3, 66.7],
}


def test_agent_overall_is_the_mean_of_dimensions_not_of_datasets() -> None:
    items = [
        _item(f"{dimension}-{n}", score / 100, f"{dimension}-{n}", dimension)
        for dimension, scores in AGENT_SUBMISSION_1.items()
        for n, score in enumerate(scores)
    ]
    report = build_report(items)
    shown = {d.dimension: f"{d.score:.1f}" for d in report.dimensions}
    assert shown == {
        "task_planning": "88.8",
        "tool_use": "89.8",
        "scenario_interaction": "77.0",
        "memory_context": "96.7",
        "multi_agent_collaboration": "84.7",
        "agent_safety_compliance": "73.0",
    }
    assert f"{report.overall:.1f}" == "85.0"
    dataset_weighted = sum(d.score for d in report.datasets) / len(report.datasets)
    assert f"{dataset_weighted:.1f}" == "85.9"


def test_merge_rules() -> None:
    assert merge([1.0, 0.0, 0.5]) == 0.5
    assert merge([0.2, 0.9], "min") == 0.2
    with pytest.raises(ValueError, match="no component"):
        merge([])
    with pytest.raises(ValueError, match="unknown merge rule"):
        merge([1.0], "median")


def test_every_merge_rule_the_wire_contract_declares_has_its_arithmetic_here() -> None:
    """scoring_events.proto MergeRule is the one declaration of the rule set; the metric
    scorer names a rule from it, and merge must know every one of them."""
    declared = [
        name.removeprefix("MERGE_RULE_").lower()
        for name in scoring_events_pb2.MergeRule.keys()  # noqa: SIM118 - an EnumTypeWrapper
        if name != "MERGE_RULE_UNSPECIFIED"
    ]
    assert declared == ["mean", "min"]
    for rule in declared:
        assert 0.2 <= merge([0.2, 0.9], rule) <= 0.9
