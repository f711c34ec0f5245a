"""KafkaConsumerWorker: at-least-once delivery of protobuf messages to an async handler.

Offsets are committed only after the handler returned (or the message went to the
dead-letter topic), so a crash means redelivery, never loss; handlers are idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message
from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from kafka.structs import OffsetAndMetadata
from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram

from medbench_messaging.publisher import Outgoing, Publisher, PublishError
from medbench_messaging.security import client_options
from medbench_messaging.topics import Topic
from medbench_runtime.logging import bind
from medbench_runtime.settings import KafkaSettings
from medbench_runtime.tracing import context_from, span

log = logging.getLogger(__name__)

CONSUMED = Counter(
    "medbench_kafka_consumed_total",
    "Kafka messages handled, by outcome (ok, dead_lettered, retried).",
    ["topic", "group", "outcome"],
)
LAG = Gauge(
    "medbench_kafka_consumer_lag",
    "Messages not yet handled: end offset minus committed position, per partition, exported "
    "only by the member the partition is assigned to (removed when it is revoked).",
    ["topic", "group", "partition"],
)
# Lag costs broker round trips: measured at most this often. (Dead letters waiting are counted
# from the quarantine, which a retry or drop resolves: medbench_quarantine_held; the dead-letter
# topic's offsets never fall.)
LAG_INTERVAL_S = 10.0
# A client out of touch with its group this long (no coordinator, or no heartbeat answered for
# twice the session timeout) is replaced by a new one: kafka-python can busy-loop on a
# coordinator that went away without a failed request to say so, or stop heartbeating after a
# rebalance and be removed from the group while it believes it still holds its partitions;
# either way it consumes nothing again while the broker is fine.
COORDINATOR_LOST_S = 15.0
REOPENED = Counter(
    "medbench_kafka_consumer_reopened_total",
    "Consumer clients replaced after losing touch with their group (coordinator, heartbeats)",
    ["topic"],
)
HANDLE_SECONDS = Histogram(
    "medbench_kafka_handle_seconds",
    "Time a handler spent on one message.",
    ["topic", "group"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


@dataclass(frozen=True)
class Delivery:
    """Where a message came from; handlers may log it, never depend on it."""

    topic: str
    partition: int
    offset: int
    key: str


Handler = Callable[[Any, Delivery], Awaitable[None]]


@dataclass(frozen=True)
class Held:
    """A message put in quarantine: what it was, where it came from and why."""

    # "consumer" (a consumed message) or "outbox" (a stored event its relay cannot publish).
    source: str
    # Where it came from, unique per message: "<group>:<topic>:<partition>:<offset>" or the
    # outbox event id.
    origin: str
    # The topic's logical name (without the deployment prefix).
    topic: str
    key: str
    payload: bytes
    reason: str
    headers: tuple[tuple[str, bytes], ...] = ()
    # The outbox collection an outbox event goes back to when retried.
    outbox: str = ""


# Stores a held message (see medbench_storage.quarantine); raises on infrastructure trouble.
Quarantine = Callable[[Held], Awaitable[Any]]


class UndecodableMessage(Exception):
    """The bytes are not a message of the topic's type."""


def decode(topic: Topic, value: bytes | None, headers: list[tuple[str, bytes]]) -> Message:
    """Parses a record value, checking the type header when present."""
    expected = topic.message_type.DESCRIPTOR.full_name
    declared = dict(headers or []).get("type")
    if declared is not None and declared.decode(errors="replace") != expected:
        raise UndecodableMessage(f"type header {declared!r} is not {expected}")
    if declared is None:
        raise UndecodableMessage(f"no type header; expected {expected}")
    message = topic.message_type()
    try:
        message.ParseFromString(value or b"")
    except DecodeError as exc:
        raise UndecodableMessage(f"not a {expected}: {exc}") from exc
    return message


class LagSeries(ConsumerRebalanceListener):  # type: ignore[misc]
    """The lag series of one worker. A partition's series goes when the partition is revoked or
    lost (it moved to another member, which exports its own) or found unassigned, and all of
    them when the worker closes: a partition has one lag series in the group, not one per
    member that ever held it, so a sum over members is the group's lag."""

    def __init__(self, topic: str, group: str, topic_name: str) -> None:
        self._topic = topic
        self._group = group
        self._topic_name = topic_name
        self._exported: set[int] = set()
        self._lock = threading.Lock()

    @property
    def exported(self) -> set[int]:
        with self._lock:
            return set(self._exported)

    def record(self, partition: int, lag: int) -> None:
        with self._lock:
            LAG.labels(self._topic, self._group, str(partition)).set(lag)
            self._exported.add(partition)

    def keep_only(self, partitions: set[int]) -> None:
        """Removes the series of every partition not in ``partitions``."""
        with self._lock:
            for partition in self._exported - partitions:
                LAG.remove(self._topic, self._group, str(partition))
            self._exported &= partitions

    def on_partitions_revoked(self, revoked: Any) -> None:
        """kafka-python calls this (from poll or close) before the partitions move on."""
        gone = {tp.partition for tp in revoked if tp.topic == self._topic_name}
        self.keep_only(self.exported - gone)

    def on_partitions_assigned(self, assigned: Any) -> None:
        """Nothing: the next measurement exports the new partitions."""


class CoordinatorWatch:
    """When a consumer has gone without a known group coordinator for `lost_s` (pure: the
    caller says what it saw and when)."""

    def __init__(self, lost_s: float = COORDINATOR_LOST_S) -> None:
        self._lost_s = lost_s
        self._unknown_since: float | None = None

    def lost(self, known: bool, now: float) -> bool:
        """Whether the client should be replaced; the clock starts again after a True."""
        if known:
            self._unknown_since = None
            return False
        if self._unknown_since is None:
            self._unknown_since = now
            return False
        if now - self._unknown_since < self._lost_s:
            return False
        self._unknown_since = None
        return True


def coordinator_known(consumer: KafkaConsumer, session_timeout_s: float = 10.0) -> bool:
    """Whether the client is in touch with its group: it knows (and is connected to) its
    coordinator, and, when it believes itself a stable member, has had a heartbeat answered
    within twice the session timeout. A member whose heartbeats stopped (seen with
    kafka-python 3.0: the coordinator removes it after the session timeout while the client
    still believes it holds its partitions, so it never rejoins) counts as out of touch.
    True when the client does not say (kafka-python keeps this on private attributes)."""
    coordinator = getattr(consumer, "_coordinator", None)
    check = getattr(coordinator, "coordinator_unknown", None)
    if check is not None and check():
        return False
    stable = getattr(coordinator, "stable", None)
    heartbeat = getattr(coordinator, "heartbeat", None)
    if stable is None or heartbeat is None or not stable():
        return True
    last = max(getattr(heartbeat, "last_receive", 0.0), getattr(heartbeat, "last_reset", 0.0))
    return time.monotonic() - last <= 2 * session_timeout_s


class KafkaConsumerWorker:
    """Consumes one topic in a consumer group and hands each message to handler."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: Topic,
        group_id: str,
        member_id: str,
        handler: Handler,
        dead_letters: Publisher,
        transient_errors: tuple[type[BaseException], ...] = (),
        quarantine: Quarantine | None = None,
        concurrency: int = 1,
        max_poll_records: int | None = None,
        max_poll_interval_ms: int = 300_000,
    ) -> None:
        """``concurrency`` > 1 handles that many messages of a poll at once (for handlers whose
        messages are independent and slow, like judge requests); offsets are still committed
        only up to the first message not yet handled. ``max_poll_records`` overrides the
        setting; ``max_poll_interval_ms`` is how long handling one poll may take before the
        group counts the member as gone (raise it for slow handlers)."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.name = f"consume:{topic.name}"
        self._concurrency = concurrency
        self._max_poll_records = max_poll_records or settings.max_poll_records
        self._max_poll_interval_ms = max_poll_interval_ms
        self._settings = settings
        self._topic = topic
        self._topic_name = topic.full_name(settings.topic_prefix)
        self._group = f"{settings.topic_prefix}{group_id}"
        self._member_id = member_id
        self._handler = handler
        self._dead_letters = dead_letters
        self._transient = transient_errors
        self._quarantine = quarantine
        self._stopping = asyncio.Event()
        self.joined = asyncio.Event()
        self.lag = LagSeries(topic.name, self._group, self._topic_name)
        # Static membership id; the group's member list must name it while partitions are held.
        self._instance_id = f"{member_id}:{topic.name}"
        self._admin: KafkaAdminClient | None = None
        # Whether the broker still lists this member while the client holds partitions
        # (checked with the lag, every LAG_INTERVAL_S; see membership_listed).
        self._listed = True

    def stop(self) -> None:
        self._stopping.set()

    def _open(self) -> KafkaConsumer:
        consumer = KafkaConsumer(
            bootstrap_servers=self._settings.bootstrap_servers,
            group_id=self._group,
            # Static membership: a restarted replica takes its partitions back at once
            # instead of waiting for its dead predecessor's session to expire.
            group_instance_id=self._instance_id,
            client_id=f"{self._member_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._settings.session_timeout_ms,
            max_poll_records=self._max_poll_records,
            max_poll_interval_ms=self._max_poll_interval_ms,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            **client_options(self._settings),
        )
        # Join only once this client's metadata knows the topic's partitions: a member that
        # joins first is assigned nothing and, seen here, may stay that way.
        deadline = time.monotonic() + 60
        while not consumer.partitions_for_topic(self._topic_name):
            if time.monotonic() > deadline:
                consumer.close()
                raise RuntimeError(f"topic {self._topic_name} has no partitions after 60 s")
            time.sleep(0.2)
        consumer.subscribe([self._topic_name], listener=self.lag)
        return consumer

    def _rejoin_if_unassigned(self, consumer: KafkaConsumer, topic: str, since: float) -> float:
        """A member left without partitions for long while the topic has some rejoins."""
        if consumer.assignment() or time.monotonic() - since < 15:
            return since
        if consumer.partitions_for_topic(topic):
            log.warning("no partitions of %s assigned after 15 s; rejoining the group", topic)
            consumer.unsubscribe()
            consumer.subscribe([topic], listener=self.lag)
        return time.monotonic()

    async def run(self) -> None:
        consumer = await asyncio.to_thread(self._open)
        unassigned_since = time.monotonic()
        measured = 0.0
        outage = 0
        watch = CoordinatorWatch()
        try:
            while not self._stopping.is_set():
                session_s = self._settings.session_timeout_ms / 1000
                in_touch = self._listed and coordinator_known(consumer, session_s)
                if watch.lost(in_touch, time.monotonic()):
                    log.warning(
                        "out of touch with the group of %s for %.0f s (no coordinator, or no "
                        "heartbeat answered); replacing the consumer client",
                        self._topic_name,
                        COORDINATOR_LOST_S,
                    )
                    REOPENED.labels(self._topic_name).inc()
                    # Nothing handed out is lost: uncommitted records come again to whoever
                    # holds the partition next.
                    await asyncio.to_thread(consumer.close, False)
                    consumer = await asyncio.to_thread(self._open)
                    self._listed = True
                    self.joined.clear()
                    unassigned_since = time.monotonic()
                    continue
                try:
                    batch = await asyncio.to_thread(consumer.poll, 200, self._max_poll_records)
                    outage = 0
                except KafkaError as exc:
                    # A broker restart or a network blip: the client reconnects by itself and
                    # nothing was handed out, so wait and poll again (never end the worker).
                    outage += 1
                    log.warning("poll of %s failed, retrying: %r", self._topic_name, exc)
                    if await self._backoff(min(outage, 4)):
                        break
                    continue
                if consumer.assignment():
                    self.joined.set()
                    unassigned_since = time.monotonic()
                elif not self.joined.is_set():
                    # Only before the first assignment: later, a replica beyond the partition
                    # count is rightly idle and must not churn the group.
                    unassigned_since = await asyncio.to_thread(
                        self._rejoin_if_unassigned, consumer, self._topic_name, unassigned_since
                    )
                if time.monotonic() - measured > LAG_INTERVAL_S:
                    measured = time.monotonic()
                    await asyncio.to_thread(self._measure, consumer)
                if self._concurrency > 1:
                    await self._handle_concurrently(consumer, batch)
                    continue
                for tp, records in batch.items():
                    done_offset: int | None = None
                    for record in records:
                        if not await self._process(record):
                            break
                        done_offset = record.offset
                        if self._stopping.is_set():
                            break
                    if done_offset is not None:
                        await asyncio.to_thread(self._commit, consumer, tp, done_offset)
                    if self._stopping.is_set():
                        break
        finally:
            try:
                await asyncio.to_thread(consumer.close, False)
                if self._admin is not None:
                    await asyncio.to_thread(self._admin.close)
            finally:
                # The partitions go to the members left, which export their own series.
                self.lag.keep_only(set())

    def _measure(self, consumer: KafkaConsumer) -> None:
        """Exports the lag of the assigned partitions and removes the series of any other
        (best effort: a broker hiccup skips one measurement, never the consumption)."""
        try:
            assigned = [tp for tp in consumer.assignment() if tp.topic == self._topic_name]
            self.lag.keep_only({tp.partition for tp in assigned})
            if assigned:
                ends = consumer.end_offsets(assigned)
                for tp in assigned:
                    position = consumer.position(tp)
                    self.lag.record(tp.partition, max(0, ends[tp] - position))
                self._listed = self._membership_listed()
        except Exception as exc:  # noqa: BLE001 - metrics must never stop consumption
            log.debug("lag measurement skipped: %r", exc)

    def _membership_listed(self) -> bool:
        """Whether the broker lists this member in its group (True while the group is between
        generations or the broker cannot say): a client may hold partitions the coordinator
        has already taken from it and never rejoin (seen with kafka-python 3.0 after a
        rebalance), consuming nothing; the run loop then replaces the client."""
        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(
                    bootstrap_servers=self._settings.bootstrap_servers,
                    client_id=f"{self._member_id}-membership",
                    **client_options(self._settings),
                )
            group = self._admin.describe_groups([self._group]).get(self._group) or {}
        except Exception as exc:  # noqa: BLE001 - a check must never stop consumption
            log.debug("could not describe group %s: %r", self._group, exc)
            return True
        if group.get("group_state") != "Stable":
            return True
        members = group.get("members") or []
        return any(m.get("group_instance_id") == self._instance_id for m in members)

    async def _handle_concurrently(
        self, consumer: KafkaConsumer, batch: dict[TopicPartition, list[Any]]
    ) -> None:
        slots = asyncio.Semaphore(self._concurrency)

        async def handle(record: Any) -> bool:
            async with slots:
                return False if self._stopping.is_set() else await self._process(record)

        flat = [(tp, record) for tp, records in batch.items() for record in records]
        outcomes = await asyncio.gather(*(handle(record) for _, record in flat))
        for tp, records in batch.items():
            done = [o for (t, _), o in zip(flat, outcomes, strict=True) if t == tp]
            # Only the handled prefix: an unfinished message is delivered again (idempotent).
            handled = next((i for i, ok in enumerate(done) if not ok), len(done))
            if handled:
                await asyncio.to_thread(self._commit, consumer, tp, records[handled - 1].offset)

    @staticmethod
    def _commit(consumer: KafkaConsumer, tp: TopicPartition, offset: int) -> None:
        try:
            consumer.commit({tp: OffsetAndMetadata(offset + 1, "", -1)})
        except (
            CommitFailedError,
            RebalanceInProgressError,
            IllegalGenerationError,
            UnknownMemberIdError,
        ) as exc:
            # The partition moved to another member, which will redeliver; handlers are idempotent.
            log.warning("commit of %s@%d failed: %s", tp, offset, exc)
        except KafkaError as exc:
            # The coordinator is unreachable (a broker restart): the next commit covers these
            # offsets, or after a restart the messages are delivered again (idempotent handlers).
            log.warning("commit of %s@%d failed, the broker is unreachable: %r", tp, offset, exc)

    async def _process(self, record: Any) -> bool:
        """Handles or dead-letters one record; False when stopped before finishing it."""
        key = record.key.decode(errors="replace") if record.key else ""
        delivery = Delivery(record.topic, record.partition, record.offset, key)
        consume = span(
            f"consume {self._topic.name}",
            trace.SpanKind.CONSUMER,
            parent=context_from(record.headers),
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": record.topic,
                "messaging.kafka.partition": record.partition,
                "messaging.kafka.offset": record.offset,
                "messaging.consumer.group.name": self._group,
            },
        )
        with consume, bind(topic=self._topic.name, key=key, offset=record.offset):
            try:
                message = decode(self._topic, record.value, record.headers)
            except Exception as exc:  # noqa: BLE001 - any bytes that are not our message
                log.error("dead-lettering undecodable message: %s", exc)
                return await self._give_up(record, key, f"undecodable: {exc}", attempts=0)
            attempt = 0
            while True:
                attempt += 1
                try:
                    with HANDLE_SECONDS.labels(self._topic.name, self._group).time():
                        await self._handler(message, delivery)
                    CONSUMED.labels(self._topic.name, self._group, "ok").inc()
                    return True
                except self._transient as exc:
                    # Infrastructure trouble: never dead-letter, wait for it to pass.
                    CONSUMED.labels(self._topic.name, self._group, "retried").inc()
                    log.warning("transient failure (attempt %d), retrying: %r", attempt, exc)
                    if await self._backoff(attempt):
                        return False
                except Exception as exc:
                    CONSUMED.labels(self._topic.name, self._group, "retried").inc()
                    if attempt >= self._settings.max_delivery_attempts:
                        log.error("dead-lettering after %d attempts: %r", attempt, exc)
                        detail = "".join(traceback.format_exception_only(exc)).strip()
                        return await self._give_up(record, key, detail, attempts=attempt)
                    log.warning("handler failed (attempt %d): %r", attempt, exc)
                    if await self._backoff(attempt):
                        return False

    async def _backoff(self, attempt: int) -> bool:
        """Sleeps before a retry; True when the worker is stopping instead."""
        delay = min(self._settings.retry_backoff_s * 2 ** (attempt - 1), 5.0)
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        except TimeoutError:
            return False
        return True

    async def _give_up(self, record: Any, key: str, reason: str, attempts: int) -> bool:
        """Dead-letters and quarantines a message its handler cannot take, so the worker goes
        on with the next; False when stopped before both are stored (it is then delivered
        again). Infrastructure trouble on the way is waited out, never the end of the worker."""
        origin = f"{self._group}:{record.topic}:{record.partition}:{record.offset}"
        held = Held(
            source="consumer",
            origin=origin,
            topic=self._topic.name,
            key=key,
            payload=record.value or b"",
            reason=reason,
            headers=tuple((k, v) for k, v in (record.headers or []) if isinstance(v, bytes)),
        )
        steps: list[Callable[[], Awaitable[object]]] = [
            lambda: self._dead_letter(record, key, reason, attempts)
        ]
        if (quarantine := self._quarantine) is not None:
            steps.append(lambda: quarantine(held))
        for step in steps:
            attempt = 0
            while True:
                attempt += 1
                try:
                    await step()
                    break
                except PublishError as exc:
                    if exc.poison:
                        # The dead-letter topic refuses it (a smaller limit there): the
                        # quarantine keeps it.
                        log.error("dead-letter topic refused %s: %r", origin, exc)
                        break
                    log.warning("dead-lettering %s failed (attempt %d): %r", origin, attempt, exc)
                except Exception as exc:  # noqa: BLE001 - retried: the message must be kept
                    log.warning("quarantining %s failed (attempt %d): %r", origin, attempt, exc)
                if await self._backoff(attempt):
                    return False
        CONSUMED.labels(self._topic.name, self._group, "dead_lettered").inc()
        return True

    async def _dead_letter(self, record: Any, key: str, reason: str, attempts: int) -> None:
        headers = (
            ("dlq-reason", reason[:2000].encode()),
            ("dlq-source-topic", record.topic.encode()),
            ("dlq-source-partition", str(record.partition).encode()),
            ("dlq-source-offset", str(record.offset).encode()),
            ("dlq-attempts", str(attempts).encode()),
            ("dlq-group", self._group.encode()),
        )
        await self._dead_letters.publish(
            [
                Outgoing(
                    topic=self._topic,
                    message=self._topic.message_type(),
                    key=key,
                    headers=headers,
                    topic_name=self._topic.dead_letter_name(self._settings.topic_prefix),
                    raw_value=record.value or b"",
                )
            ]
        )
