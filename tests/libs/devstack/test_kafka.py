"""A real single-node Kafka from the cached jars: produce, consume, stop, and failure reasons."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from medbench_devstack import KAFKA_VERSION, DevstackError, KafkaBroker
from medbench_devstack.kafka import kafka_libs_dir
from medbench_devstack.ports import port_is_open

from ._util import wait_for


def test_start_produce_consume_stop(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "kafka")
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    broker.start(timeout_s=90)
    try:
        assert broker.pid is not None and port_is_open(broker.port)
        assert (kafka_libs_dir() / ".complete").is_file()
        assert kafka_libs_dir().name == f"libs-{KAFKA_VERSION}"

        topic = f"devstack-test-{uuid.uuid4().hex}"
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10_000)
        try:
            admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
            # The controller answers create_topics before every broker's metadata has it.
            wait_for(lambda: topic in admin.list_topics(), 30, f"topic {topic} to be listed")
        finally:
            admin.close()

        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        try:
            for i in range(3):
                producer.send(topic, key=b"k", value=f"hello {i}".encode())
            producer.flush(timeout=15)
        finally:
            producer.close()

        group = f"g-{uuid.uuid4().hex}"
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        received: list[bytes] = []
        try:

            def poll() -> bool:
                for records in consumer.poll(timeout_ms=500).values():
                    received.extend(r.value for r in records)
                return len(received) >= 3

            wait_for(poll, 30, "three records through a consumer group")
            consumer.commit()
            # the group coordinator (internal offsets topic) works on one node
            assert consumer.committed(TopicPartition(topic, 0)) == 3
        finally:
            consumer.close()
        assert received == [b"hello 0", b"hello 1", b"hello 2"]
    finally:
        pid = broker.pid
        broker.stop()
    assert broker.pid is None
    assert pid is not None and not port_is_open(broker.port)


def test_port_in_use_reports_broker_exit(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        broker = KafkaBroker(tmp_path / "kafka", port=squatter.getsockname()[1])
        with pytest.raises(DevstackError) as info:
            broker.start(timeout_s=60)
    message = str(info.value)
    assert "broker exited during startup" in message
    assert "Address already in use" in message
    assert broker.pid is None


def test_readiness_timeout_is_reported_and_cleaned_up(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "kafka")
    # a JVM broker cannot be ready within one second, so the deadline must trip
    with pytest.raises(DevstackError, match=r"(?s)start failed.*not ready after 1s") as info:
        broker.start(timeout_s=1)
    message = str(info.value)
    # the JVM is stopped by the script, which says how it ended and what it was waiting for
    assert "was still running; stopped it: exit status" in message
    assert "was checking: " in message
    assert broker.pid is None
    assert not port_is_open(broker.port)


def test_missing_java_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA", "/nonexistent/bin/java")
    with pytest.raises(DevstackError, match="java not found"):
        KafkaBroker(tmp_path / "kafka").start()


def test_cold_cache_without_maven_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDBENCH_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("MVN", "/nonexistent/bin/mvn")
    with pytest.raises(DevstackError, match=r"not cached in .*empty-cache.*Maven"):
        KafkaBroker(tmp_path / "kafka").start()


def test_failing_maven_output_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_mvn = tmp_path / "mvn"
    fake_mvn.write_text("#!/bin/sh\necho '[ERROR] Could not resolve kafka_2.13'\nexit 1\n")
    fake_mvn.chmod(0o755)
    monkeypatch.setenv("MEDBENCH_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("MVN", str(fake_mvn))
    with pytest.raises(DevstackError, match=r"(?s)mvn failed.*Could not resolve kafka_2.13"):
        KafkaBroker(tmp_path / "kafka").start()
