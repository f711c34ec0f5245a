"""A running stack of the six services per test module, on the session's Kafka and Mongo."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from medbench_devstack.services import ServiceStack
from tests.conftest import Servers


@contextmanager
def running_stack(
    servers: Servers,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    extra_env: dict[str, str] | None = None,
    loopback_endpoints: bool = True,
) -> Iterator[ServiceStack]:
    """The six services in their own database and topic prefix; stopped on exit.
    loopback_endpoints=False: the production egress policy (no endpoint on loopback)."""
    token = uuid.uuid4().hex[:8]
    services = ServiceStack(
        tmp_path_factory.mktemp(f"{name}-{token}"),
        servers.mongo_uri,
        f"{name}_{token}",
        servers.kafka_bootstrap,
        f"{name}{token}.",
        extra_env={**servers.kafka_env, **(extra_env or {})},
        loopback_endpoints=loopback_endpoints,
    )
    services.start(timeout_s=90)
    try:
        yield services
    finally:
        services.stop()


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    with running_stack(servers, tmp_path_factory, "stack") as services:
        yield services
