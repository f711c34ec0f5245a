"""In-memory fakes of the metric scorer's ports (metric_scorer.core.ports)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medbench_messaging.publisher import Outgoing
from medbench_messaging.topics import Topic
from medbench_storage.pool_keys import PoolKey
from medbench_storage.variants import CanaryKey, SubmissionVariant
from metric_scorer.core.canary import LeakSignal


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
    """Variants: per submission, item_id -> shown option order (absent: canonical order) and
    item_id -> canary key."""

    def __init__(
        self,
        orders: dict[str, dict[str, tuple[int, ...]]] | None = None,
        canaries: dict[str, dict[str, CanaryKey]] | None = None,
    ) -> None:
        self._orders = orders or {}
        self._canaries = canaries or {}

    async def variant(self, submission_id: str) -> SubmissionVariant:
        return SubmissionVariant(
            self._orders.get(submission_id, {}), self._canaries.get(submission_id, {})
        )


class InMemoryLeakSignals:
    """LeakSignals: keeps one signal per (submission, item), as the sealed collection does."""

    def __init__(self) -> None:
        self.signals: dict[tuple[str, str], LeakSignal] = {}

    async def record(self, signals: Sequence[LeakSignal]) -> None:
        for s in signals:
            self.signals[s.submission_id, s.item_id] = s


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
