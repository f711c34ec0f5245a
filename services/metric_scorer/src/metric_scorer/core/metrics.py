"""Item-level metrics: score one model answer against its sealed key (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from metric_scorer.core.choice import score_choice


class UnknownMetric(ValueError):
    """The key names a metric this scorer does not implement."""


@dataclass(frozen=True)
class ItemKey:
    """The sealed side of an item: what the answer is scored against."""

    item_id: str
    dataset: str
    metric: str
    reference: tuple[str, ...]
    """Reference answer(s): option letters, labels, or one JSON text for structured formats."""
    key_points: tuple[str, ...] = ()
    """Key points of an open-ended reference (key-point recall)."""


@dataclass(frozen=True)
class Counts:
    """True positives, false positives and false negatives of one item, so that a dataset's
    micro-F1 can pool them over items instead of averaging per-item F1."""

    tp: int
    fp: int
    fn: int


@dataclass(frozen=True)
class ItemResult:
    """Score of one answer."""

    item_id: str
    metric: str
    score: float
    """In [0, 1]."""
    parsed: str
    """What the metric read from the answer, canonicalised (e.g. "A,C")."""
    counts: Counts | None = None
    """For set-valued metrics (F1): the item's tp/fp/fn."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score of {self.item_id} must lie in [0, 1], got {self.score}")


Metric = Callable[[str, ItemKey], ItemResult]


def _choice_metric(*, multi: bool) -> Metric:
    def metric(answer: str, key: ItemKey) -> ItemResult:
        outcome = score_choice(answer, frozenset(key.reference), multi=multi)
        return ItemResult(
            item_id=key.item_id,
            metric=key.metric,
            score=1.0 if outcome.correct else 0.0,
            parsed=outcome.parsed,
        )

    return metric


METRICS: dict[str, Metric] = {
    "choice_single": _choice_metric(multi=False),
    "choice_multi": _choice_metric(multi=True),
}


@lru_cache(maxsize=1)
def _library() -> dict[str, Metric]:
    # Imported late: the library's modules import this one for ItemKey and ItemResult.
    from metric_scorer.core.library import LIBRARY

    return LIBRARY


def score_item(answer: str, key: ItemKey) -> ItemResult:
    """Scores answer with the metric the key names.

    Raises:
        UnknownMetric: key.metric is not in METRICS.
    """
    metric = _library().get(key.metric)
    if metric is None:
        raise UnknownMetric(
            f"item {key.item_id!r} asks for metric {key.metric!r}; known: {sorted(_library())}"
        )
    return metric(answer, key)


def shown_reference(reference: tuple[str, ...], order: tuple[int, ...] | None) -> tuple[str, ...]:
    """The reference letters as one download shows them: order[i] is the original option at
    position i, so original letter L is shown as the letter of the position holding it."""
    if not order:
        return reference
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    position = {original: shown for shown, original in enumerate(order)}
    return tuple(sorted(letters[position[letters.index(r)]] for r in reference))
