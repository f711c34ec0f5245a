"""`medbench usage` against an in-process fake IdentityService: every quota with what is used,
the caps per pool on each board's current pool, as text and as JSON."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from medbench.common.v1 import common_pb2
from medbench.identity.v1 import identity_pb2, identity_service_pb2_grpc
from medbench_client import partner_cli
from tests.libs.client.test_partner_cli_unit import KEY_A

USAGE = identity_pb2.Usage(
    tenant_id="hospital-a",
    quotas=identity_pb2.Quotas(
        submissions_per_day=50,
        concurrent_submissions=5,
        items_per_month=1_000_000,
        official_per_cycle=3,
        hidden_per_day=2,
        hidden_per_cycle=10,
    ),
    submissions_today=4,
    active_submissions=1,
    items_this_month=240,
    pools=[
        identity_pb2.PoolUsage(
            pool_id="llm-api-2026-12",
            track=common_pb2.TRACK_LLM,
            board="api",
            official_runs=2,
            hidden_runs_today=1,
            hidden_runs=1,
        ),
        identity_pb2.PoolUsage(
            pool_id="llm-upload-2026-12",
            track=common_pb2.TRACK_LLM,
            board="upload",
            hidden_runs_today=2,
            hidden_runs=7,
        ),
    ],
)


class FakeIdentity(identity_service_pb2_grpc.IdentityServiceServicer):
    async def GetUsage(self, request: Any, context: Any) -> identity_pb2.Usage:
        return USAGE


@pytest.fixture
async def gateway() -> AsyncIterator[str]:
    server = grpc.aio.server()
    identity_service_pb2_grpc.add_IdentityServiceServicer_to_server(FakeIdentity(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def usage(gateway: str, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    argv = ["--gateway", gateway, "--key", KEY_A, "usage", *extra]
    assert await partner_cli.run(partner_cli.build_parser().parse_args(argv)) == 0
    return capsys.readouterr().out


async def test_usage_shows_the_caps_per_pool_of_each_board(
    gateway: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = await usage(gateway, capsys)
    lines = {" ".join(line.split()) for line in text.splitlines()}
    assert "official runs, llm api pool llm-api-2026-12 2 3" in lines
    assert "hidden-pool runs today, llm api pool llm-api-2026-12 1 2" in lines
    assert "hidden-pool runs, llm upload pool llm-upload-2026-12 7 10" in lines
    # The upload board has no official runs.
    assert not any(line.startswith("official runs, llm upload") for line in lines)
    data = json.loads(await usage(gateway, capsys, "--json"))
    assert data["quotas"]["official_per_cycle"] == 3 and data["quotas"]["hidden_per_day"] == 2
    assert data["pools"][1] == {
        "pool_id": "llm-upload-2026-12",
        "track": "llm",
        "board": "upload",
        "official_runs": 0,
        "hidden_runs_today": 2,
        "hidden_runs": 7,
    }
