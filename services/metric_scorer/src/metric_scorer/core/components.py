"""Metric specs with several components (e.g. "key_point_recall+judge"): which the metric
scorer computes and which go to the judge (pure, no I/O). How an item's components merge is
the aggregator's arithmetic, under the rule the metric scorer names (scoring_events.proto
MergeRule)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from metric_scorer.core.metrics import score_item
from metric_scorer.core.types import Counts, ItemKey

JUDGE = "judge"
KEY_POINTS = "key_point_recall"
"""Key-point recall as the registry names it; the component's name when the judge decides it."""
LEXICAL_KEY_POINTS = "key_point_recall_lexical"
"""The component's name when the metric scorer matched the key points lexically (containment or
fuzzy match, core/keypoints.py): a fallback that never passes for the judged recall."""


@dataclass(frozen=True)
class Plan:
    """What scoring an item takes."""

    objective: tuple[str, ...]
    """Components computed here (metric library names), in spec order."""
    judged: bool
    """Whether the judge scores it too."""
    judged_key_points: bool = False
    """Whether the judge decides its key-point recall (its part carries the component)."""
    spec: str = ""
    """The spec as scored, reported with the item's parts: the registry's, with
    key_point_recall named key_point_recall_lexical when it was matched lexically."""

    @property
    def records(self) -> int:
        """ItemScore records the item will have (one per scorer involved)."""
        return (1 if self.objective else 0) + (1 if self.judged else 0)


def plan(metric_spec: str, key_points: Sequence[str], *, judge_key_points: bool) -> Plan:
    """Components of a spec; key-point recall needs key points (without them the item is
    judged on the rest: a missing key must not score as a wrong answer).

    judge_key_points: the judge decides key-point recall wherever the spec names the judge too
    (the judge request carries the item's key points, its part returns the component); else,
    and for a spec without the judge, the key points are matched lexically here and the
    component is named key_point_recall_lexical, in the parts and in the reported spec.
    """
    parts = tuple(p for p in metric_spec.split("+") if p)
    judged = JUDGE in parts
    scored_points = KEY_POINTS in parts and bool(key_points)
    to_judge = scored_points and judged and judge_key_points
    objective = tuple(
        p for p in parts if p != JUDGE and not (p == KEY_POINTS and not scored_points)
    )
    if to_judge:
        objective = tuple(p for p in objective if p != KEY_POINTS)
    lexical = scored_points and not to_judge
    spec = "+".join(LEXICAL_KEY_POINTS if lexical and p == KEY_POINTS else p for p in parts)
    return Plan(objective, judged, to_judge, spec)


def component_name(metric: str) -> str:
    """The name a component computed here is recorded under (key-point recall is labelled
    lexical: the judged one is the judge's)."""
    return LEXICAL_KEY_POINTS if metric == KEY_POINTS else metric


@dataclass(frozen=True)
class ObjectiveScore:
    """The objective components of one item."""

    components: tuple[tuple[str, float], ...]
    parsed: str
    counts: Counts | None


def score_objective(answer: str | None, key: ItemKey, components: Sequence[str]) -> ObjectiveScore:
    """Scores each component (metric library names; recorded under ``component_name``); a
    missing answer (None) scores 0 on all of them."""
    scored: list[tuple[str, float]] = []
    parsed: list[str] = []
    counts = None
    for name in components:
        label = component_name(name)
        if answer is None:
            scored.append((label, 0.0))
            continue
        result = score_item(
            answer, ItemKey(key.item_id, key.dataset, name, key.reference, key.key_points)
        )
        scored.append((label, result.score))
        if result.parsed:
            parsed.append(result.parsed if len(components) == 1 else f"{label}: {result.parsed}")
        counts = counts or result.counts
    return ObjectiveScore(tuple(scored), "; ".join(parsed)[:500], counts)


class HasMetric(Protocol):
    """What counting a pool's score records reads of a sealed key."""

    @property
    def metric(self) -> str: ...
    @property
    def key_points(self) -> tuple[str, ...]: ...


def expected_scores(pool: Sequence[HasMetric], *, judge_key_points: bool) -> int:
    """ItemScore records a submission of this pool will have in all, under the same routing of
    key-point recall as the items are scored with (``plan``)."""
    # A plan depends on the metric and on whether the item has key points: planned once per
    # kind, not once per item.
    kinds = Counter((k.metric, bool(k.key_points)) for k in pool)
    return sum(
        n * plan(metric, ("",) if has else (), judge_key_points=judge_key_points).records
        for (metric, has), n in kinds.items()
    )


class PoolTotals:
    """``expected_scores`` of a pool, counted once per key list: a pool is immutable, and
    counting a 700,000-item pool for every batch made scoring quadratic in the pool's size.
    Keeps as many pools as the key store caches (a reloaded key list is counted again)."""

    def __init__(self, count: Callable[[Sequence[HasMetric]], int], kept: int = 4) -> None:
        """count: ``expected_scores`` under the scorer's routing of key-point recall."""
        self._count = count
        self.kept = kept
        self._totals: dict[str, tuple[Sequence[HasMetric], int]] = {}

    def __len__(self) -> int:
        return len(self._totals)

    def total(self, pool_id: str, pool: Sequence[HasMetric]) -> int:
        held = self._totals.get(pool_id)
        if held is not None and held[0] is pool:
            return held[1]
        total = self._count(pool)
        if len(self._totals) >= self.kept:
            self._totals.pop(next(iter(self._totals)))
        self._totals[pool_id] = (pool, total)
        return total
