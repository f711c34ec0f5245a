"""What endpoints answer cannot hurt the platform or leak through it: replies are bounded
(headers, body; cut as they stream), slow ones time out, only failure classes come back to the
caller (never a reply body), and the URL's path reaches the wire percent-encoded.

Unit level: the HTTP client and OpenAIEndpoint against a real listener, in process. End to end:
a stack with the production default policy plus one allow-listed address (127.0.0.2/32, standing
for an on-premise partner), where CreateSubmission's preflight meets each kind of reply, and
the dispatcher's resident memory is read from /proc around a 300 MB reply.
"""

from __future__ import annotations

import json
import time
import tracemalloc
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc
import pytest
from pymongo import AsyncMongoClient

from medbench.common.v1 import common_pb2
from medbench.submission.v1 import submission_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client.api import AdminClient, PartnerClient
from medbench_client.bank_files import import_item, read_jsonl
from medbench_devstack.services import ServiceStack
from medbench_runtime.egress import BadEndpointUrl
from medbench_runtime.http_client import HttpClient, HttpError, ReplyTooLarge
from medbench_runtime.openai_endpoint import (
    NOT_A_COMPLETION,
    NOT_A_MODEL_LIST,
    OpenAIEndpoint,
)
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
from tests.e2e.harness import admin_channel, eventually, partner_client
from tests.security.test_egress import Listener, Reply, bind_in_range, ok_json

BANK = Path(__file__).resolve().parents[2] / "services/rotator/src/rotator/sample_bank"
MiB = 1024 * 1024
BODY_LIMIT = 8 * MiB  # the default reply_max_body_bytes
HUGE = 300 * MiB
MARKER = b"<!DOCTYPE HTML><title>SECRET-7f3a internal page</title>"
RSS_BOUND = 48 * MiB
"""Most the dispatcher's resident memory may grow (peak) while 300 MB replies are cut at 8 MiB
(before the limits one such reply took it from 85 MB to 481 MB)."""


def streamed(
    status: str,
    total: int,
    *,
    chunked: bool = False,
    length: int | None = None,
    piece: int = MiB,
) -> Reply:
    """A reply of total body bytes (the marker repeated), sent a piece at a time."""

    def reply(request: bytes) -> Iterable[bytes]:
        head = f"HTTP/1.1 {status}\r\nContent-Type: text/html\r\nConnection: close\r\n"
        if chunked:
            head += "Transfer-Encoding: chunked\r\n"
        if length is not None:
            head += f"Content-Length: {length}\r\n"
        yield (head + "\r\n").encode()
        block = (MARKER * (piece // len(MARKER) + 1))[:piece]
        sent = 0
        while sent < total:
            n = min(piece, total - sent)
            yield (f"{n:x}\r\n".encode() + block[:n] + b"\r\n") if chunked else block[:n]
            sent += n
        if chunked:
            yield b"0\r\n\r\n"

    return reply


def trickle(prefix: bytes = b"HTTP/1.1 200 OK\r\n", every_s: float = 0.2) -> Reply:
    """A reply that never ends: a byte at a time (a slow-loris endpoint)."""

    def reply(request: bytes) -> Iterable[bytes]:
        yield prefix
        for _ in range(int(120 / every_s)):
            time.sleep(every_s)
            yield b"X-Slow: 1\r\n"[:1]

    return reply


def models_ok(request: bytes) -> Iterable[bytes]:
    return ok_json({"object": "list", "data": [{"id": "m"}]})


def completion(text: str = "2") -> list[bytes]:
    return ok_json({"choices": [{"message": {"content": text}, "finish_reason": "stop"}]})


def route(models: Reply = models_ok, chat: Reply | None = None) -> Reply:
    """An OpenAI-like endpoint: GET .../models to models, POST .../chat/completions to chat."""

    def reply(request: bytes) -> Iterable[bytes]:
        if request.startswith(b"GET "):
            return models(request)
        return (chat or (lambda r: completion()))(request)

    return reply


# -- unit: the client's limits --------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[Listener]:
    (made,) = bind_in_range(["127.0.0.1"], 1024, 65535)
    yield made
    made.close()


async def test_a_declared_length_over_the_limit_is_refused_before_reading(
    listener: Listener,
) -> None:
    listener.reply = streamed("500 Internal Server Error", HUGE, length=HUGE)
    client = HttpClient()
    with pytest.raises(ReplyTooLarge, match=f"reply body over {BODY_LIMIT} bytes"):
        await client.request("GET", f"http://127.0.0.1:{listener.port}/v1/models")
    await client.aclose()


@pytest.mark.parametrize("chunked", [False, True], ids=["to-end", "chunked"])
async def test_a_300_mb_body_is_cut_at_the_limit_and_never_held(
    listener: Listener, chunked: bool
) -> None:
    listener.reply = streamed("500 Internal Server Error", HUGE, chunked=chunked)
    client = HttpClient()
    tracemalloc.start()
    try:
        with pytest.raises(ReplyTooLarge, match=f"reply body over {BODY_LIMIT} bytes: cut"):
            await client.request("GET", f"http://127.0.0.1:{listener.port}/v1/models")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    await client.aclose()
    # The body buffer grows to the limit (a bytearray's slack included), never to the reply.
    assert peak < 3 * BODY_LIMIT, peak
    assert listener.sent < 64 * MiB  # the connection was closed: the rest was never read


@pytest.mark.parametrize("size", [1000, 1001])
async def test_the_body_limit_is_configurable_and_exact(listener: Listener, size: int) -> None:
    listener.reply = lambda request: [
        f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode(),
        b"x" * size,
    ]
    client = HttpClient(max_body_bytes=1000)
    url = f"http://127.0.0.1:{listener.port}/v1/models"
    if size <= 1000:
        assert (await client.request("GET", url)).body == b"x" * size
    else:
        with pytest.raises(ReplyTooLarge, match="reply body over 1000 bytes"):
            await client.request("GET", url)
    await client.aclose()


@pytest.mark.parametrize("shape", ["one header", "many headers", "chunk line"])
async def test_headers_over_the_limit_are_cut(listener: Listener, shape: str) -> None:
    def reply(request: bytes) -> Iterable[bytes]:
        if shape == "chunk line":
            yield b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            yield b"1" + b"0" * (128 * 1024)
            return
        yield b"HTTP/1.1 200 OK\r\n"
        if shape == "one header":
            yield b"X-Big: " + b"a" * (128 * 1024) + b"\r\n"
        else:
            for i in range(20_000):
                yield f"X-{i}: 1\r\n".encode()
        yield b"\r\n"

    listener.reply = reply
    client = HttpClient()
    with pytest.raises(ReplyTooLarge, match="over 65536 bytes: cut"):
        await client.request("GET", f"http://127.0.0.1:{listener.port}/v1/models")
    await client.aclose()


async def test_a_reply_that_trickles_forever_times_out(listener: Listener) -> None:
    listener.reply = trickle()
    client = HttpClient()
    started = time.monotonic()
    with pytest.raises(HttpError, match="^timeout$"):
        await client.request("GET", f"http://127.0.0.1:{listener.port}/v1/models", timeout_s=1.5)
    assert time.monotonic() - started < 5
    await client.aclose()


# -- unit: what comes back to the caller ----------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (streamed("501 Not Implemented", 2000, length=2000), "HTTP 501"),
        (streamed("405 Method Not Allowed", 300), "HTTP 405"),
        (streamed("200 OK", 5000, length=5000), NOT_A_COMPLETION),
        (lambda r: ok_json({"choices": []}), NOT_A_COMPLETION),
        (
            lambda r: ok_json({"error": {"message": "x" * 5000}}, "500 Oops"),
            "HTTP 500: " + "x" * 200,
        ),
        (
            lambda r: ok_json({"error": {"message": "bad\r\nX-Injected: 1\x00key"}}, "400 Bad"),
            "HTTP 400: bad X-Injected: 1 key",
        ),
        (lambda r: [b"\x00\x00\x01\x0f binary\r\n\r\n"], "malformed HTTP reply"),
        (lambda r: [], "the connection closed before a complete reply"),
    ],
    ids=[
        "html-501",
        "text-405",
        "html-200",
        "empty-choices",
        "long-error",
        "control-chars",
        "binary",
        "closed",
    ],  # fmt: skip
)
async def test_failures_name_their_class_and_never_echo_a_body(
    listener: Listener, reply: Reply, expected: str
) -> None:
    listener.reply = reply
    endpoint = OpenAIEndpoint(HttpClient(), timeout_s=5)
    result = await endpoint.chat(f"http://127.0.0.1:{listener.port}/v1", "k", {"model": "m"})
    assert result.error == expected
    assert result.status in (None, 400, 405, 500, 501)
    assert b"SECRET" not in result.error.encode()


async def test_a_model_list_that_is_not_one_is_named_as_such(listener: Listener) -> None:
    listener.reply = streamed("200 OK", 3000, length=3000)
    endpoint = OpenAIEndpoint(HttpClient(), timeout_s=5)
    listed = await endpoint.models(f"http://127.0.0.1:{listener.port}/v1", "k")
    assert (listed.status, listed.models, listed.error) == (200, None, NOT_A_MODEL_LIST)
    listener.reply = models_ok
    listed = await endpoint.models(f"http://127.0.0.1:{listener.port}/v1", "k")
    assert (listed.status, listed.models) == (200, ["m"])


async def test_the_request_line_and_headers_carry_nothing_raw(listener: Listener) -> None:
    listener.reply = models_ok
    client = HttpClient()
    base = f"http://127.0.0.1:{listener.port}"
    await client.request("GET", base + '/a b/"模型"/models')
    assert listener.heads[-1].split(b"\r\n")[0] == (
        b"GET /a%20b/%22%E6%A8%A1%E5%9E%8B%22/models HTTP/1.1"
    )
    with pytest.raises(BadEndpointUrl, match="control character"):
        await client.request("GET", base + "/a b HTTP/1.0\x0bX: y/models")
    with pytest.raises(HttpError, match="cannot be sent"):
        await client.request("GET", base + "/models", headers={"Authorization": "k\r\nX: y"})
    assert listener.connections == 1
    await client.aclose()


# -- end to end -----------------------------------------------------------------------------

ENV = {
    # Production defaults (public addresses, ports 80, 443, 8000-8999) plus one allow-listed
    # address: an on-premise partner's, here a loopback alias nothing of the stack uses.
    "MEDBENCH_EGRESS__ALLOW_CIDRS": "127.0.0.2/32",
    "MEDBENCH_REQUEST_TIMEOUT_S": "2",
    "MEDBENCH_PREFLIGHT_TIMEOUT_S": "5",
    "MEDBENCH_RETRY_BASE_DELAY_S": "0.01",
    "MEDBENCH_RETRY_MAX_DELAY_S": "0.05",
    "MEDBENCH_MAX_ATTEMPTS": "2",
}
ROWS = list(read_jsonl(BANK / "items.jsonl"))[:4]


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    with running_stack(servers, tmp_path_factory, "replies", ENV, loopback_endpoints=False) as s:
        yield s


@pytest.fixture(scope="module")
async def pool(stack: ServiceStack) -> str:
    admin = AdminClient(admin_channel(stack, "rotator"))
    await admin.import_items([import_item(r) for r in ROWS])
    await admin.publish("replies-api-pool", board=taskpool_pb2.BOARD_API)
    return "replies-api-pool"


@pytest.fixture
def partner_endpoint() -> Iterator[Listener]:
    """The partner's endpoint: a listener on the allow-listed address, on a default port."""
    (made,) = bind_in_range(["127.0.0.2"], reply=route())
    yield made
    made.close()


def endpoint_of(listener: Listener, path: str = "/v1") -> submission_pb2.Endpoint:
    return submission_pb2.Endpoint(
        base_url=f"http://127.0.0.2:{listener.port}{path}",
        model="m",
        api_key="k",
        max_concurrency=2,
    )


async def refused(
    partner: PartnerClient,
    endpoint: submission_pb2.Endpoint,
    track: int = common_pb2.TRACK_LLM,
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await partner.create(
            f"rep-{uuid.uuid4().hex[:8]}",
            "m",
            track=track,
            mode=common_pb2.SUBMISSION_MODE_API,
            endpoint=endpoint,
        )
    return err.value


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def reset_peak(pid: int) -> None:
    """Resets a process's VmHWM to its current RSS (Linux clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@pytest.mark.e2e
async def test_300_mb_replies_are_cut_and_the_dispatchers_memory_stays_bounded(
    stack: ServiceStack, pool: str, partner_endpoint: Listener, capsys: pytest.CaptureFixture[str]
) -> None:
    pid = stack.process("dispatcher").pid
    assert pid is not None
    partner = partner_client(stack, "hospital-huge")
    # A warm-up preflight (refused key), so that the code paths' own memory counts before.
    partner_endpoint.reply = route(models=lambda r: ok_json({"error": {}}, "401 No"))
    await refused(partner, endpoint_of(partner_endpoint))
    reset_peak(pid)
    before = memory(pid)
    cases = {
        # The pen test's reply: HTTP 500, 300 MB, no length, at GET /models.
        "500, streamed to the end": (
            route(models=streamed("500 Internal Server Error", HUGE)),
            "GET /models failed",
        ),
        "500, declared length": (
            route(models=streamed("500 Internal Server Error", HUGE, length=HUGE)),
            "GET /models failed",
        ),
        "200 chunked completion": (
            route(chat=streamed("200 OK", HUGE, chunked=True)),
            "tiny prompt failed",
        ),
    }
    for name, (reply, where) in cases.items():
        partner_endpoint.reply = reply
        sent_before = partner_endpoint.sent
        error = await refused(partner, endpoint_of(partner_endpoint))
        details = error.details() or ""
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, (name, details)
        assert where in details and f"reply body over {BODY_LIMIT} bytes" in details, details
        assert "SECRET" not in details and "DOCTYPE" not in details
        assert partner_endpoint.sent - sent_before < 100 * MiB, name  # cut, not read
    after = memory(pid)
    with capsys.disabled():
        print(
            f"\ndispatcher memory around three 300 MB replies: RSS {before['VmRSS'] / MiB:.1f} "
            f"-> {after['VmRSS'] / MiB:.1f} MiB, peak {after['VmHWM'] / MiB:.1f} MiB "
            f"(+{(after['VmHWM'] - before['VmRSS']) / MiB:.1f} MiB; bound +{RSS_BOUND // MiB})"
        )
    assert after["VmHWM"] - before["VmRSS"] <= RSS_BOUND


@pytest.mark.e2e
async def test_slow_replies_time_out_with_their_class(
    stack: ServiceStack, pool: str, partner_endpoint: Listener
) -> None:
    partner = partner_client(stack, "hospital-slow")
    partner_endpoint.reply = route(models=trickle())
    started = time.monotonic()
    error = await refused(partner, endpoint_of(partner_endpoint))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (error.details() or "").endswith("GET /models failed: timeout"), error.details()
    assert time.monotonic() - started < 10  # the request timeout is 2 s
    # Every tiny prompt trickles: the preflight as a whole ends at its own deadline (5 s).
    partner_endpoint.reply = route(chat=trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"))
    started = time.monotonic()
    error = await refused(partner, endpoint_of(partner_endpoint))
    assert "the preflight did not finish within 5 s (timeout)" in (error.details() or "")
    assert time.monotonic() - started < 12


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (route(models=streamed("501 Unsupported method", 400), chat=streamed("501 X", 400)),
         "tiny prompt failed: HTTP 501"),
        (route(models=streamed("405 Method Not Allowed", 90), chat=streamed("405 No", 90)),
         "tiny prompt failed: HTTP 405"),
        (route(models=streamed("200 OK", 800, length=800)), "GET /models: " + NOT_A_MODEL_LIST),
        (route(chat=streamed("200 OK", 800)), "tiny prompt failed: " + NOT_A_COMPLETION),
        (route(models=lambda r: []),
         "GET /models failed: the connection closed before a complete reply"),
        (route(models=lambda r: [b"\x00\x00\x00\x12\x00\x00" + MARKER + b"\r\n\r\n"]),
         "GET /models failed: malformed HTTP reply"),
    ],
    ids=["website-501", "metrics-405", "html-models", "html-completion", "reset", "binary"],
)  # fmt: skip
async def test_replies_of_what_is_not_an_endpoint_are_never_echoed(
    stack: ServiceStack, pool: str, partner_endpoint: Listener, reply: Reply, reason: str
) -> None:
    partner_endpoint.reply = reply
    error = await refused(partner_client(stack, "hospital-echo"), endpoint_of(partner_endpoint))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == f"endpoint preflight failed: {reason}"


@pytest.mark.e2e
async def test_the_path_reaches_the_wire_percent_encoded_and_control_characters_nowhere(
    stack: ServiceStack, pool: str, partner_endpoint: Listener
) -> None:
    partner = partner_client(stack, "hospital-path")
    partner_endpoint.reply = route(models=lambda r: ok_json({"error": {}}, "401 No"))
    error = await refused(partner, endpoint_of(partner_endpoint, '/a b/"模型"'))
    assert "refused the API key (HTTP 401)" in (error.details() or "")
    assert partner_endpoint.heads[0].split(b"\r\n")[0] == (
        b"GET /a%20b/%22%E6%A8%A1%E5%9E%8B%22/models HTTP/1.1"
    )
    for path in ("/a b HTTP/1.0\x0bX: y", "/a\x00b", "/a\x7fb", "/v1?x=", "/v1#f"):
        error = await refused(partner, endpoint_of(partner_endpoint, path))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, path
    assert partner_endpoint.connections == 1


@pytest.mark.e2e
async def test_no_call_is_made_when_no_pool_is_published(
    stack: ServiceStack, pool: str, partner_endpoint: Listener
) -> None:
    error = await refused(
        partner_client(stack, "hospital-nopool"),
        endpoint_of(partner_endpoint),
        track=common_pb2.TRACK_MULTIMODAL,  # nothing is published on its API board
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no pool is published" in (error.details() or "")
    assert partner_endpoint.connections == 0


@pytest.mark.e2e
async def test_oversized_replies_in_a_run_are_infrastructure_failures_with_a_clear_reason(
    stack: ServiceStack, servers: Servers, pool: str, partner_endpoint: Listener
) -> None:
    def chat(request: bytes) -> Iterable[bytes]:
        if "1+1" in json.loads(request.split(b"\r\n\r\n", 1)[1])["messages"][-1]["content"]:
            return completion()  # the preflight's tiny prompt
        return streamed("200 OK", 9 * MiB, length=9 * MiB)(request)

    partner_endpoint.reply = route(chat=chat)
    partner = partner_client(stack, "hospital-big-answers")
    created = await partner.create(
        "big-answers", "m", mode=common_pb2.SUBMISSION_MODE_API, endpoint=endpoint_of(
            partner_endpoint
        )
    )  # fmt: skip
    sid = created.submission.submission_id

    async def stalled() -> submission_pb2.Submission | None:
        sub = await partner.get(sid)
        return sub if sub.progress.infra_failed_items == len(ROWS) and sub.state_reason else None

    sub = await eventually(stalled, 60, "every item to fail for infrastructure reasons", 0.3)
    assert "infrastructure" in sub.state_reason and sub.progress.answered_items == 0
    client: AsyncMongoClient = AsyncMongoClient(servers.mongo_uri)
    try:
        database = stack.env("dispatcher")["MEDBENCH_MONGO__DATABASE"]
        errors = {
            doc["error"] async for doc in client[database].responses.find({"submission_id": sid})
        }
    finally:
        await client.close()
    assert errors == {f"reply body over {BODY_LIMIT} bytes (Content-Length {9 * MiB}): cut"}, errors
