"""Local development and test stack: Kafka, a MongoDB-wire server and the MedBench services."""

from medbench_devstack.errors import DevstackError
from medbench_devstack.kafka import KAFKA_VERSION, KafkaBroker
from medbench_devstack.mongo import MongoWireServer
from medbench_devstack.ports import free_port, free_ports
from medbench_devstack.processes import ManagedProcess
from medbench_devstack.services import SERVICES, ServiceSpec, ServiceStack

__all__ = [
    "KAFKA_VERSION",
    "SERVICES",
    "DevstackError",
    "KafkaBroker",
    "ManagedProcess",
    "MongoWireServer",
    "ServiceSpec",
    "ServiceStack",
    "free_port",
    "free_ports",
]
