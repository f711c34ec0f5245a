"""KafkaConsumerWorker against the real broker: commit after success, dead letters, retries."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable

import pytest
from kafka import KafkaConsumer
from prometheus_client import REGISTRY
from pymongo.errors import AutoReconnect

from medbench.submission.v1 import submission_events_pb2
from medbench_messaging import consumer as consumer_module
from medbench_messaging import topics
from medbench_messaging.admin import ensure_topics
from medbench_messaging.consumer import Delivery, KafkaConsumerWorker
from medbench_messaging.publisher import KafkaPublisher, Outgoing
from medbench_runtime.settings import KafkaSettings
from tests.conftest import Servers
from tests.e2e.harness import eventually, read_topic

pytestmark = [pytest.mark.integration]
TOPIC = topics.SUBMISSION_COMPLETED


def event(n: int) -> submission_events_pb2.SubmissionCompleted:
    return submission_events_pb2.SubmissionCompleted(event_id=f"e{n}", submission_id=f"s{n}")


@pytest.fixture
async def kafka(
    servers: Servers, unique: str
) -> AsyncIterator[tuple[KafkaSettings, KafkaPublisher]]:
    settings = KafkaSettings(
        bootstrap_servers=servers.kafka_bootstrap,
        topic_prefix=f"c{unique}.",
        max_delivery_attempts=3,
        retry_backoff_s=0.05,
        partitions=1,
    )
    await ensure_topics(settings, [TOPIC])
    publisher = KafkaPublisher(settings, client_id="test")
    yield settings, publisher
    publisher.close()


def worker(
    settings: KafkaSettings,
    publisher: KafkaPublisher,
    handler: Callable[..., object],
    member: str = "m1",
) -> KafkaConsumerWorker:
    return KafkaConsumerWorker(
        settings, TOPIC, "test-group", member, handler, publisher, transient_errors=(AutoReconnect,)
    )


async def run_until(w: KafkaConsumerWorker, done: Callable[[], bool], what: str) -> None:
    task = asyncio.create_task(w.run())
    try:

        async def check() -> bool:
            if task.done():
                task.result()
            return done()

        await eventually(check, 60, what)
    finally:
        w.stop()
        await asyncio.wait_for(task, 30)


async def test_undecodable_message_is_dead_lettered_and_the_next_is_handled(
    kafka: tuple[KafkaSettings, KafkaPublisher],
) -> None:
    settings, publisher = kafka
    name = TOPIC.full_name(settings.topic_prefix)
    await publisher.publish(
        [
            Outgoing(TOPIC, event(0), key="k", topic_name=name, raw_value=b"\xff\xfe garbage"),
            Outgoing(TOPIC, event(1), key="k"),
        ]
    )
    seen: list[str] = []

    async def handle(message: submission_events_pb2.SubmissionCompleted, d: Delivery) -> None:
        seen.append(message.event_id)

    await run_until(worker(settings, publisher, handle), lambda: seen == ["e1"], "e1 handled")
    dead = read_topic(settings.bootstrap_servers, TOPIC.dead_letter_name(settings.topic_prefix))
    assert [r.value for r in dead] == [b"\xff\xfe garbage"]
    assert b"undecodable" in dict(dead[0].headers)["dlq-reason"]


async def test_failing_handler_is_dead_lettered_after_max_attempts(
    kafka: tuple[KafkaSettings, KafkaPublisher],
) -> None:
    settings, publisher = kafka
    await publisher.publish(
        [Outgoing(TOPIC, event(1), key="k"), Outgoing(TOPIC, event(2), key="k")]
    )
    attempts: dict[str, int] = {}

    async def handle(message: submission_events_pb2.SubmissionCompleted, d: Delivery) -> None:
        attempts[message.event_id] = attempts.get(message.event_id, 0) + 1
        if message.event_id == "e1":
            raise ValueError("cannot score this")

    await run_until(worker(settings, publisher, handle), lambda: "e2" in attempts, "e2 handled")
    assert attempts == {"e1": 3, "e2": 1}
    dead = read_topic(settings.bootstrap_servers, TOPIC.dead_letter_name(settings.topic_prefix))
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers["dlq-attempts"] == b"3" and b"cannot score this" in headers["dlq-reason"]
    assert submission_events_pb2.SubmissionCompleted.FromString(dead[0].value).event_id == "e1"


async def test_transient_failures_are_retried_not_dead_lettered(
    kafka: tuple[KafkaSettings, KafkaPublisher],
) -> None:
    settings, publisher = kafka
    await publisher.publish([Outgoing(TOPIC, event(1), key="k")])
    calls: list[int] = []

    async def handle(message: submission_events_pb2.SubmissionCompleted, d: Delivery) -> None:
        calls.append(1)
        if len(calls) <= 4:  # more than max_delivery_attempts
            raise AutoReconnect("mongo is restarting")

    await run_until(worker(settings, publisher, handle), lambda: len(calls) == 5, "success")
    assert (
        read_topic(settings.bootstrap_servers, TOPIC.dead_letter_name(settings.topic_prefix)) == []
    )


async def test_offsets_are_committed_only_after_the_handler_succeeded(
    kafka: tuple[KafkaSettings, KafkaPublisher],
) -> None:
    settings, publisher = kafka
    await publisher.publish(
        [Outgoing(TOPIC, event(1), key="k"), Outgoing(TOPIC, event(2), key="k")]
    )
    first: list[str] = []

    async def stuck_on_e2(message: submission_events_pb2.SubmissionCompleted, d: Delivery) -> None:
        first.append(message.event_id)
        if message.event_id == "e2":
            raise AutoReconnect("down")  # retried until the worker stops

    await run_until(
        worker(settings, publisher, stuck_on_e2), lambda: first.count("e2") >= 2, "e2 retried"
    )
    second: list[str] = []

    async def handle(message: submission_events_pb2.SubmissionCompleted, d: Delivery) -> None:
        second.append(message.event_id)

    # A new member of the group starts after e1 (committed) and gets e2 again (not committed).
    await run_until(
        worker(settings, publisher, handle, member="m2"), lambda: "e2" in second, "e2 redelivered"
    )
    assert second == ["e2"]


async def test_concurrent_handling_overlaps_messages_and_commits_only_the_handled_prefix(
    kafka: tuple[KafkaSettings, KafkaPublisher],
) -> None:
    settings, publisher = kafka
    await publisher.publish([Outgoing(TOPIC, event(n), key="k") for n in range(8)])
    running, peak, handled = 0, 0, []

    async def slow(message: submission_events_pb2.SubmissionCompleted, d: Delivery) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.1)
            if message.event_id == "e5":
                raise AutoReconnect("down")  # never finishes while this worker runs
            handled.append(message.event_id)
        finally:
            running -= 1

    concurrent = KafkaConsumerWorker(
        settings,
        TOPIC,
        "test-group",
        "m1",
        slow,
        publisher,
        transient_errors=(AutoReconnect,),
        concurrency=4,
        max_poll_records=8,
    )
    await run_until(concurrent, lambda: len(handled) == 7, "every message but e5 handled")
    assert 2 <= peak <= 4
    again: list[str] = []

    async def handle(message: submission_events_pb2.SubmissionCompleted, d: Delivery) -> None:
        again.append(message.event_id)

    # e0-e4 were committed; e5 was not, so it comes back with what follows it (handled twice,
    # which idempotent handlers allow); nothing before it does.
    await run_until(
        worker(settings, publisher, handle, member="m2"), lambda: "e7" in again, "the rest"
    )
    assert again == ["e5", "e6", "e7"]


def test_concurrency_must_be_positive(kafka: tuple[KafkaSettings, KafkaPublisher]) -> None:
    settings, publisher = kafka
    with pytest.raises(ValueError, match="concurrency"):
        KafkaConsumerWorker(settings, TOPIC, "g", "m", lambda m, d: None, publisher, concurrency=0)


async def test_lag_is_exported_per_assigned_partition(
    kafka: tuple[KafkaSettings, KafkaPublisher], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, publisher = kafka
    monkeypatch.setattr(consumer_module, "LAG_INTERVAL_S", 0.0)
    await publisher.publish([Outgoing(TOPIC, event(n), key="k") for n in range(1, 4)])
    handled: list[str] = []

    async def handle(message: submission_events_pb2.SubmissionCompleted, d: Delivery) -> None:
        if message.event_id == "e2":
            raise ValueError("cannot score this")
        handled.append(message.event_id)

    group = f"{settings.topic_prefix}test-group"

    def measured() -> bool:
        lag = REGISTRY.get_sample_value(
            "medbench_kafka_consumer_lag", {"topic": TOPIC.name, "group": group, "partition": "0"}
        )
        return len(handled) == 2 and lag == 0

    w = worker(settings, publisher, handle)
    await run_until(w, measured, "lag 0 after the messages were handled or dead-lettered")
    # The worker closed: its partition went back to the group, and so did its series.
    assert lag_series(group) == {}
    assert w.lag.exported == set()


def lag_series(group: str) -> dict[str, float]:
    """The lag series this process exports for a group, by partition."""
    return {
        s.labels["partition"]: s.value
        for family in REGISTRY.collect()
        if family.name == "medbench_kafka_consumer_lag"
        for s in family.samples
        if s.labels["group"] == group
    }


async def test_a_revoked_partition_loses_its_lag_series(
    servers: Servers, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another member joins and takes a partition: this member's series of it goes (the new
    owner exports its own), so the group's lag is not counted twice; when that member leaves,
    the partition and its series come back."""
    monkeypatch.setattr(consumer_module, "LAG_INTERVAL_S", 0.0)
    settings = KafkaSettings(
        bootstrap_servers=servers.kafka_bootstrap,
        topic_prefix=f"r{unique}.",
        partitions=2,
        session_timeout_ms=10_000,
    )
    await ensure_topics(settings, [TOPIC])
    publisher = KafkaPublisher(settings, client_id="test")
    group = f"{settings.topic_prefix}test-group"

    async def handle(message: submission_events_pb2.SubmissionCompleted, d: Delivery) -> None:
        return None

    w = worker(settings, publisher, handle)
    task = asyncio.create_task(w.run())
    other = KafkaConsumer(
        bootstrap_servers=servers.kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=10_000,
    )
    polling = threading.Event()
    theirs: set[int] = set()

    def poll_other() -> None:
        while not polling.is_set():
            other.poll(100)
            theirs.clear()
            theirs.update(tp.partition for tp in other.assignment())

    try:

        async def both() -> bool:
            if task.done():
                task.result()
            return set(lag_series(group)) == {"0", "1"}

        await eventually(both, 60, "the only member to export the lag of both partitions")

        other.subscribe([TOPIC.full_name(settings.topic_prefix)])
        poller = asyncio.create_task(asyncio.to_thread(poll_other))

        async def split() -> bool:
            taken, ours = set(theirs), set(lag_series(group))
            return len(taken) == 1 and ours == {str(p) for p in {0, 1} - taken}

        await eventually(split, 60, "the partition the other member took to lose its series")
        assert w.lag.exported == {int(p) for p in lag_series(group)}
        polling.set()
        await poller
        await asyncio.to_thread(other.close)  # leaves the group: both partitions come back
        await eventually(both, 60, "both partitions' series back after the other member left")
    finally:
        polling.set()
        w.stop()
        await asyncio.wait_for(task, 30)
        publisher.close()
        with contextlib.suppress(Exception):
            other.close()
    assert lag_series(group) == {}
