"""MongoTransactions and MongoOutbox: medbench_runtime.transactional's ports over the process's
MongoDB client and its transactional outbox."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from medbench_messaging.publisher import Outgoing
from medbench_runtime.transactional import Event
from medbench_storage.client import in_transaction
from medbench_storage.infra import Infrastructure

T = TypeVar("T")


class MongoTransactions:
    def __init__(self, infra: Infrastructure) -> None:
        self._infra = infra

    async def run(self, work: Callable[[Any], Awaitable[T]]) -> T:
        return await in_transaction(self._infra.client, work)


class MongoOutbox:
    def __init__(self, infra: Infrastructure) -> None:
        self._infra = infra

    async def add(self, tx: Any, events: Sequence[Event]) -> None:
        await self._infra.outbox.add(
            tx, [(e.event_id, Outgoing(e.topic, e.message, key=e.key)) for e in events]
        )

    def notify(self) -> None:
        self._infra.relay.notify()
