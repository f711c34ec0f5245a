"""Transactional outbox: an event is stored in the same transaction as the state change it
announces, and a relay publishes it to Kafka afterwards (at least once)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter, Gauge
from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from medbench_messaging.consumer import Held, Quarantine
from medbench_messaging.publisher import Outgoing, Publisher, PublishError, caused_by_message
from medbench_messaging.sizing import DEFAULT_MAX_EVENT_BYTES, split_to_fit
from medbench_messaging.topics import BY_NAME
from medbench_runtime.tracing import trace_headers
from medbench_storage.indexes import IndexSpec, asc

log = logging.getLogger(__name__)

OUTBOX_BACKLOG = Gauge(
    "medbench_outbox_backlog", "Outbox events seen waiting for the relay.", ["collection"]
)
RELAY_RETRIES = Counter(
    "medbench_outbox_relay_retries_total",
    "Relay rounds that failed for the infrastructure (broker or database unavailable) and were "
    "retried after a backoff.",
    ["collection"],
)
# Backoff of a relay round that failed for the infrastructure: doubles up to the cap.
# One relay per outbox publishes at a time: the holder of a lease in `outbox_leases` (renewed
# every round; another replica takes over once it lapses). Without it every replica of a
# service published every event of the shared outbox (consumers absorbed the copies).
LEASE_S = 10.0
LEASES = "outbox_leases"
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0


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


def bounded(events: Sequence[tuple[str, Outgoing]], limit: int) -> list[tuple[str, Outgoing]]:
    """The events with every one too large for a record split into parts that fit (each part
    with its own id, see medbench_messaging.sizing); EventTooLarge when one cannot be."""
    out: list[tuple[str, Outgoing]] = []
    for event_id, event in events:
        parts = split_to_fit(event.message, event.topic.batch_field, limit)
        if len(parts) == 1:
            out.append((event_id, event))
            continue
        for k, part in enumerate(parts):
            out.append((f"{event_id}.p{k}", Outgoing(event.topic, part, key=event.key)))
    return out


class Outbox:
    """One service's outbox collection."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        service: str,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.collection = db[collection_name(service)]
        self.max_event_bytes = max_event_bytes

    async def add(
        self, session: AsyncClientSession, events: Sequence[tuple[str, Outgoing]]
    ) -> None:
        """Stores (event_id, event) pairs inside the caller's transaction; an event too large
        for one record is stored as parts that fit."""
        if events:
            await self.collection.insert_many(
                [outbox_doc(i, out) for i, out in bounded(events, self.max_event_bytes)],
                session=session,
            )


class OutboxRelay:
    """Publishes stored events in creation order, then deletes them (Kafka keeps the log).

    Never ends on an error: a round that fails for the infrastructure is retried after a
    backoff (``medbench_outbox_relay_retries_total``); an event that can never be published as it
    is (too large, undecodable, an unknown topic) goes to the quarantine and the rest flows.
    """

    def __init__(
        self,
        outbox: Outbox,
        publisher: Publisher,
        quarantine: Quarantine | None = None,
        batch_size: int = 100,
        poll_interval_s: float = 0.25,
        holder: str = "",
        lease_s: float = LEASE_S,
    ) -> None:
        """holder: who this relay is in the lease (the service's member id; unique per
        process); lease_s: how long a lease lasts without renewal."""
        self.name = "outbox-relay"
        self._collection = outbox.collection
        self._leases = outbox.collection.database[LEASES]
        self._holder = f"{holder or 'relay'}:{uuid.uuid4().hex[:8]}"
        self._lease_s = lease_s
        self._publisher = publisher
        self._quarantine = quarantine
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
        failures = 0
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                if not await self.lead():
                    # Another replica relays; try again well before its lease could lapse.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), timeout=self._lease_s / 4)
                    continue
                sent = await self.relay_once()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the relay outlives any outage
                failures += 1
                RELAY_RETRIES.labels(self._collection.name).inc()
                log.warning("outbox relay round failed (%d in a row), retrying: %r", failures, exc)
                delay = min(RETRY_FIRST_S * 2 ** (failures - 1), RETRY_MAX_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                continue
            if sent < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval_s)
        # Drain what is left so a graceful stop leaves nothing for the next start, then hand
        # the lease over at once (a replica left relays without waiting for it to lapse).
        with contextlib.suppress(Exception):
            if await self.lead():
                while await self.relay_once() == self._batch_size:
                    pass
                await self._leases.delete_one(
                    {"_id": self._collection.name, "holder": self._holder}
                )

    async def lead(self) -> bool:
        """Takes or renews this outbox's lease; False while another relay holds a live one."""
        now = datetime.now(UTC)
        try:
            await self._leases.find_one_and_update(
                {
                    "_id": self._collection.name,
                    "$or": [{"holder": self._holder}, {"until": {"$lt": now}}],
                },
                {"$set": {"holder": self._holder, "until": now + timedelta(seconds=self._lease_s)}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False  # held by another relay, not lapsed: the upsert's insert collided
        return True

    async def relay_once(self) -> int:
        """Publishes one batch of waiting events; returns how many left the outbox (published
        or quarantined). Raises on infrastructure trouble (nothing is lost: what was not
        acknowledged stays in the outbox)."""
        docs = (
            await self._collection.find({})
            .sort([("created_at", 1), ("_id", 1)])
            .limit(self._batch_size)
            .to_list()
        )
        OUTBOX_BACKLOG.labels(self._collection.name).set(len(docs))
        if not docs:
            return 0
        batch: list[Outgoing] = []
        sendable: list[dict[str, Any]] = []
        poison: list[tuple[dict[str, Any], str]] = []
        for doc in docs:
            try:
                batch.append(self._outgoing(doc))
                sendable.append(doc)
            except Exception as exc:  # noqa: BLE001 - a stored event that is not one
                poison.append((doc, f"unreadable outbox event: {exc!r}"))
        failed: dict[int, BaseException] = {}
        try:
            await self._publisher.publish(batch)
        except PublishError as exc:
            failed = exc.failures
            poison += [(sendable[i], f"not publishable: {e!r}") for i, e in exc.poison.items()]
        done = [d["_id"] for i, d in enumerate(sendable) if i not in failed]
        if done:
            result = await self._collection.delete_many({"_id": {"$in": done}})
            if result.deleted_count != len(done):
                # A relay whose lease lapsed mid-round (a long pause) and its successor both
                # published these; consumers are idempotent.
                log.warning(
                    "outbox: published %d events but deleted %d", len(done), result.deleted_count
                )
        for doc, reason in poison:
            await self._hold(doc, reason)
        retryable = [e for e in failed.values() if not caused_by_message(e)]
        if retryable:
            # Left in the outbox for the next round, after the run loop's backoff.
            raise RuntimeError(
                f"{len(retryable)} outbox event(s) not acknowledged: {retryable[0]!r}"
            )
        return len(done) + len(poison)

    @staticmethod
    def _outgoing(doc: dict[str, Any]) -> Outgoing:
        topic = BY_NAME[doc["topic"]]
        return Outgoing(
            topic=topic,
            message=topic.message_type(),
            key=doc["key"],
            headers=(
                ("event-id", doc["_id"].encode()),
                *((k, v.encode()) for k, v in doc.get("trace", [])),
            ),
            raw_value=bytes(doc["payload"]),
        )

    async def _hold(self, doc: dict[str, Any], reason: str) -> None:
        """Moves one event to the quarantine (upsert first, so a crash between the two steps
        holds it again rather than losing it)."""
        if self._quarantine is None:
            raise RuntimeError(f"outbox event {doc.get('_id')} {reason} and no quarantine is set")
        await self._quarantine(
            Held(
                source="outbox",
                origin=str(doc.get("_id")),
                topic=str(doc.get("topic", "")),
                key=str(doc.get("key", "")),
                payload=bytes(doc.get("payload") or b""),
                reason=reason,
                outbox=self._collection.name,
            )
        )
        await self._collection.delete_one({"_id": doc["_id"]})
