"""What a use case needs to change state and announce it in one transaction (pure: no I/O).

A use case runs its writes in `Transactions.run(work)` and adds the events that announce them
to the `Outbox` with the same handle: both commit or neither does, and the service's outbox
relay publishes the events after. Services re-export these from their `core/ports.py`;
`medbench_storage.transactional` implements them over MongoDB, `medbench_storage.testing` in
memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Event:
    """One event to publish: id (the consumers' deduplication key), topic (a
    medbench_messaging Topic, opaque here), the protobuf message, and its Kafka key."""

    event_id: str
    topic: Any
    message: Any
    key: str


class Transactions(Protocol):
    """Runs work in one database transaction (retried whole on a transient conflict); the
    handle it passes goes to every store, ledger and outbox call that must commit with it."""

    async def run(self, work: Callable[[Any], Awaitable[T]]) -> T: ...


class Outbox(Protocol):
    """The transactional outbox: events stored with the state they announce, relayed after."""

    async def add(self, tx: Any, events: Sequence[Event]) -> None: ...

    def notify(self) -> None:
        """Events were committed: relay them now rather than at the next poll."""
