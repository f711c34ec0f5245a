"""Outbox relays never die of one event: poison goes to the quarantine, the rest flows
(real Mongo-wire server and Kafka broker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError
from pymongo import AsyncMongoClient

from medbench.inference.v1 import inference_events_pb2
from medbench.submission.v1 import submission_events_pb2, submission_pb2
from medbench_messaging import topics
from medbench_messaging.admin import TopicTooSmall, ensure_topics
from medbench_messaging.publisher import KafkaPublisher, Outgoing, PublishError
from medbench_messaging.sizing import broker_max_message_bytes
from medbench_runtime.settings import KafkaSettings
from medbench_storage.client import in_transaction
from medbench_storage.outbox import RELAY_RETRIES, Outbox, OutboxRelay
from medbench_storage.quarantine import DROPPED, HELD, RETRIED, MongoQuarantine, NotQuarantined
from tests.conftest import Servers
from tests.e2e.harness import eventually, read_topic

pytestmark = [pytest.mark.integration]
CREATED = topics.SUBMISSION_CREATED
RESPONSES = topics.RESPONSE_RECORDED


@pytest.fixture
async def env(servers: Servers, unique: str) -> AsyncIterator[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri)
    settings = KafkaSettings(
        bootstrap_servers=servers.kafka_bootstrap, topic_prefix=f"q{unique}.", partitions=1
    )
    await ensure_topics(settings, [CREATED, RESPONSES])
    publisher = KafkaPublisher(settings, client_id="test")
    db = client[f"quarantine_{unique}"]
    quarantine = MongoQuarantine(db, "test")
    outbox = Outbox(db, "test", settings.max_event_bytes)
    yield {
        "client": client,
        "db": db,
        "settings": settings,
        "publisher": publisher,
        "quarantine": quarantine,
        "outbox": outbox,
    }
    publisher.close()
    await client.close()


def created(n: int, name: str = "m") -> submission_events_pb2.SubmissionCreated:
    return submission_events_pb2.SubmissionCreated(
        event_id=f"ev{n:02d}",
        submission=submission_pb2.Submission(
            submission_id=f"s{n}", model=submission_pb2.ModelInfo(name=name)
        ),
    )


def stored(event_id: str, topic: str, payload: bytes, n: int) -> dict[str, Any]:
    """An outbox document as an older release (or a bug) may have left it."""
    return {
        "_id": event_id,
        "topic": topic,
        "key": "k",
        "payload": payload,
        "created_at": datetime(2026, 1, 1, 0, 0, n, tzinfo=UTC),
        "trace": [],
    }


def ids_on(settings: KafkaSettings, topic: topics.Topic) -> list[str]:
    records = read_topic(settings.bootstrap_servers, topic.full_name(settings.topic_prefix))
    return [topic.message_type.FromString(r.value).event_id for r in records]


async def test_a_poison_event_at_the_head_is_quarantined_and_the_rest_flows(
    env: dict[str, Any],
) -> None:
    db, settings = env["db"], env["settings"]
    too_big = created(0, name="x" * 1_100_000).SerializeToString()
    await db.outbox_test.insert_many(
        [
            stored("ev00", CREATED.name, too_big, 0),  # cannot be split: no batch field
            stored("ev01", "medbench.no-such-topic.v1", b"\x00", 1),  # unreadable
            *(
                stored(f"ev{n:02d}", CREATED.name, created(n).SerializeToString(), n)
                for n in (2, 3)
            ),
        ]
    )
    relay = OutboxRelay(env["outbox"], env["publisher"], env["quarantine"].hold, batch_size=10)
    task = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: _count(db.outbox_test), 20, "the outbox to empty", interval_s=0.05)
        assert not task.done()  # the relay goes on

        # A new event after the poison flows too.
        async def later(session: Any) -> None:
            await env["outbox"].add(session, [("ev04", Outgoing(CREATED, created(4), key="k"))])

        await in_transaction(env["client"], later)
        relay.notify()
        await eventually(
            lambda: _true("ev04" in ids_on(settings, CREATED)), 20, "ev04 on the topic"
        )
    finally:
        relay.stop()
        await asyncio.wait_for(task, 20)
    assert ids_on(settings, CREATED) == ["ev02", "ev03", "ev04"]
    entries = await env["quarantine"].list()
    reasons = {e["origin"]: e["reason"] for e in entries}
    assert set(reasons) == {"ev00", "ev01"}
    assert "EventTooLarge" in reasons["ev00"] and "limit is 1000000" in reasons["ev00"]
    assert "no-such-topic" in reasons["ev01"]
    assert all(e["status"] == HELD and e["source"] == "outbox" for e in entries)
    assert await env["quarantine"].held_count() == 2


async def test_an_oversized_batch_stored_before_the_size_rule_is_sent_in_parts(
    env: dict[str, Any],
) -> None:
    """The reproduction: 63 answers of 30,000 bytes in one 1.27 MB response-recorded event."""
    db, settings = env["db"], env["settings"]
    event = inference_events_pb2.ResponsesRecorded(
        event_id="sub:b1",
        submission_id="sub",
        batch_id="b1",
        responses=[
            inference_events_pb2.RecordedResponse(item_id=f"i{n}", ordinal=n, answer="a" * 30_000)
            for n in range(63)
        ],
    )
    assert event.ByteSize() > 1_048_576
    await db.outbox_test.insert_one(stored("sub:b1", RESPONSES.name, event.SerializeToString(), 0))
    relay = OutboxRelay(env["outbox"], env["publisher"], env["quarantine"].hold)
    assert await relay.relay_once() == 1
    records = read_topic(settings.bootstrap_servers, RESPONSES.full_name(settings.topic_prefix))
    parts = [RESPONSES.message_type.FromString(r.value) for r in records]
    assert [p.event_id for p in parts] == ["sub:b1.p0", "sub:b1.p1"]
    assert [r.item_id for p in parts for r in p.responses] == [f"i{n}" for n in range(63)]
    assert all(len(r.value) <= settings.max_event_bytes for r in records)
    assert await env["quarantine"].held_count() == 0


async def test_outbox_add_stores_a_large_batch_as_parts_that_fit(env: dict[str, Any]) -> None:
    event = inference_events_pb2.ResponsesRecorded(
        event_id="sub:b2",
        batch_id="b2",
        responses=[
            inference_events_pb2.RecordedResponse(item_id=f"i{n}", ordinal=n, answer="答" * 10_000)
            for n in range(100)
        ],
    )

    async def work(session: Any) -> None:
        await env["outbox"].add(session, [("sub:b2", Outgoing(RESPONSES, event, key="sub"))])

    await in_transaction(env["client"], work)
    docs = await env["db"].outbox_test.find({}).sort("_id", 1).to_list()
    assert [d["_id"] for d in docs] == [f"sub:b2.p{k}" for k in range(len(docs))]
    assert len(docs) == 4  # 3 MB of answers
    assert all(len(d["payload"]) <= env["settings"].max_event_bytes for d in docs)


async def test_retry_sends_an_outbox_event_back_and_drop_keeps_it_marked(
    env: dict[str, Any],
) -> None:
    db, quarantine = env["db"], env["quarantine"]
    await db.outbox_test.insert_many(
        [
            stored("ev10", "medbench.no-such-topic.v1", b"\x00", 0),
            stored("ev11", CREATED.name, b"\xff\xff", 1),  # sent as-is: consumers dead-letter it
            stored("ev12", CREATED.name, created(12, name="x" * 1_100_000).SerializeToString(), 2),
        ]
    )
    relay = OutboxRelay(env["outbox"], env["publisher"], quarantine.hold)
    assert await relay.relay_once() == 3
    held = {e["origin"]: e["_id"] for e in await quarantine.list(status=HELD)}
    assert set(held) == {"ev10", "ev12"}

    dropped = await quarantine.drop(held["ev10"], by="key-1")
    assert dropped["origin"] == "ev10"
    assert (await quarantine.get(held["ev10"]))["status"] == DROPPED
    with pytest.raises(NotQuarantined):
        await quarantine.drop(held["ev10"], by="key-1")  # only held entries
    with pytest.raises(NotQuarantined):
        await quarantine.retry(held["ev10"], "key-1", env["publisher"])

    # Retried, the event is back in its outbox; still too large, it is held again (counted).
    await quarantine.retry(held["ev12"], "key-2", env["publisher"])
    assert await db.outbox_test.count_documents({"_id": "ev12"}) == 1
    assert (await quarantine.get(held["ev12"]))["status"] == RETRIED
    assert await relay.relay_once() == 1
    again = await quarantine.get(held["ev12"])
    assert again["status"] == HELD and again["times"] == 2
    assert [e["_id"] for e in await quarantine.list(status=HELD)] == [held["ev12"]]


async def test_an_outage_is_retried_never_quarantined(env: dict[str, Any]) -> None:
    """A publisher that times out (the broker unreachable) leaves events in the outbox and the
    relay running; once it answers, they leave."""

    class Flaky:
        def __init__(self, real: KafkaPublisher) -> None:
            self.real, self.failures = real, 3

        async def publish(self, batch: Any) -> None:
            if self.failures:
                self.failures -= 1
                raise PublishError({i: KafkaTimeoutError("no broker") for i in range(len(batch))})
            await self.real.publish(batch)

    db = env["db"]
    await db.outbox_test.insert_one(
        stored("ev20", CREATED.name, created(20).SerializeToString(), 0)
    )
    flaky = Flaky(env["publisher"])
    relay = OutboxRelay(env["outbox"], flaky, env["quarantine"].hold)  # type: ignore[arg-type]
    retries_before = RELAY_RETRIES.labels(db.outbox_test.name)._value.get()  # noqa: SLF001
    task = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: _count(db.outbox_test), 20, "the outbox to empty", 0.05)
    finally:
        relay.stop()
        await asyncio.wait_for(task, 20)
    assert flaky.failures == 0
    assert RELAY_RETRIES.labels(db.outbox_test.name)._value.get() - retries_before == 3  # noqa: SLF001
    assert ids_on(env["settings"], CREATED) == ["ev20"]
    assert await env["quarantine"].held_count() == 0


async def test_a_topic_admitting_less_than_the_event_limit_is_refused_at_start(
    servers: Servers, unique: str
) -> None:
    small = KafkaSettings(
        bootstrap_servers=servers.kafka_bootstrap,
        topic_prefix=f"s{unique}.",
        partitions=1,
        max_event_bytes=300_000,
    )
    await ensure_topics(small, [CREATED])  # created with max.message.bytes for 300,000
    bigger = small.model_copy(update={"max_event_bytes": 2_000_000})
    with pytest.raises(TopicTooSmall) as refused:
        await ensure_topics(bigger, [CREATED])
    message = str(refused.value)
    assert CREATED.full_name(small.topic_prefix) in message
    assert str(broker_max_message_bytes(300_000)) in message
    assert f">= {broker_max_message_bytes(2_000_000)}" in message


async def _count(collection: Any) -> bool:
    return await collection.count_documents({}) == 0


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize(
    "token", ["x", "1.x", "99999999999999999999.q_1", "-99999999999999.q_1", ".q_1", "1."]
)
async def test_a_page_token_not_made_by_the_list_is_refused(
    env: dict[str, Any], token: str
) -> None:
    with pytest.raises(ValueError):
        await env["quarantine"].list(page_token=token)
