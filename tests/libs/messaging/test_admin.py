"""Topic creation waits until every partition has a leader, so a consumer started next is
assigned every partition at once (a topic missing from the first assignment makes the group
rebalance later, pausing consumption: seen as a submission that never completed in time)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kafka import KafkaAdminClient

from medbench_messaging import admin
from medbench_messaging.topics import ALL_TOPICS
from medbench_runtime.settings import KafkaSettings
from tests.conftest import Servers


def topic(name: str, *leaders: int, error: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "error_code": error,
        "partitions": [
            {"partition_index": i, "leader_id": leader, "error_code": 0}
            for i, leader in enumerate(leaders)
        ],
    }


def test_a_topic_counts_as_served_only_with_a_leader_per_partition() -> None:
    described = [
        topic("ready", 1, 1, 1),
        topic("no-leader", 1, -1, 1),
        topic("unknown", error=3),
        topic("short", 1),
    ]
    assert admin._without_leaders(described, 3) == ["no-leader", "unknown", "short"]
    assert admin._without_leaders(described[:1], 3) == []


def test_waiting_for_leaders_gives_up_with_the_topics_named() -> None:
    class NeverReady:
        def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
            return [topic(n, -1) for n in names]

    with pytest.raises(RuntimeError, match="after 0 s: a, b"):
        admin._await_leaders(NeverReady(), ["b", "a"], 1, 0.0)


async def test_ensure_topics_returns_with_every_partition_led(servers: Servers) -> None:
    settings = KafkaSettings(
        bootstrap_servers=servers.kafka_bootstrap, topic_prefix=f"adm{uuid.uuid4().hex[:8]}."
    )
    await admin.ensure_topics(settings, ALL_TOPICS[:2])
    client = KafkaAdminClient(bootstrap_servers=servers.kafka_bootstrap)
    try:
        names = admin._names(settings, ALL_TOPICS[:2])
        described = client.describe_topics(names)
        assert len(described) == 4
        assert admin._without_leaders(described, settings.partitions) == []
    finally:
        client.close()


def test_a_settling_cluster_is_retried_and_a_refusal_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 3-broker cluster just started can name a controller its metadata does not list yet
    (kafka-python raises UnknownBrokerIdError, marked not retriable): topic set-up tries again
    with a new client; an authorization refusal is raised at once."""
    from kafka.errors import TopicAuthorizationFailedError, UnknownBrokerIdError

    monkeypatch.setattr(admin, "check_broker", lambda settings: None)
    monkeypatch.setattr(admin.time, "sleep", lambda s: None)
    calls: list[int] = []

    def settling(settings: KafkaSettings, topics: list[Any]) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise UnknownBrokerIdError(2)

    monkeypatch.setattr(admin, "_ensure_once", settling)
    admin._ensure(KafkaSettings(), [])
    assert len(calls) == 3

    calls.clear()

    def refused(settings: KafkaSettings, topics: list[Any]) -> None:
        calls.append(1)
        raise TopicAuthorizationFailedError()

    monkeypatch.setattr(admin, "_ensure_once", refused)
    with pytest.raises(TopicAuthorizationFailedError):
        admin._ensure(KafkaSettings(), [])
    assert len(calls) == 1
