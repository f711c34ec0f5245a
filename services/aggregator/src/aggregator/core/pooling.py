"""Pooled micro-F1: the dataset score of datasets whose metric has a ``micro_f1`` component
(pure, no I/O).

The metric scorer gives each item of such a dataset its own F1 and its tp/fp/fn counts. The
dataset's F1 is not the mean of the items' F1 but the F1 of the counts summed over its items
(pooled micro-F1, as in CMeEE/CMeIE/CHIP-CDEE and MedReportQC): an item with one fact weighs
less than an item with twenty. Where the metric has other components too
(``micro_f1+key_point_recall+judge``), the pooled F1 takes the place of every item's own F1
inside the item's merge, so that under the default "mean" rule the dataset score is the mean of
the pooled F1 and the other components' means.

The bootstrap (``uncertainty.py``) resamples items and recomputes the pooled F1 of each
resample with the same rule (``Pooled.at``), so point estimate and interval agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

POOLED_COMPONENT = "micro_f1"
"""The metric component whose dataset-level value is pooled."""


def pooled_f1(tp: int, fp: int, fn: int) -> float:
    """2tp / (2tp + fp + fn) in [0, 1]; 1.0 when nothing was expected nor predicted (the metric
    scorer's rule for one item, applied to the dataset's sums)."""
    denominator = 2 * tp + fp + fn
    return 1.0 if denominator == 0 else 2 * tp / denominator


@dataclass(slots=True, frozen=True)
class Pooled:
    """How an item of a pooled dataset scores once its dataset's pooled F1 is known."""

    tp: int
    fp: int
    fn: int
    own: float
    """The item's own F1 (its ``micro_f1`` component), in [0, 1]."""
    share: float
    """Merge rule "mean": the F1 component's weight in the item's score (1 / its components)."""
    cap: float | None = None
    """Merge rule "min": the least of the item's other components (1.0 when it has none);
    None under "mean"."""

    def at(self, score: float, f1: float) -> float:
        """The item's score (``score``: with its own F1) when its F1 is the dataset's ``f1``."""
        if self.cap is not None:
            return min(f1, self.cap)
        # Clamped: float rounding may step a hair outside [0, 1].
        return min(1.0, max(0.0, score + self.share * (f1 - self.own)))


def dataset_f1(pooled: Sequence[Pooled | None]) -> float | None:
    """The pooled F1 over the items that carry counts; None when none does."""
    counted = [p for p in pooled if p is not None]
    if not counted:
        return None
    return pooled_f1(
        sum(p.tp for p in counted), sum(p.fp for p in counted), sum(p.fn for p in counted)
    )


def pooled_scores(scores: Sequence[float], pooled: Sequence[Pooled | None]) -> list[float]:
    """The items' scores with the dataset's pooled F1 in place of each item's own (unchanged
    where the dataset has no counted item)."""
    f1 = dataset_f1(pooled)
    if f1 is None:
        return list(scores)
    return [s if p is None else p.at(s, f1) for s, p in zip(scores, pooled, strict=True)]


def pooling_of(
    components: Sequence[tuple[str, float]], counts: tuple[int, int, int], rule: str
) -> Pooled | None:
    """The pooling of an item from all its merged components and the counts of its metric part;
    None when the item has no ``micro_f1`` component."""
    own = [value for name, value in components if name == POOLED_COMPONENT]
    if len(own) != 1:
        return None
    others = [value for name, value in components if name != POOLED_COMPONENT]
    tp, fp, fn = counts
    if rule == "min":
        return Pooled(tp, fp, fn, own[0], 0.0, cap=min(others, default=1.0))
    return Pooled(tp, fp, fn, own[0], 1.0 / len(components))
