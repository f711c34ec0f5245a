"""In-memory fakes of medbench_runtime.transactional's ports, next to the real adapters
(medbench_storage.transactional), for use-case tests without a stack: a transaction's events
reach the outbox only when its work returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from medbench_runtime.transactional import Event

T = TypeVar("T")


@dataclass
class Tx:
    """One in-memory transaction: the events added in it."""

    events: list[Event] = field(default_factory=list)


class InMemoryOutbox:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.notified = 0

    async def add(self, tx: Tx | None, events: Sequence[Event]) -> None:
        (self.events if tx is None else tx.events).extend(events)

    def notify(self) -> None:
        self.notified += 1

    def of_topic(self, name: str) -> list[Any]:
        return [e.message for e in self.events if e.topic.name == name]


class InMemoryTransactions:
    """bare: the handle is None (for a real store under test, which then writes outside any
    transaction)."""

    def __init__(self, outbox: InMemoryOutbox, bare: bool = False) -> None:
        self._outbox = outbox
        self._bare = bare
        self.runs = 0

    async def run(self, work: Callable[[Any], Awaitable[T]]) -> T:
        self.runs += 1
        if self._bare:
            return await work(None)
        tx = Tx()
        result = await work(tx)
        self._outbox.events.extend(tx.events)
        return result
