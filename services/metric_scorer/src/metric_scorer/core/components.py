"""Metric specs with several components (e.g. "key_point_recall+judge"): which the metric
scorer computes, which go to the judge, and how they merge (pure, no I/O)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from metric_scorer.core.metrics import Counts, ItemKey, score_item

JUDGE = "judge"
MERGE_RULES = ("mean", "min")


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


def merge(scores: Sequence[float], rule: str = "mean") -> float:
    """An item's score from all its components (from every scorer)."""
    if not scores:
        raise ValueError("no component scores to merge")
    if rule == "mean":
        return math.fsum(scores) / len(scores)
    if rule == "min":
        return min(scores)
    raise ValueError(f"unknown merge rule {rule!r}; known: {MERGE_RULES}")
