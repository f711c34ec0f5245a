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


@dataclass(frozen=True)
class Plan:
    """What scoring an item takes."""

    objective: tuple[str, ...]
    """Components computed here, in spec order."""
    judged: bool
    """Whether the judge scores it too."""

    @property
    def records(self) -> int:
        """ItemScore records the item will have (one per scorer involved)."""
        return (1 if self.objective else 0) + (1 if self.judged else 0)


def plan(metric_spec: str, key_points: Sequence[str]) -> Plan:
    """Components of a spec; key-point recall needs key points (without them the item is
    judged on the rest: a missing key must not score as a wrong answer)."""
    parts = tuple(p for p in metric_spec.split("+") if p)
    objective = tuple(
        p for p in parts if p != JUDGE and not (p == "key_point_recall" and not key_points)
    )
    return Plan(objective, JUDGE in parts)


@dataclass(frozen=True)
class ObjectiveScore:
    """The objective components of one item."""

    components: tuple[tuple[str, float], ...]
    parsed: str
    counts: Counts | None


def score_objective(answer: str | None, key: ItemKey, components: Sequence[str]) -> ObjectiveScore:
    """Scores each component; a missing answer (None) scores 0 on all of them."""
    scored: list[tuple[str, float]] = []
    parsed: list[str] = []
    counts = None
    for name in components:
        if answer is None:
            scored.append((name, 0.0))
            continue
        result = score_item(
            answer, ItemKey(key.item_id, key.dataset, name, key.reference, key.key_points)
        )
        scored.append((name, result.score))
        if result.parsed:
            parsed.append(result.parsed if len(components) == 1 else f"{name}: {result.parsed}")
        counts = counts or result.counts
    return ObjectiveScore(tuple(scored), "; ".join(parsed)[:500], counts)


class HasMetric(Protocol):
    """What counting a pool's score records reads of a sealed key."""

    @property
    def metric(self) -> str: ...
    @property
    def key_points(self) -> tuple[str, ...]: ...


def expected_scores(pool: Sequence[HasMetric]) -> int:
    """ItemScore records a submission of this pool will have in all."""
    # A plan depends on the metric and on whether the item has key points: planned once per
    # kind, not once per item.
    kinds = Counter((k.metric, bool(k.key_points)) for k in pool)
    return sum(n * plan(metric, ("",) if has else ()).records for (metric, has), n in kinds.items())


class PoolTotals:
    """``expected_scores`` of a pool, counted once per key list: a pool is immutable, and
    counting a 700,000-item pool for every batch made scoring quadratic in the pool's size.
    Keeps as many pools as the key store caches (a reloaded key list is counted again)."""

    def __init__(
        self, count: Callable[[Sequence[HasMetric]], int] = expected_scores, kept: int = 4
    ) -> None:
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
