"""The transactional outbox against the real Mongo-wire server and Kafka broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from medbench.submission.v1 import submission_events_pb2
from medbench_messaging import topics
from medbench_messaging.admin import ensure_topics
from medbench_messaging.publisher import KafkaPublisher, Outgoing
from medbench_runtime.settings import KafkaSettings
from medbench_storage.client import in_transaction
from medbench_storage.outbox import Outbox, OutboxRelay
from tests.conftest import Servers
from tests.e2e.harness import read_topic

pytestmark = [pytest.mark.integration]
TOPIC = topics.SUBMISSION_CREATED


@pytest.fixture
async def env(
    servers: Servers, unique: str
) -> AsyncIterator[tuple[Any, Any, KafkaSettings, KafkaPublisher]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri)
    settings = KafkaSettings(
        bootstrap_servers=servers.kafka_bootstrap, topic_prefix=f"o{unique}.", partitions=1
    )
    await ensure_topics(settings, [TOPIC])
    publisher = KafkaPublisher(settings, client_id="test")
    yield client, client[f"outbox_{unique}"], settings, publisher
    publisher.close()
    await client.close()


class Boom(Exception):
    pass


async def test_event_and_state_change_commit_together_or_not_at_all(env: Any) -> None:
    client, db, settings, publisher = env

    def change(n: int, fail: bool) -> Any:
        async def work(session: Any) -> None:
            await db.state.insert_one({"_id": n}, session=session)
            event = submission_events_pb2.SubmissionCreated(event_id=f"ev{n}")
            await Outbox(db, "test").add(
                session, [(event.event_id, Outgoing(TOPIC, event, key=f"s{n}"))]
            )
            if fail:
                raise Boom()

        return work

    await in_transaction(client, change(1, fail=False))
    with pytest.raises(Boom):
        await in_transaction(client, change(2, fail=True))
    assert await db.state.count_documents({}) == 1
    assert await db.outbox_test.count_documents({}) == 1

    relay = OutboxRelay(Outbox(db, "test"), publisher, batch_size=10)
    assert await relay.relay_once() == 1
    assert await relay.relay_once() == 0
    assert await db.outbox_test.count_documents({}) == 0
    records = read_topic(settings.bootstrap_servers, TOPIC.full_name(settings.topic_prefix))
    assert [
        submission_events_pb2.SubmissionCreated.FromString(r.value).event_id for r in records
    ] == ["ev1"]
    assert dict(records[0].headers)["event-id"] == b"ev1"


async def test_relay_publishes_in_creation_order(env: Any) -> None:
    client, db, settings, publisher = env
    for n in range(25):

        async def work(session: Any, n: int = n) -> None:
            event = submission_events_pb2.SubmissionCreated(event_id=f"ev{n:02d}")
            await Outbox(db, "test").add(
                session, [(event.event_id, Outgoing(TOPIC, event, key="one"))]
            )

        await in_transaction(client, work)
    relay = OutboxRelay(Outbox(db, "test"), publisher, batch_size=10)
    while await relay.relay_once():
        pass
    records = read_topic(settings.bootstrap_servers, TOPIC.full_name(settings.topic_prefix))
    ids = [submission_events_pb2.SubmissionCreated.FromString(r.value).event_id for r in records]
    assert ids == [f"ev{n:02d}" for n in range(25)]


async def test_replicas_relay_each_event_once_and_take_over_a_lapsed_lease(env: Any) -> None:
    """Two replicas' relays on one outbox: one holds the lease and publishes, the other waits;
    every event is on the topic once; when the holder stops, the other takes over."""
    import asyncio

    from tests.e2e.harness import eventually

    client, db, settings, publisher = env
    name = TOPIC.full_name(settings.topic_prefix)

    async def add(n: int) -> None:
        async def work(session: Any) -> None:
            event = submission_events_pb2.SubmissionCreated(event_id=f"ev{n:03d}")
            await Outbox(db, "test").add(
                session, [(event.event_id, Outgoing(TOPIC, event, key=f"k{n % 3}"))]
            )

        await in_transaction(client, work)

    relays = [
        OutboxRelay(
            Outbox(db, "test"), publisher, holder=f"r{i}", lease_s=1.0, poll_interval_s=0.05
        )
        for i in range(2)
    ]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    try:
        for n in range(60):
            await add(n)

        def published() -> list[str]:
            return [
                submission_events_pb2.SubmissionCreated.FromString(r.value).event_id
                for r in read_topic(settings.bootstrap_servers, name)
            ]

        async def all_out() -> bool:
            return len(published()) >= 60 and await db.outbox_test.count_documents({}) == 0

        await eventually(all_out, 60, "the 60 events to leave the outbox")
        ids = published()
        assert sorted(ids) == [f"ev{n:03d}" for n in range(60)]  # each once
        lease = await db.outbox_leases.find_one({"_id": "outbox_test"})
        assert lease is not None
        leader = next(i for i, r in enumerate(relays) if lease["holder"] == r._holder)
        # The holder stops (its lease is handed over); the other relays what comes next.
        relays[leader].stop()
        await asyncio.wait_for(tasks[leader], 30)
        for n in range(60, 70):
            await add(n)

        async def rest_out() -> bool:
            return len(published()) >= 70

        await eventually(rest_out, 30, "the other relay to take over")
        assert sorted(published()) == [f"ev{n:03d}" for n in range(70)]
        lease = await db.outbox_leases.find_one({"_id": "outbox_test"})
        assert lease is not None and lease["holder"] == relays[1 - leader]._holder
    finally:
        for r in relays:
            r.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
