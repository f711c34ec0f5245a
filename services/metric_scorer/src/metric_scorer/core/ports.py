"""What the metric scorer's use case needs from the world (implemented in adapters/)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from metric_scorer.core.canary import LeakSignal

Orders = Mapping[str, tuple[int, ...]]
"""item_id -> the option order one download showed (absent: canonical order)."""


class CanaryKey(Protocol):
    """The sealed key of one canary of a download (medbench_storage.variants.CanaryKey)."""

    @property
    def kind(self) -> str: ...
    @property
    def originals(self) -> tuple[str, ...]: ...
    @property
    def own_key(self) -> bool:
        """Scored against the pool key altered by `alter_key` (else the pool key's, through the
        download's order for a choice item)."""
        ...

    def alter_key(self, text: str) -> str:
        """A text of the pool key (reference, key point) as this canary's key reads it."""
        ...


class Variant(Protocol):
    """What one download showed: its option orders and its canaries."""

    @property
    def orders(self) -> Orders: ...
    @property
    def canaries(self) -> Mapping[str, CanaryKey]: ...


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
    """What each submission's download showed (the rotator's sealed variants)."""

    async def variant(self, submission_id: str) -> Variant: ...


class LeakSignals(Protocol):
    """Where answers that are right for a canary's original are recorded (maintainers only)."""

    async def record(self, signals: Sequence[LeakSignal]) -> None:
        """Stores the signals (idempotent per submission and item)."""
        ...


class Publisher(Protocol):
    """Publishes events (medbench_messaging Outgoing records) and returns once acknowledged."""

    async def publish(self, batch: Sequence[Any]) -> None: ...
