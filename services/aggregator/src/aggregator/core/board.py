"""Leaderboard rules: which published entry stands for a model (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aggregator.core.uncertainty import rank_groups


@dataclass(frozen=True)
class Publication:
    """A tenant's request to show (or withdraw) a submission on a leaderboard."""

    submission_id: str
    tenant_id: str
    published: bool
    track: int
    board: int
    cycle: str
    names: Mapping[str, str]
    """Shown names as given: model_name, model_version, organisation, parameter_count."""
    open_source: bool
    release_date: str


def is_partial(entry: Mapping[str, Any]) -> bool:
    """The entry's report misses some dataset of its track (entries published before reports
    were checked are complete)."""
    return bool(entry.get("partial", False))


def select(
    entries: Sequence[Mapping[str, Any]], best: bool, per_cycle: bool
) -> list[Mapping[str, Any]]:
    """One entry per model (tenant, name, version), and per cycle when listing history: the
    latest published, or the best: a complete entry before any partial one, then the highest
    overall (ties: the earlier one)."""
    chosen: dict[tuple[str, ...], Mapping[str, Any]] = {}
    for e in sorted(entries, key=lambda e: (e["published_at"], e["_id"])):
        key: tuple[str, ...] = (e["tenant_id"], e["model_name"], e["model_version"])
        if per_cycle:
            key += (e["cycle"],)
        held = chosen.get(key)
        if (
            not best
            or held is None
            or (not is_partial(e), e["overall"]) > (not is_partial(held), held["overall"])
        ):
            chosen[key] = e
    return list(chosen.values())


def board_order(entries: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], int, int]]:
    """(entry, rank, rank group) in board order: the complete entries first, ranked among
    themselves by rank groups (``rank_groups``: overlapping intervals share a rank); then the
    partial ones, whose overall averages fewer dimensions and compares with nothing, by overall
    (highest first, ties by id), unranked (rank and group 0)."""
    complete = {e["_id"]: e for e in entries if not is_partial(e)}
    ranked = rank_groups(
        [(i, e["overall"], e["overall_low"], e["overall_high"]) for i, e in complete.items()]
    )
    partial = sorted((e for e in entries if is_partial(e)), key=lambda e: (-e["overall"], e["_id"]))
    return [(complete[r.name], r.rank, r.group) for r in ranked] + [(e, 0, 0) for e in partial]
