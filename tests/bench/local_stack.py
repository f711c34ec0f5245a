"""A fresh local stack for one benchmark run: Kafka, the Mongo-wire server, some services."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from medbench_devstack.kafka import KafkaBroker
from medbench_devstack.mongo import MongoWireServer
from medbench_devstack.services import SERVICES, ServiceSpec, ServiceStack


@dataclass(frozen=True)
class BenchStack:
    """What a benchmark talks to."""

    services: ServiceStack
    mongo_uri: str
    kafka: KafkaBroker
    mongo: MongoWireServer

    def pids(self) -> dict[str, int]:
        """Process ids by name: Kafka, the Mongo-wire server and every service."""
        found = {"kafka": self.kafka.pid, "mongo": self.mongo.pid}
        for spec in self.services.specs:
            found[spec.name] = self.services.process(spec.name).pid
        return {name: pid for name, pid in found.items() if pid is not None}


@contextmanager
def bench_stack(
    name: str,
    specs: Sequence[ServiceSpec] = SERVICES,
    extra_env: dict[str, str] | None = None,
) -> Iterator[BenchStack]:
    """Starts everything in a temporary folder and stops it all on exit."""
    work = Path(tempfile.mkdtemp(prefix=f"medbench-bench-{name}-"))
    kafka, mongo = KafkaBroker(work / "kafka"), MongoWireServer(work / "mongo")
    kafka.start()
    try:
        mongo.start()
        token = uuid.uuid4().hex[:6]
        stack = ServiceStack(
            work / "services",
            mongo.uri,
            f"{name}_{token}",
            kafka.bootstrap,
            f"{name}{token}.",
            specs=specs,
            extra_env=extra_env,
        )
        try:
            stack.start(timeout_s=120)
            yield BenchStack(stack, mongo.uri, kafka, mongo)
        finally:
            stack.stop()
    finally:
        mongo.stop()
        kafka.stop()
