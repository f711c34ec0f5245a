"""KafkaPublisher: sends protobuf messages keyed by submission id and waits for the broker's ack."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from google.protobuf.message import Message
from kafka import KafkaProducer
from prometheus_client import Counter

from medbench_messaging.topics import Topic
from medbench_runtime.settings import KafkaSettings
from medbench_runtime.tracing import trace_headers

PUBLISHED = Counter(
    "medbench_kafka_published_total", "Kafka messages acknowledged by the broker.", ["topic"]
)


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
        """Returns once every message is acknowledged; raises if any failed."""


class KafkaPublisher:
    """Publisher over kafka-python's KafkaProducer (acks=all, idempotent producer)."""

    def __init__(self, settings: KafkaSettings, client_id: str) -> None:
        self._settings = settings
        self._producer = KafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=client_id,
            acks="all",
            linger_ms=settings.linger_ms,
            max_request_size=16 * 1024 * 1024,
            retries=10,
        )

    def _send_all(self, batch: Sequence[Outgoing]) -> None:
        futures = []
        for out in batch:
            name = out.topic_name or out.topic.full_name(self._settings.topic_prefix)
            value = out.raw_value if out.raw_value is not None else out.message.SerializeToString()
            headers = [("type", out.message.DESCRIPTOR.full_name.encode()), *out.headers]
            futures.append(
                (
                    name,
                    self._producer.send(name, value=value, key=out.key.encode(), headers=headers),
                )
            )
        self._producer.flush()
        for name, future in futures:
            future.get(timeout=30)
            PUBLISHED.labels(name).inc()

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
