"""The interceptor: request bodies that are not valid protobuf are the caller's mistake, and a
flood of refused calls is audited within a budget per peer address."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from medbench.identity.v1 import access_pb2
from medbench.submission.v1 import (
    submission_pb2,
    submission_service_pb2,
    submission_service_pb2_grpc,
)
from medbench_runtime.auth import Authenticator, mint_key
from medbench_runtime.bearer import authorized_channel
from medbench_runtime.interceptors import RefusalBudget, RpcInterceptor, peer_host

KEY = mint_key()
TOKEN = KEY.secret
SERVICE = "/medbench.submission.v1.SubmissionService/"
# A string field (submission_id, 1) holding bytes that are not UTF-8, and a truncated field.
BAD_UTF8 = bytes([0x0A, 0x02, 0xC3, 0x28])
TRUNCATED = b"\x0a\x05ab"


class Keys:
    """One partner submitter's key."""

    async def find_key(self, key_id: str) -> Mapping[str, Any] | None:
        if key_id != KEY.key_id:
            return None
        return {
            "_id": key_id,
            "tenant_id": "t1",
            "role": access_pb2.ROLE_PARTNER_SUBMITTER,
            "secret_hash": KEY.secret_hash,
        }

    async def find_tenant(self, tenant_id: str) -> Mapping[str, Any] | None:
        return {"_id": tenant_id}


class Submissions(submission_service_pb2_grpc.SubmissionServiceServicer):
    def __init__(self) -> None:
        self.received: list[str] = []

    async def GetSubmission(
        self,
        request: submission_service_pb2.GetSubmissionRequest,
        context: grpc.aio.ServicerContext,
    ) -> submission_service_pb2.GetSubmissionResponse:
        self.received.append(request.submission_id)
        return submission_service_pb2.GetSubmissionResponse(
            submission=submission_pb2.Submission(submission_id=request.submission_id)
        )

    async def UploadAnswers(
        self,
        request_iterator: AsyncIterator[submission_service_pb2.UploadAnswersRequest],
        context: grpc.aio.ServicerContext,
    ) -> submission_service_pb2.UploadAnswersResponse:
        async for message in request_iterator:
            self.received.append(message.batch_id)
        return submission_service_pb2.UploadAnswersResponse(accepted_batches=len(self.received))


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Submissions]]:
    servicer = Submissions()
    server = grpc.aio.server(interceptors=[RpcInterceptor("t", Authenticator("s" * 40, Keys()))])
    submission_service_pb2_grpc.add_SubmissionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", servicer
    await server.stop(0)


async def test_a_malformed_unary_request_is_invalid_argument_and_reaches_no_handler(
    served: tuple[str, Submissions], caplog: pytest.LogCaptureFixture
) -> None:
    address, servicer = served
    caplog.set_level(logging.INFO)
    async with authorized_channel(address, TOKEN) as chan:
        raw = chan.unary_unary(SERVICE + "GetSubmission")
        for body, reason in [(BAD_UTF8, "bad UTF-8"), (TRUNCATED, "corrupt"), (b"\xff", "")]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await raw(body, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            details = err.value.details() or ""
            assert "not a valid protobuf message" in details and reason in details
            assert "GetSubmissionRequest" in details
        # A well-formed body still gets through.
        ok = submission_service_pb2.GetSubmissionRequest(submission_id="s1").SerializeToString()
        assert submission_service_pb2.GetSubmissionResponse.FromString(await raw(ok, timeout=10))
    assert servicer.received == ["s1"]
    assert not any(r.exc_info for r in caplog.records)


async def test_a_malformed_message_in_a_client_stream_is_invalid_argument(
    served: tuple[str, Submissions], caplog: pytest.LogCaptureFixture
) -> None:
    address, servicer = served
    caplog.set_level(logging.INFO)

    async def messages() -> AsyncIterator[bytes]:
        yield submission_service_pb2.UploadAnswersRequest(batch_id="b1").SerializeToString()
        yield BAD_UTF8

    async with authorized_channel(address, TOKEN) as chan:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await chan.stream_unary(SERVICE + "UploadAnswers")(messages(), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UploadAnswersRequest" in (err.value.details() or "")
    assert servicer.received == ["b1"]
    assert not any(r.exc_info for r in caplog.records)


async def test_an_unauthenticated_malformed_request_is_unauthenticated(
    served: tuple[str, Submissions],
) -> None:
    address, servicer = served
    async with grpc.aio.insecure_channel(address) as chan:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await chan.unary_unary(SERVICE + "GetSubmission")(BAD_UTF8, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert servicer.received == []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refusals_are_audited_up_to_a_burst_then_at_the_refill_rate_per_peer_address() -> None:
    clock = Clock()
    budget = RefusalBudget(burst=3, per_s=0.5, clock=clock)
    # Every connection of one address draws on one budget; another address has its own.
    assert [budget.audit(f"ipv4:10.0.0.7:{port}") for port in range(5)] == [True] * 3 + [False] * 2
    assert budget.audit("ipv6:[::1]:4000") and budget.audit("ipv4:10.0.0.8:1")
    clock.now += 1.9  # 0.95 tokens: not yet one
    assert not budget.audit("ipv4:10.0.0.7:9")
    clock.now += 0.1
    assert budget.audit("ipv4:10.0.0.7:9") and not budget.audit("ipv4:10.0.0.7:9")
    clock.now += 3600  # refilled to the burst, never beyond
    assert [budget.audit("ipv4:10.0.0.7:1") for _ in range(4)] == [True] * 3 + [False]


def test_the_budget_remembers_a_bounded_number_of_peers() -> None:
    clock = Clock()
    budget = RefusalBudget(burst=1, per_s=0.001, clock=clock, max_peers=10)
    assert budget.audit("ipv4:10.0.0.1:1") and not budget.audit("ipv4:10.0.0.1:2")
    for i in range(2, 12):
        budget.audit(f"ipv4:10.0.1.{i}:1")
    # Forgotten with the rest once the table was full: a fresh budget.
    assert budget.audit("ipv4:10.0.0.1:3")


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:127.0.0.1:5000", "ipv4:127.0.0.1"),
        ("ipv6:[::1]:5000", "ipv6:[::1]"),
        ("unix:/tmp/s.sock", "unix:/tmp/s.sock"),
        ("", ""),
    ],
)
def test_peer_host_drops_the_port(peer: str, host: str) -> None:
    assert peer_host(peer) == host


class Sink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def append(self, event: dict[str, Any]) -> None:
        self.events.append(event)


async def test_a_flood_of_refused_calls_is_refused_whole_but_audited_within_the_budget() -> None:
    sink = Sink()
    server = grpc.aio.server(
        interceptors=[
            RpcInterceptor("t", Authenticator("s" * 40, Keys()), sink, RefusalBudget(5, 0.001))
        ]
    )
    submission_service_pb2_grpc.add_SubmissionServiceServicer_to_server(Submissions(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    request = submission_service_pb2.GetSubmissionRequest(submission_id="s1")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            stub = submission_service_pb2_grpc.SubmissionServiceStub(chan)
            for i in range(20):
                bad = (("authorization", f"Bearer mbk_{i:016x}_{'x' * 43}"),)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.GetSubmission(request, metadata=bad)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # A valid key from the same address is served all the same.
            good = (("authorization", f"Bearer {TOKEN}"),)
            assert (await stub.GetSubmission(request, metadata=good)).submission.submission_id
    finally:
        await server.stop(0)
    assert [e["code"] for e in sink.events] == ["UNAUTHENTICATED"] * 5


async def test_health_answers_anyone_but_refuses_a_malformed_body(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    server = grpc.aio.server(interceptors=[RpcInterceptor("t", Authenticator("s" * 40, Keys()))])
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    await checks.set("", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            reply = await health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await chan.unary_unary("/grpc.health.v1.Health/Check")(BAD_UTF8, timeout=10)
    finally:
        await server.stop(0)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "HealthCheckRequest" in (err.value.details() or "")
    assert not any(r.exc_info for r in caplog.records)
