"""A consumer the group coordinator drops comes back (real broker): whether kafka-python
rejoins by itself or the worker sees its member missing from the group and replaces the client,
events published after the removal are handled, and the broker lists the member again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from kafka import KafkaAdminClient
from kafka.admin import MemberToRemove

from medbench.submission.v1 import submission_events_pb2
from medbench_messaging import topics
from medbench_messaging.admin import ensure_topics
from medbench_messaging.consumer import Delivery, KafkaConsumerWorker
from medbench_messaging.publisher import KafkaPublisher, Outgoing
from medbench_runtime.settings import KafkaSettings
from tests.conftest import Servers
from tests.e2e.harness import eventually

pytestmark = [pytest.mark.integration]
TOPIC = topics.SUBMISSION_COMPLETED


@pytest.fixture
async def kafka(
    servers: Servers, unique: str
) -> AsyncIterator[tuple[KafkaSettings, KafkaPublisher]]:
    settings = KafkaSettings(
        bootstrap_servers=servers.kafka_bootstrap, topic_prefix=f"m{unique}.", partitions=2
    )
    await ensure_topics(settings, [TOPIC])
    publisher = KafkaPublisher(settings, client_id="test")
    yield settings, publisher
    publisher.close()


def _event(n: int) -> submission_events_pb2.SubmissionCompleted:
    return submission_events_pb2.SubmissionCompleted(event_id=f"e{n}", submission_id=f"s{n}")


async def test_a_member_removed_by_the_coordinator_consumes_again(
    kafka: tuple[KafkaSettings, KafkaPublisher],
) -> None:
    settings, publisher = kafka
    handled: set[str] = set()

    async def handler(message: submission_events_pb2.SubmissionCompleted, d: Delivery) -> None:
        handled.add(message.event_id)

    worker = KafkaConsumerWorker(settings, TOPIC, "membership", "m1", handler, publisher)
    group = f"{settings.topic_prefix}membership"
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    task = asyncio.create_task(worker.run())

    def listed() -> bool:
        members = admin.describe_groups([group])[group].get("members") or []
        return any(m.get("group_instance_id") == f"m1:{TOPIC.name}" for m in members)

    try:
        await publisher.publish([Outgoing(TOPIC, _event(0), key="k0")])

        async def first() -> bool:
            return "e0" in handled

        await eventually(first, 60, "the first event to be handled")
        # What the worker checks every LAG_INTERVAL_S: listed while it holds its partitions;
        # a member of another id (never joined) is seen missing from the stable group.
        assert await asyncio.to_thread(worker._membership_listed)
        stranger = KafkaConsumerWorker(settings, TOPIC, "membership", "m2", handler, publisher)
        assert not await asyncio.to_thread(stranger._membership_listed)
        if stranger._admin is not None:
            stranger._admin.close()
        removed = admin.remove_group_members(
            group, [MemberToRemove(group_instance_id=f"m1:{TOPIC.name}")]
        )
        assert all(e.__name__ == "NoError" for e in removed.values()), removed
        await publisher.publish([Outgoing(TOPIC, _event(n), key=f"k{n}") for n in range(1, 21)])

        async def all_handled() -> bool:
            if task.done():
                task.result()
            return {f"e{n}" for n in range(21)} <= handled

        await eventually(all_handled, 90, "the events published after the removal")

        async def back() -> bool:
            return await asyncio.to_thread(listed)

        await eventually(back, 60, "the broker to list the member again")
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        admin.close()
