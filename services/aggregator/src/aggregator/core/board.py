"""Leaderboard rules: which published entry stands for a model (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


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


def select(
    entries: Sequence[Mapping[str, Any]], best: bool, per_cycle: bool
) -> list[Mapping[str, Any]]:
    """One entry per model (tenant, name, version), and per cycle when listing history: the
    latest published, or the best overall (ties: the earlier one)."""
    chosen: dict[tuple[str, ...], Mapping[str, Any]] = {}
    for e in sorted(entries, key=lambda e: (e["published_at"], e["_id"])):
        key: tuple[str, ...] = (e["tenant_id"], e["model_name"], e["model_version"])
        if per_cycle:
            key += (e["cycle"],)
        held = chosen.get(key)
        if not best or held is None or e["overall"] > held["overall"]:
            chosen[key] = e
    return list(chosen.values())
