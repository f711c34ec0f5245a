"""Session fixtures: one real Kafka broker and one MongoDB-wire server for the whole run.

Set MEDBENCH_KAFKA__BOOTSTRAP_SERVERS / MEDBENCH_MONGO__URI to use running servers instead, or
MEDBENCH_TEST_KAFKA=cluster for a 3-node KRaft cluster (replication factor 3, min ISR 2) in place
of the single broker.
Tests isolate themselves by unique database names and topic prefixes, never by fresh servers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from medbench_devstack.errors import DevstackError
from medbench_devstack.kafka import KafkaBroker
from medbench_devstack.kafka_cluster import KafkaCluster
from medbench_devstack.mongo import MongoWireServer


@dataclass(frozen=True)
class Servers:
    """Addresses of the session's servers."""

    kafka_bootstrap: str
    mongo_uri: str
    work_dir: Path
    # MEDBENCH_KAFKA__* settings a service stack on this Kafka needs beyond the bootstrap
    # servers (a cluster's replication factor).
    kafka_env: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Starts Kafka and the Mongo-wire server once; fails loudly with the reason if it cannot."""
    work = tmp_path_factory.mktemp("servers")
    kafka: KafkaBroker | KafkaCluster | None = None
    mongo = None
    kafka_env: dict[str, str] = {}
    bootstrap = os.environ.get("MEDBENCH_KAFKA__BOOTSTRAP_SERVERS")
    uri = os.environ.get("MEDBENCH_MONGO__URI")
    kind = os.environ.get("MEDBENCH_TEST_KAFKA", "broker")
    if kind not in ("broker", "cluster"):
        pytest.exit(f"MEDBENCH_TEST_KAFKA must be broker or cluster, got {kind!r}", returncode=4)
    try:
        if not bootstrap and kind == "cluster":
            kafka = KafkaCluster(work / "kafka-cluster")
            kafka.start()
            bootstrap = kafka.bootstrap
            kafka_env = {
                k: v
                for k, v in kafka.client_env().items()
                if k != "MEDBENCH_KAFKA__BOOTSTRAP_SERVERS"
            }
        elif not bootstrap:
            kafka = KafkaBroker(work / "kafka")
            kafka.start()
            bootstrap = kafka.bootstrap
        if not uri:
            mongo = MongoWireServer(work / "mongo")
            mongo.start()
            uri = mongo.uri
    except DevstackError as exc:
        if kafka:
            kafka.stop()
        pytest.exit(f"cannot start the test servers: {exc}", returncode=3)
    try:
        yield Servers(bootstrap, uri, work, kafka_env)
    finally:
        if mongo:
            mongo.stop()
        if kafka:
            kafka.stop()


@pytest.fixture
def unique() -> str:
    """A short unique token for database names, topic prefixes and ids."""
    return uuid.uuid4().hex[:10]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """A failed test that used a running stack gets each service's last log lines in its
    report: a failure on a clean CI machine is then explainable without rerunning it."""
    from medbench_devstack.services import ServiceStack  # noqa: PLC0415 - only on this path

    report = yield
    if report.failed and call.when == "call":
        funcargs = getattr(item, "funcargs", {})
        for stack in {id(v): v for v in funcargs.values() if isinstance(v, ServiceStack)}.values():
            for name in stack.names:
                report.sections.append(
                    (f"log of {name} (last 60 lines)", stack.process(name).tail(60))
                )
    return report
