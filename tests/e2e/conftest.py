"""A running stack of the six services per test module, on the session's Kafka and Mongo."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from medbench_devstack.services import ServiceStack
from medbench_review.server import App, ReviewServer
from tests.conftest import Servers
from tests.e2e.browser import Browser


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


# The review app's browser tests (tests/e2e/test_review_*.py): the app in this process, in
# front of the module's stack, and a fresh headless Chromium per test.
@pytest.fixture(scope="module")
def app_url(stack: ServiceStack) -> Iterator[str]:
    server = ReviewServer(App(stack.address("judge_scorer"))).start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path / "profile")
    try:
        yield b
    finally:
        b.close()
