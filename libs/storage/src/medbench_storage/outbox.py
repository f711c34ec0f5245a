"""Transactional outbox: an event is stored in the same transaction as the state change it
announces, and a relay publishes it to Kafka afterwards (at least once)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Gauge
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from medbench_messaging.publisher import Outgoing, Publisher
from medbench_messaging.topics import BY_NAME
from medbench_runtime.tracing import trace_headers
from medbench_storage.indexes import IndexSpec, asc

log = logging.getLogger(__name__)

OUTBOX_BACKLOG = Gauge(
    "medbench_outbox_backlog", "Outbox events seen waiting for the relay.", ["collection"]
)


def collection_name(service: str) -> str:
    """Each service has its own outbox, so no relay ever publishes another service's events."""
    return f"outbox_{service}"


def indexes(service: str) -> tuple[IndexSpec, ...]:
    return (IndexSpec(collection_name(service), asc("created_at")),)


def outbox_doc(event_id: str, out: Outgoing) -> dict[str, Any]:
    """The stored form of one outgoing event."""
    return {
        "_id": event_id,
        "topic": out.topic.name,
        "key": out.key,
        "payload": out.message.SerializeToString(),
        "created_at": datetime.now(UTC),
        # The trace context of the transaction that stored it, for the relay to send on.
        "trace": [[k, v] for k, v in trace_headers()],
    }


class Outbox:
    """One service's outbox collection."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], service: str) -> None:
        self.collection = db[collection_name(service)]

    async def add(
        self, session: AsyncClientSession, events: Sequence[tuple[str, Outgoing]]
    ) -> None:
        """Stores (event_id, event) pairs inside the caller's transaction."""
        if events:
            await self.collection.insert_many(
                [outbox_doc(event_id, out) for event_id, out in events], session=session
            )


class OutboxRelay:
    """Publishes stored events in creation order, then deletes them (Kafka keeps the log)."""

    def __init__(
        self,
        outbox: Outbox,
        publisher: Publisher,
        batch_size: int = 100,
        poll_interval_s: float = 0.25,
    ) -> None:
        self.name = "outbox-relay"
        self._collection = outbox.collection
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def notify(self) -> None:
        """Wakes the relay after a commit in this process, so events leave without polling delay."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            sent = await self.relay_once()
            if sent < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval_s)
        # Drain what is left so a graceful stop leaves nothing for the next start.
        while await self.relay_once() == self._batch_size:
            pass

    async def relay_once(self) -> int:
        """Publishes one batch of waiting events; returns how many."""
        docs = (
            await self._collection.find({})
            .sort([("created_at", 1), ("_id", 1)])
            .limit(self._batch_size)
            .to_list()
        )
        OUTBOX_BACKLOG.labels(self._collection.name).set(len(docs))
        if not docs:
            return 0
        batch = []
        for doc in docs:
            topic = BY_NAME[doc["topic"]]
            batch.append(
                Outgoing(
                    topic=topic,
                    message=topic.message_type(),
                    key=doc["key"],
                    headers=(
                        ("event-id", doc["_id"].encode()),
                        *((k, v.encode()) for k, v in doc.get("trace", [])),
                    ),
                    raw_value=bytes(doc["payload"]),
                )
            )
        await self._publisher.publish(batch)
        result = await self._collection.delete_many({"_id": {"$in": [d["_id"] for d in docs]}})
        if result.deleted_count != len(docs):
            # Another replica's relay published them too; consumers are idempotent.
            log.warning(
                "outbox: published %d events but deleted %d", len(docs), result.deleted_count
            )
        return len(docs)
