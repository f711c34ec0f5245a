"""The types every metric shares: the sealed key an answer is scored against and the result
(pure, no I/O). Metric modules import these; library.py collects the metrics into one table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


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
    options: int = 0
    """Options of a choice item as shown (A up to the options-th letter), when known; 0: not
    known (A-J, or up to the reference's highest letter)."""


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
