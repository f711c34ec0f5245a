"""Tests for item-level metric dispatch."""

from __future__ import annotations

import pytest

from metric_scorer.core.choice import METRICS
from metric_scorer.core.metrics import score_item
from metric_scorer.core.types import ItemKey, ItemResult, UnknownMetric


def _key(metric: str, reference: str, item_id: str = "MedExam-1-p1") -> ItemKey:
    return ItemKey(item_id=item_id, dataset="MedExam", metric=metric, reference=tuple(reference))


def test_choice_metrics_are_registered() -> None:
    assert {"choice_single", "choice_multi"} <= set(METRICS)


@pytest.mark.parametrize(
    ("answer", "metric", "reference", "score", "parsed"),
    [
        ("答案：<D>", "choice_single", "D", 1.0, "D"),
        ("<B>", "choice_single", "D", 0.0, "B"),
        ("B、D", "choice_single", "D", 0.0, "B,D"),
        ("", "choice_single", "D", 0.0, ""),
        ("<C, A>", "choice_multi", "AC", 1.0, "A,C"),
        ("ABC", "choice_multi", "ABC", 1.0, "A,B,C"),
        ("<A>", "choice_multi", "AC", 0.0, "A"),
    ],
)
def test_score_item_scores_choice_answers_zero_or_one(
    answer: str, metric: str, reference: str, score: float, parsed: str
) -> None:
    result = score_item(answer, _key(metric, reference))
    assert result == ItemResult(item_id="MedExam-1-p1", metric=metric, score=score, parsed=parsed)


def test_score_item_rejects_an_unknown_metric_with_a_value_error() -> None:
    with pytest.raises(UnknownMetric, match="no_such_metric") as err:
        score_item("<A>", _key("no_such_metric", "A"))
    assert isinstance(err.value, ValueError)


def test_item_result_refuses_scores_outside_the_unit_interval() -> None:
    with pytest.raises(ValueError):
        ItemResult(item_id="x", metric="choice_single", score=1.5, parsed="A")
