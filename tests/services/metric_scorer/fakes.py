"""In-memory fakes of the metric scorer's ports (metric_scorer.core.ports)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medbench_messaging.publisher import Outgoing
from medbench_messaging.topics import Topic
from medbench_storage.pool_keys import PoolKey
from metric_scorer.core.ports import Orders


class InMemoryPoolKeys:
    """PoolKeys: the same list object for a pool on every call, as the real cache returns."""

    def __init__(
        self,
        pools: dict[str, list[PoolKey]],
        coverage: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.pools = pools
        self.covered = coverage or {}
        self.reads: list[str] = []

    async def keys(self, pool_id: str) -> Sequence[PoolKey]:
        self.reads.append(pool_id)
        return self.pools[pool_id]

    async def coverage(self, pool_id: str) -> Mapping[str, str]:
        return self.covered.get(pool_id, {})


class InMemoryVariants:
    """Variants: item_id -> shown option order, per submission (absent: canonical order)."""

    def __init__(self, orders: dict[str, dict[str, tuple[int, ...]]] | None = None) -> None:
        self._orders = orders or {}

    async def orders(self, submission_id: str) -> Orders:
        return self._orders.get(submission_id, {})


class InMemoryPublisher:
    """Publisher: records every batch it is given."""

    def __init__(self) -> None:
        self.batches: list[list[Outgoing]] = []

    async def publish(self, batch: Sequence[Any]) -> None:
        self.batches.append(list(batch))

    @property
    def messages(self) -> list[Outgoing]:
        return [m for batch in self.batches for m in batch]

    def on(self, topic: Topic) -> list[Any]:
        """The messages published on a topic, in order."""
        return [m.message for m in self.messages if m.topic is topic]
