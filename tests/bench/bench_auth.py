"""Benchmark: what authentication, authorisation and the interceptor cost per call.

One grpc.aio server in this process, unary calls over loopback, 16 in flight: the same trivial
servicer behind (a) the interceptor without an authenticator, (b) with the service token,
(c) with a partner API key (verified once, then cached), and (d) with a key on every call
verified against the store (cache lifetime 0, the store an in-memory dict). Prints calls/s and
the ratio to (a)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from medbench.identity.v1 import access_pb2
from medbench.report.v1 import report_service_pb2, report_service_pb2_grpc
from medbench_runtime.auth import Authenticator, authorize, mint_key
from medbench_runtime.bearer import authorized_channel
from medbench_runtime.interceptors import RpcInterceptor
from tests.bench.results import record

SERVICE_TOKEN = "b" * 40
CALLS = 4000
IN_FLIGHT = 16
ROUNDS = 3
METHOD = "/medbench.report.v1.ReportService/GetProgress"


class Progress(report_service_pb2_grpc.ReportServiceServicer):
    async def GetProgress(self, request: Any, context: Any) -> Any:
        return report_service_pb2.GetProgressResponse(scored_items=1)


class Store:
    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Any]] = {}

    async def find_key(self, key_id: str) -> Mapping[str, Any] | None:
        return self.keys.get(key_id)

    async def find_tenant(self, tenant_id: str) -> Mapping[str, Any] | None:
        return {"_id": tenant_id, "disabled": False}


async def measure(auth: Authenticator | None, token: str | None) -> float:
    server = grpc.aio.server(interceptors=[RpcInterceptor("bench", auth)])
    report_service_pb2_grpc.add_ReportServiceServicer_to_server(Progress(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    chan = authorized_channel(f"127.0.0.1:{port}", token)
    stub = report_service_pb2_grpc.ReportServiceStub(chan)
    request = report_service_pb2.GetProgressRequest(submission_id="s")
    for _ in range(200):  # warm up
        await stub.GetProgress(request)
    started = time.perf_counter()
    queue = iter(range(CALLS))

    async def worker() -> None:
        for _ in queue:
            await stub.GetProgress(request)

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    elapsed = time.perf_counter() - started
    await chan.close()
    await server.stop(None)
    return CALLS / elapsed


async def main() -> None:
    store = Store()
    key = mint_key()
    store.keys[key.key_id] = {
        "_id": key.key_id,
        "tenant_id": "bench",
        "role": access_pb2.ROLE_MAINTAINER,
        "secret_hash": key.secret_hash,
        "revoked_at": None,
        "expires_at": datetime.now(UTC) + timedelta(days=1),
    }
    cases = [
        ("no authenticator", None, None),
        # The client's bearer interceptor alone (grpc.aio runs Python interceptors per call).
        ("no authenticator, key sent", None, key.secret),
        ("service token", Authenticator(SERVICE_TOKEN, None), SERVICE_TOKEN),
        ("API key, cached", Authenticator(SERVICE_TOKEN, store, cache_ttl_s=60), key.secret),
        ("API key, verified each call", Authenticator(SERVICE_TOKEN, store, 0.0), key.secret),
    ]
    # Interleaved rounds, best of each: the machine's noise is larger than the differences.
    best: dict[str, float] = {}
    for _ in range(ROUNDS):
        for name, auth, token in cases:
            best[name] = max(best.get(name, 0.0), await measure(auth, token))
    base = best["no authenticator"]
    print(f"auth: {CALLS} unary calls, {IN_FLIGHT} in flight, one process, best of {ROUNDS}")
    for name, _, _ in cases:
        rate = best[name]
        overhead = (1 / rate - 1 / base) * 1e6
        print(
            f"  {name:28s} {rate:8.0f} calls/s  ratio {rate / base:4.2f}  {overhead:+6.1f} us/call"
        )
        record("auth", f"unary calls, {name}", rate, "calls/s")
    # The authenticator and policy check alone (no gRPC), per call.
    for name, auth, token in cases[2:]:
        assert auth is not None and token is not None
        metadata = (("authorization", f"Bearer {token}"),)
        n = 20_000
        started = time.perf_counter()
        for _ in range(n):
            authorize(METHOD, await auth.authenticate(metadata, "ipv4:127.0.0.1:1"))
        alone = (time.perf_counter() - started) / n * 1e6
        print(f"  {name:28s} authenticate + authorize alone: {alone:5.1f} us")
        record("auth", f"authenticate + authorise, {name}", alone, "us", 50, False)


if __name__ == "__main__":
    asyncio.run(main())
