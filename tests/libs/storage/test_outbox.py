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
