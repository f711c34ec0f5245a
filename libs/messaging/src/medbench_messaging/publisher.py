"""KafkaPublisher: sends protobuf messages keyed by submission id and waits for the broker's ack."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from google.protobuf.message import Message
from kafka import KafkaProducer
from kafka.errors import (
    CorruptRecordError,
    InvalidRecordError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from prometheus_client import Counter

from medbench_messaging.security import client_options
from medbench_messaging.sizing import (
    MIN_MAX_EVENT_BYTES,
    EventTooLarge,
    broker_max_message_bytes,
    split_to_fit,
)
from medbench_messaging.topics import Topic
from medbench_runtime.settings import KafkaSettings
from medbench_runtime.tracing import trace_headers

PUBLISHED = Counter(
    "medbench_kafka_published_total", "Kafka messages acknowledged by the broker.", ["topic"]
)


# Faults of the message itself: sending it again can never succeed, so it is quarantined
# instead of retried (everything else, a broker or network outage, is retried).
MESSAGE_FAULTS: tuple[type[BaseException], ...] = (
    EventTooLarge,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    CorruptRecordError,
    InvalidRecordError,
)


def caused_by_message(exc: BaseException) -> bool:
    """True when exc is a fault of the message, not of the infrastructure."""
    return isinstance(exc, MESSAGE_FAULTS)


class PublishError(Exception):
    """Some messages of a batch were not acknowledged; ``failures`` maps their positions in
    the batch to the reason (the others were acknowledged)."""

    def __init__(self, failures: dict[int, BaseException]) -> None:
        self.failures = failures
        first = next(iter(failures.values()))
        super().__init__(f"{len(failures)} message(s) not published; first: {first!r}")

    @property
    def poison(self) -> dict[int, BaseException]:
        """The failures that are the messages' own fault."""
        return {i: e for i, e in self.failures.items() if caused_by_message(e)}


@dataclass(frozen=True)
class Outgoing:
    """One message to publish."""

    topic: Topic
    message: Message
    key: str
    # Extra headers (e.g. dead-letter reasons).
    headers: tuple[tuple[str, bytes], ...] = field(default_factory=tuple)
    # Overrides the topic name (dead-letter twins, raw bytes that failed to decode).
    topic_name: str | None = None
    raw_value: bytes | None = None


class Publisher(Protocol):
    """What services need from a publisher; the core and handlers depend on this."""

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        """Returns once every message is acknowledged; raises PublishError naming the ones
        that failed (a batch event too large for one record is sent as parts that fit)."""


class KafkaPublisher:
    """Publisher over kafka-python's KafkaProducer (acks=all, idempotent producer)."""

    def __init__(self, settings: KafkaSettings, client_id: str) -> None:
        if settings.max_event_bytes < MIN_MAX_EVENT_BYTES:
            raise ValueError(
                f"MEDBENCH_KAFKA__MAX_EVENT_BYTES is {settings.max_event_bytes}; at least "
                f"{MIN_MAX_EVENT_BYTES} are needed to hold one answer with its envelope"
            )
        self._settings = settings
        self.max_event_bytes = settings.max_event_bytes
        self._producer = KafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=client_id,
            # Every in-sync replica (min.insync.replicas of them at least) has the record before
            # it counts as sent, and a retried send is written once: explicit, so a setting that
            # conflicts with idempotence fails here instead of silently turning it off.
            acks="all",
            enable_idempotence=True,
            linger_ms=settings.linger_ms,
            # The topics' max.message.bytes: a bigger record fails here, never at the broker.
            max_request_size=broker_max_message_bytes(settings.max_event_bytes),
            retries=10,
            **client_options(settings),
        )

    def _values(self, out: Outgoing) -> list[bytes]:
        """The record values of one outgoing message: itself, or its parts when too large."""
        if out.raw_value is not None:
            if len(out.raw_value) <= self.max_event_bytes or out.topic_name is not None:
                # Dead letters and raw replays go as they are (a dead letter came from a topic
                # with the same limit); a stored event from before the size rule is split.
                return [out.raw_value]
            message = out.topic.message_type.FromString(out.raw_value)
        else:
            message = out.message
        parts = split_to_fit(message, out.topic.batch_field, self.max_event_bytes)
        return [p.SerializeToString() for p in parts]

    def _send_all(self, batch: Sequence[Outgoing]) -> None:
        futures: list[tuple[int, str, Any]] = []
        failures: dict[int, BaseException] = {}
        for index, out in enumerate(batch):
            name = out.topic_name or out.topic.full_name(self._settings.topic_prefix)
            headers = [("type", out.message.DESCRIPTOR.full_name.encode()), *out.headers]
            try:
                for value in self._values(out):
                    future = self._producer.send(
                        name, value=value, key=out.key.encode(), headers=headers
                    )
                    futures.append((index, name, future))
            except Exception as exc:  # noqa: BLE001 - reported per message below
                failures[index] = exc
        self._producer.flush()
        for index, name, future in futures:
            try:
                future.get(timeout=30)
            except Exception as exc:  # noqa: BLE001 - reported per message below
                failures.setdefault(index, exc)
                continue
            PUBLISHED.labels(name).inc()
        if failures:
            raise PublishError(failures)

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        if batch:
            # The publishing code's trace context, unless the message carries its own (the
            # outbox relay sends the context of the transaction that stored the event).
            context = [(k, v.encode()) for k, v in trace_headers()]
            if context:
                batch = [
                    out
                    if any(k == "traceparent" for k, _ in out.headers)
                    else replace(out, headers=(*out.headers, *context))
                    for out in batch
                ]
            await asyncio.to_thread(self._send_all, batch)

    def close(self) -> None:
        """Flushes and closes the producer."""
        self._producer.close(timeout=10)
