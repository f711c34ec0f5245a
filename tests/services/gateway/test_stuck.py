"""The stuck-submission gauge, against the real Mongo-wire server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from gateway.adapters.mongo_stuck import StuckSweeper
from medbench.submission.v1 import submission_events_pb2
from medbench_messaging import topics
from medbench_messaging.admin import ensure_topics
from medbench_messaging.consumer import Held
from medbench_messaging.publisher import KafkaPublisher
from medbench_runtime.settings import KafkaSettings
from medbench_storage.quarantine import MongoQuarantine
from tests.conftest import Servers
from tests.e2e.harness import read_topic

pytestmark = [pytest.mark.integration]


async def test_only_submissions_past_their_lease_without_a_reason_count(
    servers: Servers, unique: str
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri, tz_aware=True)
    db = client[f"stuck_{unique}"]
    old = datetime.now(UTC) - timedelta(hours=2)
    new = datetime.now(UTC)
    rows = [
        ("a", "SCORING", "t1", old, ""),  # stuck
        ("b", "SCORING", "t1", old, ""),  # stuck
        ("c", "SCORING", "t2", new, ""),  # recent
        ("d", "DISPATCHING", "t2", old, ""),  # stuck: no progress, no reason
        ("e", "DISPATCHING", "t2", old, "3 items failed for infrastructure reasons"),  # stalled
        ("f", "AWAITING_ANSWERS", "t3", old, ""),  # waits on the partner
        ("g", "COMPLETED", "t3", old, ""),
    ]
    try:
        await db.submissions.insert_many(
            [
                {"_id": i, "state": st, "tenant_id": t, "updated_at": at, "state_reason": why}
                for i, st, t, at, why in rows
            ]
        )
        counts = await StuckSweeper(db, lease_s=1800).sweep()
        assert counts == {("SCORING", "t1"): 2, ("DISPATCHING", "t2"): 1}
        sample = REGISTRY.get_sample_value(
            "medbench_submissions_stuck", {"state": "SCORING", "tenant": "t1"}
        )
        assert sample == 2
        await db.submissions.update_many({}, {"$set": {"state": "COMPLETED"}})
        assert await StuckSweeper(db).sweep() == {}
        gone = REGISTRY.get_sample_value(
            "medbench_submissions_stuck", {"state": "SCORING", "tenant": "t1"}
        )
        assert gone is None
    finally:
        await client.close()


async def test_dead_letter_depth_is_the_held_quarantine_and_falls_after_a_retry_or_drop(
    servers: Servers, unique: str
) -> None:
    """The depth MedbenchDeadLettersPresent reads: entries the quarantine holds. A retry (the
    replay the runbook asks for) and a drop each take one away at the next sweep; the topic's
    dead-letter twin keeps its offsets, which is why they are not the depth."""
    settings = KafkaSettings(bootstrap_servers=servers.kafka_bootstrap, topic_prefix=f"q{unique}.")
    await ensure_topics(settings, [topics.SUBMISSION_COMPLETED])
    publisher = KafkaPublisher(settings, client_id="test")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri, tz_aware=True)
    db = client[f"held_{unique}"]
    quarantine = MongoQuarantine(db, "judge-scorer")
    name = topics.SUBMISSION_COMPLETED.name

    def depth(source: str, topic: str = name) -> float | None:
        return REGISTRY.get_sample_value(
            "medbench_quarantine_held", {"source": source, "topic": topic}
        )

    def held(source: str, origin: str) -> Held:
        payload = submission_events_pb2.SubmissionCompleted(event_id=origin).SerializeToString()
        return Held(source, origin, name, "sub_1", payload, "handler failed", outbox="")

    try:
        first = await quarantine.hold(held("consumer", "g:t:0:1"))
        second = await quarantine.hold(held("consumer", "g:t:0:2"))
        await quarantine.hold(held("consumer", "g:t:0:2"))  # the same message again: one entry
        await quarantine.hold(held("outbox", "evt-1"))
        sweeper = StuckSweeper(db)
        assert await sweeper.held() == {("consumer", name): 2, ("outbox", name): 1}
        assert (depth("consumer"), depth("outbox")) == (2, 1)

        await quarantine.retry(first, "ops@test", publisher)  # replayed to its topic
        await sweeper.sweep()
        assert (depth("consumer"), depth("outbox")) == (1, 1)
        await quarantine.drop(second, "ops@test")
        await sweeper.sweep()
        assert depth("consumer") is None  # nothing held of it any more: the series goes
        assert depth("outbox") == 1
        full = topics.SUBMISSION_COMPLETED.full_name(settings.topic_prefix)
        (record,) = await asyncio.to_thread(read_topic, servers.kafka_bootstrap, full)
        replayed = submission_events_pb2.SubmissionCompleted.FromString(record.value)
        assert replayed.event_id == "g:t:0:1"
    finally:
        publisher.close()
        await client.close()
