"""A consumer on every topic fed an undecodable, an oversized and a handler-crashing message:
the bad ones are dead-lettered and quarantined, counted, and the consumer goes on; retried
after a fix, nothing is counted twice (real Kafka broker and Mongo-wire server)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from medbench_messaging import topics
from medbench_messaging.admin import ensure_topics
from medbench_messaging.consumer import Delivery, KafkaConsumerWorker
from medbench_messaging.publisher import KafkaPublisher, Outgoing
from medbench_runtime.settings import KafkaSettings
from medbench_storage.quarantine import HELD, RETRIED, MongoQuarantine
from tests.conftest import Servers
from tests.e2e.harness import eventually, read_topic

pytestmark = [pytest.mark.integration]


def message(topic: topics.Topic, event_id: str) -> Any:
    return topic.message_type(event_id=event_id)


@pytest.mark.parametrize("topic", topics.ALL_TOPICS, ids=lambda t: t.name.split(".")[2])
async def test_bad_messages_are_held_and_the_consumer_goes_on(
    servers: Servers, unique: str, topic: topics.Topic
) -> None:
    settings = KafkaSettings(
        bootstrap_servers=servers.kafka_bootstrap,
        topic_prefix=f"p{unique}.",
        max_delivery_attempts=2,
        retry_backoff_s=0.02,
        partitions=1,
    )
    await ensure_topics(settings, [topic])
    publisher = KafkaPublisher(settings, client_id="test")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri)
    quarantine = MongoQuarantine(client[f"poison_{unique}"], "test")
    name = topic.full_name(settings.topic_prefix)
    # Larger than the platform's own events may be, within what the topic admits (another
    # producer, or an older release, may send it): handled like any other.
    oversized = message(topic, "big-" + "x" * (settings.max_event_bytes + 4_000))
    assert len(oversized.SerializeToString()) > settings.max_event_bytes
    await publisher.publish(
        [
            Outgoing(topic, message(topic, "u"), key="k", topic_name=name, raw_value=b"\xff\x00!"),
            Outgoing(
                topic,
                oversized,
                key="k",
                topic_name=name,
                raw_value=oversized.SerializeToString(),
            ),
            Outgoing(topic, message(topic, "crash"), key="k"),
            Outgoing(topic, message(topic, "ok"), key="k"),
        ]
    )
    counted: dict[str, int] = {}
    broken = True

    async def handle(event: Any, delivery: Delivery) -> None:
        if event.event_id == "crash" and broken:
            raise KeyError("a handler bug on this one message")
        # An idempotent handler: a delivery of a counted event changes nothing.
        counted.setdefault(event.event_id[:4], 0)
        counted[event.event_id[:4]] += 0 if event.event_id[:4] in done else 1
        done.add(event.event_id[:4])

    done: set[str] = set()
    worker = KafkaConsumerWorker(
        settings,
        topic,
        "g",
        "m1",
        handle,
        publisher,
        quarantine=quarantine.hold,
    )
    before = REGISTRY.get_sample_value(
        "medbench_kafka_consumed_total",
        {"topic": topic.name, "group": f"{settings.topic_prefix}g", "outcome": "dead_lettered"},
    )
    task = asyncio.create_task(worker.run())
    try:

        async def handled(*ids: str) -> bool:
            assert not task.done(), task  # the worker is still running
            return all(i in done for i in ids)

        await eventually(lambda: handled("big-", "ok"), 60, "the good messages handled")
        entries = await quarantine.list(status=HELD)
        reasons = sorted(e["reason"] for e in entries)
        assert len(entries) == 2 and reasons[0].startswith("KeyError")
        assert reasons[1].startswith("undecodable")
        assert {e["topic"] for e in entries} == {topic.name}
        dead = read_topic(settings.bootstrap_servers, topic.dead_letter_name(settings.topic_prefix))
        assert len(dead) == 2
        after = REGISTRY.get_sample_value(
            "medbench_kafka_consumed_total",
            {"topic": topic.name, "group": f"{settings.topic_prefix}g", "outcome": "dead_lettered"},
        )
        assert after - (before or 0) == 2

        # The handler is fixed; the crashing message is retried (and the good one delivered
        # again by an operator replaying it too): each is counted once.
        broken = False
        crash = next(e for e in entries if e["reason"].startswith("KeyError"))
        await quarantine.retry(crash["_id"], "maintainer", publisher)
        await publisher.publish([Outgoing(topic, message(topic, "ok"), key="k")])
        await eventually(lambda: handled("cras"), 60, "the retried message handled")
        assert (await quarantine.get(crash["_id"]))["status"] == RETRIED
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        publisher.close()
        await client.close()
    assert counted == {"big-": 1, "ok": 1, "cras": 1}
