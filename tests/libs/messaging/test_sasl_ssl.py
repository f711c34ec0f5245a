"""Kafka over SASL_SSL (SCRAM-SHA-512 over TLS) against a real broker started so, once for this
module: the project's publisher and consumer, the errors a wrong setting gets, and a service
that serves and moves a message with nothing but these settings."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from medbench.submission.v1 import submission_events_pb2
from medbench_devstack.kafka import KafkaBroker
from medbench_devstack.kafka_tls import SaslSsl
from medbench_devstack.services import ServiceSpec, ServiceStack
from medbench_messaging import topics
from medbench_messaging.admin import ensure_topics
from medbench_messaging.consumer import Delivery, KafkaConsumerWorker
from medbench_messaging.preflight import check_broker
from medbench_messaging.publisher import KafkaPublisher, Outgoing
from medbench_messaging.security import KafkaSecurityError, client_options
from medbench_runtime.settings import KafkaSettings
from tests.conftest import Servers
from tests.e2e.harness import eventually

pytestmark = [pytest.mark.integration]
TOPIC = topics.SUBMISSION_COMPLETED
PASSWORD = "alice-Scram-512-pw"
SERVICE_PASSWORD = "metric-Scram-512-pw"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One SASL_SSL broker for the module (a throwaway CA; users alice and metric-scorer)."""
    kafka = KafkaBroker(
        tmp_path_factory.mktemp("sasl-ssl") / "kafka",
        sasl_ssl=SaslSsl({"alice": PASSWORD, "metric-scorer": SERVICE_PASSWORD}),
    )
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


def secured(broker: KafkaBroker, prefix: str, **changes: Any) -> KafkaSettings:
    values: dict[str, Any] = {
        "bootstrap_servers": broker.bootstrap,
        "topic_prefix": prefix,
        "partitions": 1,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "alice",
        "sasl_password": PASSWORD,
        "ssl_cafile": str(broker.ca_file),
    }
    return KafkaSettings(**(values | changes))


def read_topic(settings: KafkaSettings, topic: str, timeout_s: float = 10) -> list[Any]:
    """Every record of a topic, read with the settings' security options."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        **client_options(settings),
    )
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


async def test_publish_and_consume_over_scram_and_tls_never_logging_the_password(
    broker: KafkaBroker, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = secured(broker, f"s{unique}.")
    await ensure_topics(settings, [TOPIC])
    publisher = KafkaPublisher(settings, client_id="sasl-test")
    try:
        await publisher.publish(
            [
                Outgoing(
                    TOPIC,
                    submission_events_pb2.SubmissionCompleted(event_id=f"e{n}", submission_id="s"),
                    key="s",
                )
                for n in range(3)
            ]
        )
        seen: list[str] = []

        async def handle(message: submission_events_pb2.SubmissionCompleted, d: Delivery) -> None:
            seen.append(message.event_id)

        worker = KafkaConsumerWorker(settings, TOPIC, "sasl-group", "m1", handle, publisher)
        task = asyncio.create_task(worker.run())
        try:
            await eventually(
                lambda: asyncio.sleep(0, result=len(seen) == 3 or task.done()), 60, "3 handled"
            )
        finally:
            worker.stop()
            await asyncio.wait_for(task, 30)
        assert seen == ["e0", "e1", "e2"]
    finally:
        publisher.close()
    # kafka-python's admin client logs its whole configuration at DEBUG: redacted.
    assert "sasl_plain_password" in caplog.text
    assert PASSWORD not in caplog.text


def test_wrong_password_is_named_at_start(broker: KafkaBroker, unique: str) -> None:
    settings = secured(broker, f"w{unique}.", sasl_password="not-the-password")
    t0 = time.monotonic()
    with pytest.raises(KafkaSecurityError) as refused:
        asyncio.run(ensure_topics(settings, [TOPIC]))
    message = str(refused.value)
    assert "SASL SCRAM-SHA-512 login as 'alice' refused" in message
    assert "invalid credentials" in message  # the broker's own reason
    assert "not-the-password" not in message
    assert time.monotonic() - t0 < 10  # named at once, not after a bootstrap timeout


def test_plaintext_client_on_the_tls_port_is_told_to_use_tls(broker: KafkaBroker) -> None:
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
    with pytest.raises(KafkaSecurityError, match="the port speaks TLS, but MEDBENCH_KAFKA__"):
        check_broker(settings)


def test_untrusted_certificate_and_missing_files_are_named(
    broker: KafkaBroker, tmp_path: Path
) -> None:
    with pytest.raises(KafkaSecurityError, match="TLS certificate refused"):
        check_broker(secured(broker, "x.", ssl_cafile=""))
    with pytest.raises(KafkaSecurityError, match="SSL_CAFILE=.*cannot read it"):
        check_broker(secured(broker, "x.", ssl_cafile=str(tmp_path / "absent.pem")))
    # A password file (a mounted Secret) with its trailing newline works like the inline one.
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    check_broker(secured(broker, "x.", sasl_password="", sasl_password_file=str(secret)))


def test_a_service_serves_and_moves_a_message_over_sasl_ssl(
    broker: KafkaBroker, servers: Servers, unique: str, tmp_path: Path
) -> None:
    """The metric scorer, given only the SASL_SSL settings, reaches SERVING, consumes an
    undecodable record of its input topic and publishes it to the dead-letter twin."""
    prefix = f"m{unique}."
    service_env = broker.client_env("metric-scorer")
    with ServiceStack(
        tmp_path,
        servers.mongo_uri,
        f"sasl_{unique}",
        broker.bootstrap,
        prefix,
        extra_env=service_env,
        specs=[ServiceSpec("metric_scorer", "metric_scorer")],
    ) as stack:
        stack.start(timeout_s=60)
        settings = secured(broker, prefix)
        topic = topics.RESPONSE_RECORDED
        publisher = KafkaPublisher(settings, client_id="sasl-e2e")
        try:
            asyncio.run(
                publisher.publish(
                    [
                        Outgoing(
                            topic,
                            topic.message_type(),
                            key="k",
                            topic_name=topic.full_name(prefix),
                            raw_value=b"\xff\xfe not protobuf",
                        )
                    ]
                )
            )
        finally:
            publisher.close()
        dead_letter = topic.dead_letter_name(prefix)

        async def dead_lettered() -> bool:
            records = await asyncio.to_thread(read_topic, settings, dead_letter)
            return [r.value for r in records] == [b"\xff\xfe not protobuf"]

        asyncio.run(eventually(dead_lettered, 60, f"the record in {dead_letter}"))
        log = stack.log_path("metric_scorer").read_text()
    assert SERVICE_PASSWORD not in log
