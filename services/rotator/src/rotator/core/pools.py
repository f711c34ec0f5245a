"""Pools as stored and served: their records, what a rotation asked for, assignments (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from medbench_runtime.errors import InvalidArgument
from rotator.core.rotation import RotationParams

CYCLE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
"""A rotation cycle's name, part of its pool id."""
DEFAULT_BOARD = "upload"
"""The board a request that names none means (pools from before boards are upload pools)."""


@dataclass(frozen=True)
class PoolParams:
    """What a rotated pool was asked for; a cycle is rotated once, with one set of these."""

    seed: int
    groups_per_dataset: int
    exposure_cap: int
    anchors_per_dataset: int
    datasets: tuple[str, ...]
    """Sorted."""

    @classmethod
    def of(cls, params: RotationParams, datasets: list[str]) -> PoolParams:
        return cls(
            params.seed,
            params.groups_per_dataset,
            params.exposure_cap,
            params.anchors_per_dataset,
            tuple(sorted(datasets)),
        )


@dataclass(frozen=True)
class RotationMeta:
    """What a rotated pool records of its rotation."""

    cycle: str
    seed: int
    anchor_groups: int
    params: PoolParams
    shortfalls: tuple[str, ...]
    previous_pool: str | None


@dataclass(frozen=True)
class PoolMeta:
    """What a pool records besides its items."""

    board: str
    method: str
    """"rotation" or "whole-bank"."""
    registry_version: str
    rotation: RotationMeta | None = None
    coverage: tuple[tuple[str, str], ...] = ()
    """(dataset, dimension) of every dataset of the pool's track in its registry version,
    whether the pool holds items of it or not: what a report on the pool must cover (kept
    with the sealed keys for the scorers, who pass it on to the aggregator)."""


@dataclass(frozen=True)
class PoolRecord:
    """A stored pool."""

    pool_id: str
    track: str
    item_count: int
    datasets: tuple[tuple[str, int], ...]
    """(dataset, items), in the pool's order."""
    published_at: datetime
    digest: str
    board: str = DEFAULT_BOARD
    registry_version: str = ""
    method: str = ""
    cycle: str = ""
    seed: int = 0
    anchor_groups: int = 0
    group_count: int = 0
    params: PoolParams | None = None
    shortfalls: tuple[str, ...] = ()
    disclosed_at: datetime | None = None
    """When maintainers disclosed the pool (None while it is live): its submissions' per-item
    results are released, and its question groups are retired from rotation for ever."""


@dataclass(frozen=True)
class PoolEntry:
    """One item of a stored pool, as downloads are made from it (no key)."""

    item_id: str
    ordinal: int
    dataset: str
    question: str
    answer_format: str
    image_paths: tuple[str, ...] = ()
    image_ids: tuple[str, ...] = ()
    messages: tuple[tuple[str, str], ...] = ()
    n_options: int = 0
    """Options a choice item shows (0 when it has none to reorder)."""


@dataclass(frozen=True)
class PoolKeyEntry:
    """One item's sealed key in a stored pool, as canaries are made from it."""

    item_id: str
    ordinal: int
    dataset: str
    group_id: str
    metric: str
    reference: tuple[str, ...] = ()
    key_points: tuple[str, ...] = ()
    prompt: str = ""
    """What the judge reads as the question ("" unless the judge scores the item)."""


@dataclass(frozen=True)
class Assignment:
    """The pool a submission answers (fixed at its first assignment)."""

    submission_id: str
    tenant_id: str
    track: str
    board: str
    pool_id: str


def check_rotation(cycle: str, params: RotationParams) -> None:
    """InvalidArgument unless a rotation request is well formed."""
    if not CYCLE.fullmatch(cycle):
        raise InvalidArgument("cycle must be 1-64 characters of [A-Za-z0-9._-]")
    if params.groups_per_dataset < 1 or params.exposure_cap < 1 or params.anchors_per_dataset < 0:
        raise InvalidArgument("groups_per_dataset and exposure_cap must be positive")


def pool_id_of(track: str, board: str, cycle: str) -> str:
    """A rotated pool's id: one per track, board and cycle."""
    return f"{track}-{board}-{cycle}"
