"""What the metric scorer's use case needs from the world (implemented in adapters/)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

Orders = Mapping[str, tuple[int, ...]]
"""item_id -> the option order one download showed (absent: canonical order)."""


class SealedKey(Protocol):
    """The sealed key of one pool item, as the scorer reads it (never leaves the scorer)."""

    @property
    def item_id(self) -> str: ...
    @property
    def dataset(self) -> str: ...
    @property
    def dimension(self) -> str: ...
    @property
    def group_id(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def rule(self) -> str: ...
    @property
    def reference(self) -> tuple[str, ...]: ...
    @property
    def key_points(self) -> tuple[str, ...]: ...
    @property
    def rubric_id(self) -> str: ...


class PoolKeys(Protocol):
    """The sealed keys of frozen pools (immutable: the same list object while cached)."""

    async def keys(self, pool_id: str) -> Sequence[SealedKey]:
        """The pool's keys in pool order (ordinal = index)."""
        ...

    async def coverage(self, pool_id: str) -> Mapping[str, str]:
        """Dataset -> dimension of every dataset of the pool's track: what a report on the
        pool must cover (empty for pools frozen before it was recorded)."""
        ...


class Variants(Protocol):
    """The option orders each submission's download showed."""

    async def orders(self, submission_id: str) -> Orders: ...


class Publisher(Protocol):
    """Publishes events (medbench_messaging Outgoing records) and returns once acknowledged."""

    async def publish(self, batch: Sequence[Any]) -> None: ...
