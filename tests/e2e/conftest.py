"""A running stack of the six services per test module, on the session's Kafka and Mongo."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from medbench_devstack.services import ServiceStack
from tests.conftest import Servers


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    token = uuid.uuid4().hex[:8]
    work = tmp_path_factory.mktemp(f"stack-{token}")
    services = ServiceStack(
        work, servers.mongo_uri, f"e2e_{token}", servers.kafka_bootstrap, f"e2e{token}."
    )
    services.start(timeout_s=90)
    try:
        yield services
    finally:
        services.stop()
