"""Local development and test stack: Kafka, a MongoDB-wire server and the MedBench services."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medbench_devstack.errors import DevstackError
    from medbench_devstack.kafka import KAFKA_VERSION, KafkaBroker
    from medbench_devstack.kafka_cluster import KafkaCluster
    from medbench_devstack.mongo import MongoWireServer
    from medbench_devstack.ports import free_port, free_ports
    from medbench_devstack.processes import ManagedProcess
    from medbench_devstack.services import SERVICES, ServiceSpec, ServiceStack

# Imported on first use: grpc and pymongo cost ~0.6 s, which every CLI call would pay.
_EXPORTS = {
    "DevstackError": "errors",
    "KAFKA_VERSION": "kafka",
    "KafkaBroker": "kafka",
    "KafkaCluster": "kafka_cluster",
    "MongoWireServer": "mongo",
    "free_port": "ports",
    "free_ports": "ports",
    "ManagedProcess": "processes",
    "SERVICES": "services",
    "ServiceSpec": "services",
    "ServiceStack": "services",
}

__all__ = [
    "KAFKA_VERSION",
    "SERVICES",
    "DevstackError",
    "KafkaBroker",
    "KafkaCluster",
    "ManagedProcess",
    "MongoWireServer",
    "ServiceSpec",
    "ServiceStack",
    "free_port",
    "free_ports",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medbench_devstack' has no attribute {name!r}")
    return getattr(importlib.import_module(f"medbench_devstack.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
