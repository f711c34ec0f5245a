"""A 3-node KRaft cluster: the leader of a partition killed while the project's publisher and
consumer work on it. Nothing acknowledged is lost, nothing is handled twice, a new leader is
elected, and the killed node comes back into the in-sync replicas."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from medbench_devstack.kafka_cluster import KafkaCluster
from medbench_messaging import topics
from medbench_messaging.admin import ensure_topics
from medbench_messaging.consumer import Delivery, KafkaConsumerWorker
from medbench_messaging.publisher import KafkaPublisher, Outgoing, PublishError
from medbench_runtime.settings import KafkaSettings

pytestmark = [pytest.mark.integration]

TOPIC = topics.SUBMISSION_CREATED
BEFORE, DURING = 300, 600  # events published before the kill, and while the leader is down
KEYS = 24  # spread over the 3 partitions


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    nodes = KafkaCluster(tmp_path_factory.mktemp("kafka-cluster"))
    nodes.start(timeout_s=90)
    try:
        yield nodes
    finally:
        nodes.stop()


async def publish(publisher: KafkaPublisher, ids: list[int]) -> int:
    """Publishes events ``ids`` in batches of 50; what a batch could not get acknowledged is
    sent again (as the outbox relay does) until it is. Returns how many sends failed."""
    failed = 0
    for start in range(0, len(ids), 50):
        batch = [
            Outgoing(TOPIC, TOPIC.message_type(event_id=str(i)), key=f"k{i % KEYS}")
            for i in ids[start : start + 50]
        ]
        deadline = time.monotonic() + 60
        while batch:
            try:
                await publisher.publish(batch)
                batch = []
            except PublishError as exc:
                assert not exc.poison, exc
                assert time.monotonic() < deadline, f"unpublished for 60 s: {exc}"
                failed += len(exc.failures)
                batch = [batch[i] for i in sorted(exc.failures)]
                await asyncio.sleep(0.2)
    return failed


def topic_config(bootstrap: str, name: str) -> dict[str, str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name)], config_filter="all"
        )
        return {k: v["value"] for k, v in described["topic"][name].items()}
    finally:
        admin.close()


async def test_leader_killed_nothing_lost_or_doubled(
    cluster: KafkaCluster, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cluster.startup_s is not None and cluster.startup_s < 60, cluster.startup_s
    assert cluster.brokers() == {1, 2, 3}
    settings = KafkaSettings(
        bootstrap_servers=cluster.bootstrap,
        topic_prefix=f"c{unique}.",
        partitions=3,
        replication_factor=3,
        session_timeout_ms=6000,
        retry_backoff_s=0.05,
    )
    name = TOPIC.full_name(settings.topic_prefix)
    await ensure_topics(settings, [TOPIC])
    await asyncio.to_thread(cluster.wait_in_sync, [name], 30)
    states = cluster.partitions([name])
    assert [s.partition for s in states] == [0, 1, 2]
    assert all(len(s.replicas) == 3 and set(s.isr) == set(s.replicas) for s in states), states
    config = topic_config(cluster.bootstrap, name)
    assert config["min.insync.replicas"] == "2"
    assert config["unclean.leader.election.enable"] == "false"

    # The project's consumer with an idempotent handler: what it has handled is a set of
    # event ids; a delivery of one already handled (a redelivery) is counted and skipped.
    handled: set[str] = set()
    deliveries: Counter[str] = Counter()

    async def handler(message: Any, delivery: Delivery) -> None:
        deliveries[message.event_id] += 1
        handled.add(message.event_id)

    publisher = KafkaPublisher(settings, "cluster-test")
    worker = KafkaConsumerWorker(
        settings, TOPIC, "cluster-test", f"m{unique}", handler, dead_letters=publisher
    )
    consuming = asyncio.create_task(worker.run())
    try:
        assert await publish(publisher, list(range(BEFORE))) == 0

        victim = cluster.leader(name, 0)
        assert victim is not None
        killed_at = time.monotonic()
        await asyncio.to_thread(cluster.kill, victim)
        # Producing goes on while the partition has no leader; the election is timed meanwhile.
        producing = asyncio.create_task(publish(publisher, list(range(BEFORE, BEFORE + DURING))))
        elected_s = await asyncio.to_thread(cluster.wait_new_leader, name, 0, victim, 30)
        new_leader = cluster.leader(name, 0)
        isr_without = cluster.partition(name, 0).isr
        failed_sends = await asyncio.wait_for(producing, 90)
        produced_s = time.monotonic() - killed_at

        restart_at = time.monotonic()
        await asyncio.to_thread(cluster.restart, victim, 60)
        restarted_s = time.monotonic() - restart_at
        in_sync_s = await asyncio.to_thread(cluster.wait_in_sync, [name], 60)
        assert cluster.brokers() == {1, 2, 3}
        assert victim in cluster.partition(name, 0).isr

        expected = {str(i) for i in range(BEFORE + DURING)}
        deadline = time.monotonic() + 60
        while handled != expected and time.monotonic() < deadline:
            assert not consuming.done(), consuming
            await asyncio.sleep(0.1)
    finally:
        worker.stop()
        await asyncio.wait_for(consuming, 30)
        publisher.close()

    assert new_leader not in (None, victim)
    assert victim not in isr_without
    missing = expected - handled
    assert not missing, f"{len(missing)} acknowledged events never handled: {sorted(missing)[:10]}"
    assert handled == expected  # nothing handled that was not sent
    redelivered = sum(n - 1 for n in deliveries.values())
    with capsys.disabled():
        print(
            f"\ncluster started in {cluster.startup_s:.1f} s; node {victim} (leader of {name}[0]) "
            f"killed: new leader {new_leader} elected in {elected_s:.1f} s "
            f"(ISR then {isr_without}); "
            f"{DURING} events published in {produced_s:.1f} s after the kill ({failed_sends} sends "
            f"retried); node restarted in {restarted_s:.1f} s, back in the ISR {in_sync_s:.1f} s "
            f"later; {len(handled)} / {len(expected)} handled, {redelivered} redeliveries skipped"
        )
