"""Peer channels balance round robin over a peer's replicas, leave a dead one at once and take
a restarted one back; servers end connections at their maximum age without failing a call."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from medbench_devstack.ports import free_ports
from medbench_runtime.grpc_clients import PEER_CHANNEL_OPTIONS, insecure_channel
from medbench_runtime.service import server_options
from medbench_runtime.settings import AuthSettings, ServiceSettings
from tests.e2e.harness import eventually

SETTINGS = ServiceSettings(auth=AuthSettings(service_token="t" * 40))


class Replica(health_pb2_grpc.HealthServicer):
    """A health service that counts the calls it answers (and the client connections they
    came on: a connection's client port) and checks they carry the service token."""

    def __init__(self, name: str, calls: Counter[str]) -> None:
        self.name = name
        self.calls = calls
        self.connections: set[str] = set()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        metadata = dict(context.invocation_metadata() or ())
        assert metadata.get("authorization") == f"Bearer {'t' * 40}"
        self.calls[self.name] += 1
        self.connections.add(context.peer())
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def serve(
    name: str, port: int, calls: Counter[str], settings: ServiceSettings
) -> tuple[grpc.aio.Server, Replica]:
    server = grpc.aio.server(options=server_options(settings))
    replica = Replica(name, calls)
    health_pb2_grpc.add_HealthServicer_to_server(replica, server)
    assert server.add_insecure_port(f"127.0.0.1:{port}") == port
    await server.start()
    return server, replica


def test_service_config_asks_for_round_robin_and_retries() -> None:
    options = dict(PEER_CHANNEL_OPTIONS)
    config = json.loads(options["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert options["grpc.enable_retries"] == 1
    assert options["grpc.max_reconnect_backoff_ms"] <= 5000


def test_server_options_set_a_maximum_connection_age_with_grace() -> None:
    defaults = dict(server_options(ServiceSettings()))
    assert defaults["grpc.max_connection_age_ms"] == 300_000
    # Calls in flight are never cut for age unless a grace is set.
    assert "grpc.max_connection_age_grace_ms" not in defaults
    graced = dict(server_options(ServiceSettings(grpc_max_connection_age_grace_s=60)))
    assert graced["grpc.max_connection_age_grace_ms"] == 60_000
    never = dict(server_options(ServiceSettings(grpc_max_connection_age_s=0)))
    assert "grpc.max_connection_age_ms" not in never
    assert "grpc.max_connection_age_grace_ms" not in never


async def test_calls_spread_over_replicas_leave_a_dead_one_and_return_to_it() -> None:
    calls: Counter[str] = Counter()
    port_a, port_b = free_ports(2)
    a, _ = await serve("a", port_a, calls, SETTINGS)
    b, _ = await serve("b", port_b, calls, SETTINGS)
    channel = insecure_channel(f"ipv4:127.0.0.1:{port_a},127.0.0.1:{port_b}", SETTINGS)
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest()
    try:
        # Both connections come up; from then on every other call goes to each replica.
        await eventually(
            lambda: _spread(stub, calls), 10, "calls on both replicas", describe=lambda: str(calls)
        )
        calls.clear()
        for _ in range(40):
            await stub.Check(request, timeout=5)
        assert calls["a"] >= 15 and calls["b"] >= 15, calls

        # One replica dies: no call fails, all go to the survivor.
        await b.stop(0)
        calls.clear()
        for _ in range(40):
            await stub.Check(request, timeout=5)
        assert calls == Counter({"a": 40}), calls

        # It comes back on its address: the channel reconnects (backoff at most 5 s) and
        # sends it calls again.
        b, _ = await serve("b", port_b, calls, SETTINGS)
        calls.clear()
        await eventually(
            lambda: _spread(stub, calls),
            15,
            "calls on the restarted replica",
            describe=lambda: str(calls),
        )
    finally:
        await channel.close()
        await a.stop(0)
        await b.stop(0)


async def _spread(stub: health_pb2_grpc.HealthStub, calls: Counter[str]) -> bool:
    await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    return calls["a"] > 0 and calls["b"] > 0


async def test_connections_ended_at_their_maximum_age_fail_no_call() -> None:
    calls: Counter[str] = Counter()
    (port,) = free_ports(1)
    aged = ServiceSettings(grpc_max_connection_age_s=0.3, grpc_max_connection_age_grace_s=5)
    server, replica = await serve("a", port, calls, aged)
    channel = insecure_channel(f"127.0.0.1:{port}", SETTINGS)
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        # Several connection lifetimes of calls, ten at a time: every one answered.
        loop = asyncio.get_running_loop()
        end = loop.time() + 2.0
        answered = 0
        while loop.time() < end:
            replies = await asyncio.gather(
                *(stub.Check(health_pb2.HealthCheckRequest(), timeout=5) for _ in range(10))
            )
            answered += len(replies)
        assert answered == calls["a"] > 50
        # The server ended connections (0.3 s +-10%) and the channel made new ones.
        assert len(replica.connections) >= 3, replica.connections
    finally:
        await channel.close()
        await server.stop(0)
