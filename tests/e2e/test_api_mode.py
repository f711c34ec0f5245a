"""API mode: the dispatcher calls a (scripted, real-HTTP) partner endpoint under the contract."""

from __future__ import annotations

import base64
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from pymongo import AsyncMongoClient

from medbench.common.v1 import common_pb2
from medbench.submission.v1 import submission_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client.api import AdminClient, PartnerClient, channel
from medbench_client.bank_files import import_item, read_jsonl
from medbench_devstack.services import ServiceStack
from rotator.core.options import parse_options
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
from tests.e2e.fake_endpoint import FakeEndpoint, Reply, Script
from tests.e2e.harness import eventually, partner_client, watermarked_copy
from tests.reference_scoring import score_in_process

pytestmark = [pytest.mark.e2e]

BANK = Path(__file__).resolve().parents[2] / "services/rotator/src/rotator/sample_bank"
ROWS = list(read_jsonl(BANK / "items.jsonl"))
COMPLETED = submission_pb2.SUBMISSION_STATE_COMPLETED
BOARD_API = taskpool_pb2.BOARD_API


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    with running_stack(
        servers,
        tmp_path_factory,
        "api",
        {
            "MEDBENCH_RETRY_BASE_DELAY_S": "0.01",
            # Retry-After is honoured up to 4 x this: 1 s.
            "MEDBENCH_RETRY_MAX_DELAY_S": "0.25",
            "MEDBENCH_MAX_ATTEMPTS": "4",
        },
    ) as services:
        yield services


@pytest.fixture(scope="module")
async def pool(stack: ServiceStack) -> str:
    admin = AdminClient(channel(stack.address("rotator"), stack.admin_key))
    await admin.import_items([import_item(r) for r in ROWS])
    await admin.publish("api-pool", board=taskpool_pb2.BOARD_API)
    return "api-pool"


def smart(question: str) -> str:
    """A model that knows the sample bank: right on every item but DDx-advanced ones."""
    shown = parse_options(question)
    if shown is None:
        return "2"  # the preflight's tiny prompt
    for row in ROWS:
        canonical = parse_options(row["question"])
        if (
            canonical
            and canonical.prefix == shown.prefix
            and sorted(canonical.texts) == sorted(shown.texts)
        ):
            if row["dataset"] == "DDx-advanced":
                return "<Z>"
            texts = {canonical.texts[canonical.letters.index(r)] for r in row["reference"]}
            letters = sorted(shown.letters[i] for i, t in enumerate(shown.texts) if t in texts)
            return "<" + ", ".join(letters) + ">"
    return "<A>"  # an unknown question


def expected_overall() -> float:
    answers = {
        r["item_id"]: (
            "<Z>" if r["dataset"] == "DDx-advanced" else "<" + ", ".join(r["reference"]) + ">"
        )
        for r in ROWS
    }
    return score_in_process(ROWS, answers).overall


def endpoint(
    fake: FakeEndpoint, model: str = "test-model", key: str = "secret-key", cap: int = 8
) -> submission_pb2.Endpoint:
    return submission_pb2.Endpoint(
        base_url=fake.base_url, model=model, api_key=key, max_concurrency=cap
    )


async def run(
    stack: ServiceStack, tenant: str, fake: FakeEndpoint, **kw: object
) -> tuple[PartnerClient, str]:
    partner = partner_client(stack, tenant)
    created = await partner.create(
        f"api-{uuid.uuid4().hex[:6]}",
        "api-model",
        mode=common_pb2.SUBMISSION_MODE_API,
        endpoint=endpoint(fake, **kw),
    )  # type: ignore[arg-type]
    return partner, created.submission.submission_id


async def state_of(partner: PartnerClient, sid: str) -> submission_pb2.Submission:
    return await partner.get(sid)


async def test_api_mode_evaluation_with_throttling_and_errors_completes_exactly_once(
    stack: ServiceStack, pool: str
) -> None:
    def flaky(question: str, attempt: int) -> Reply | None:
        kind = zlib.crc32(question.encode()) % 8
        if attempt == 1 and kind == 0:
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}
        if attempt == 1 and kind == 1:
            return 503, {"error": {"message": "overloaded"}}, {}
        if attempt == 1 and kind == 2:
            return 200, b"{not json", {}
        return None

    with FakeEndpoint(Script(answer=smart, fault=flaky)) as fake:
        partner, sid = await run(stack, "hospital-api", fake)

        async def completed() -> bool:
            return (await state_of(partner, sid)).state == COMPLETED

        await eventually(completed, 90, "the API-mode submission to complete", interval_s=0.3)
        report = await partner.report(sid)
        sub = await partner.get(sid)
    assert report.scored_items == len(ROWS)
    assert report.overall == pytest.approx(expected_overall(), abs=1e-9)
    assert (sub.progress.answered_items, sub.progress.scored_items) == (len(ROWS), len(ROWS))
    # Every question answered exactly once, although about 3 in 8 first calls failed.
    # One successful call per item (+ the preflight's tiny prompt), canaries included: they
    # are pool items, shown altered.
    assert sum(fake.script.answered.values()) == len(ROWS) + 1
    assert sum(fake.script.calls.values()) > len(ROWS) * 1.2
    assert sub.endpoint.api_key == "" and sub.endpoint.model == "test-model"
    assert (sub.decoding.temperature, sub.decoding.max_tokens) == (0.7, 512)


async def test_a_call_backing_off_leaves_its_slot_to_other_items(
    stack: ServiceStack, pool: str
) -> None:
    """Declared cap 1: while the first item waits out its Retry-After of 1 s, the one slot
    serves the others; the cap is never exceeded and every item is answered once."""
    lock = threading.Lock()
    arrivals: list[tuple[float, str, int]] = []
    throttled: list[str] = []

    def slow_down_once(question: str, attempt: int) -> Reply | None:
        with lock:
            arrivals.append((time.monotonic(), question, attempt))
            if not throttled and "1+1" not in question:  # not the preflight's prompt
                throttled.append(question)
                return 429, {"error": {"message": "slow down"}}, {"Retry-After": "1"}
        return None

    with FakeEndpoint(Script(answer=smart, fault=slow_down_once, latency_s=0.01)) as fake:
        partner, sid = await run(stack, "hospital-backoff", fake, cap=1)

        async def completed() -> bool:
            return (await state_of(partner, sid)).state == COMPLETED

        await eventually(completed, 90, "the API-mode submission to complete", interval_s=0.3)
    first, retried = (t for t, q, a in arrivals if q == throttled[0])
    others = [q for t, q, _ in arrivals if first < t < retried]
    assert retried - first >= 1.0  # Retry-After honoured
    # Holding the slot through the wait would leave none to the others.
    assert len(others) >= 3 and throttled[0] not in others
    assert fake.script.max_inflight == 1
    assert fake.script.answered[throttled[0]] == 1
    assert sum(fake.script.answered.values()) == len(ROWS) + 1


async def test_a_run_that_completes_unread_shows_every_item_answered(
    stack: ServiceStack, pool: str, servers: Servers
) -> None:
    """Nobody reads the submission while it dispatches: its stored counters never followed the
    dispatcher, and completion itself must bring them up to date."""
    with FakeEndpoint(Script(answer=smart)) as fake:
        partner, sid = await run(stack, "hospital-unread", fake)
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri)
        try:
            store = client[stack.env("gateway")["MEDBENCH_MONGO__DATABASE"]].submissions

            async def completed() -> bool:
                doc = await store.find_one({"_id": sid}, {"state": 1})
                return doc is not None and doc["state"] == "COMPLETED"

            await eventually(completed, 90, "the unread submission to complete", interval_s=0.3)
        finally:
            await client.close()
        sub = await partner.get(sid)
    assert sub.state == COMPLETED
    assert (sub.progress.answered_items, sub.progress.scored_items) == (len(ROWS), len(ROWS))


async def test_persistent_server_errors_mark_items_infra_failed_not_wrong(
    stack: ServiceStack, pool: str
) -> None:
    ddx = {
        parse_options(r["question"]).prefix
        for r in ROWS  # type: ignore[union-attr]
        if r["dataset"] == "DDx-advanced"
    }

    def broken_for_ddx(question: str, attempt: int) -> Reply | None:
        shown = parse_options(question)
        if shown is not None and shown.prefix in ddx:
            return 502, {"error": {"message": "bad gateway"}}, {}
        return None

    with FakeEndpoint(Script(answer=smart, fault=broken_for_ddx)) as fake:
        partner, sid = await run(stack, "hospital-infra", fake)

        async def stalled() -> submission_pb2.Submission | None:
            sub = await state_of(partner, sid)
            return sub if sub.progress.infra_failed_items == 6 and sub.state_reason else None

        sub = await eventually(stalled, 90, "six infrastructure failures", interval_s=0.3)
        assert sub.state == submission_pb2.SUBMISSION_STATE_DISPATCHING
        assert "infrastructure" in sub.state_reason
        assert sub.progress.answered_items == len(ROWS) - 6
        answered_before = sum(fake.script.answered.values())

        # Another tenant cannot see it, let alone resume it.
        stranger = partner_client(stack, "hospital-other")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stranger.resume(sid)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

        # The endpoint recovers; the partner resumes: only the six failed items go again.
        fake.script.fault = lambda question, attempt: None
        resumed = await partner.resume(sid)
        assert resumed.resumed_items == 6
        assert resumed.submission.state_reason == ""

        async def completed() -> bool:
            return (await state_of(partner, sid)).state == COMPLETED

        await eventually(completed, 90, "the resumed submission to complete", interval_s=0.3)
        report = await partner.report(sid)
    assert sum(fake.script.answered.values()) == answered_before + 6
    assert report.scored_items == len(ROWS)
    assert report.overall == pytest.approx(expected_overall(), abs=1e-9)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await partner.resume(sid)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "COMPLETED" in (err.value.details() or "")


async def test_resuming_an_upload_mode_submission_is_refused(
    stack: ServiceStack, pool: str
) -> None:
    await AdminClient(channel(stack.address("rotator"), stack.admin_key)).publish("api-upload-pool")
    partner = partner_client(stack, "hospital-upload")
    created = await partner.create("upload-run", "upload-model")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await partner.resume(created.submission.submission_id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "upload the missing answers" in (err.value.details() or "")


async def test_preflight_refuses_a_wrong_model_or_key_before_any_run(
    stack: ServiceStack, pool: str
) -> None:
    with FakeEndpoint(Script(answer=smart)) as fake:
        for kw, phrase in (({"model": "nope"}, "not among"), ({"key": "wrong"}, "API key")):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await run(stack, "hospital-pre", fake, **kw)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert phrase in (err.value.details() or ""), err.value.details()
        assert sum(fake.script.calls.values()) == 0, "no prompt of the pool was sent"


async def test_an_endpoint_that_starts_refusing_fails_the_submission_with_its_reason(
    stack: ServiceStack, pool: str
) -> None:
    seen: set[str] = set()

    def revoked(question: str, attempt: int) -> Reply | None:
        seen.add(question)
        if len(seen) > 5:
            return 403, {"error": {"message": "key revoked"}}, {}
        return None

    with FakeEndpoint(Script(answer=smart, fault=revoked)) as fake:
        partner, sid = await run(stack, "hospital-revoked", fake, cap=1)

        async def failed() -> submission_pb2.Submission | None:
            sub = await state_of(partner, sid)
            return sub if sub.state == submission_pb2.SUBMISSION_STATE_FAILED else None

        sub = await eventually(failed, 60, "the submission to fail", interval_s=0.3)
    assert "key revoked" in sub.state_reason and "403" in sub.state_reason


async def test_api_prompts_cannot_be_downloaded_and_upload_mode_takes_no_endpoint(
    stack: ServiceStack, pool: str
) -> None:
    with FakeEndpoint(Script(answer=smart, latency_s=0.05)) as fake:
        partner, sid = await run(stack, "hospital-dl", fake)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await partner.prompts(sid)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await partner.create("u1", "m", endpoint=endpoint(fake))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await partner.create("u2", "m", mode=common_pb2.SUBMISSION_MODE_API)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad = endpoint(fake, cap=0)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await partner.create("u3", "m", mode=common_pb2.SUBMISSION_MODE_API, endpoint=bad)
        assert "max_concurrency" in (err.value.details() or "")


async def test_kill_9_of_the_dispatcher_mid_run_resumes_without_resending_answers(
    stack: ServiceStack, pool: str
) -> None:
    cap = 4
    with FakeEndpoint(Script(answer=smart, latency_s=0.15)) as fake:
        partner, sid = await run(stack, "hospital-resume", fake, cap=cap)

        async def some_answered() -> bool:
            return sum(fake.script.answered.values()) >= 20

        await eventually(some_answered, 60, "20 answers")
        stack.kill("dispatcher")
        before = sum(fake.script.answered.values())
        stack.restart("dispatcher", timeout_s=60)

        async def completed() -> bool:
            return (await state_of(partner, sid)).state == COMPLETED

        await eventually(completed, 90, "the resumed submission to complete", interval_s=0.3)
        report = await partner.report(sid)
    assert report.scored_items == len(ROWS)
    assert report.overall == pytest.approx(expected_overall(), abs=1e-9)
    # Recorded answers are not sent again; the items in flight at the kill (sent, or answered
    # but not yet recorded: at most twice the cap) at most once more.
    total = sum(fake.script.answered.values())
    assert len(ROWS) + 1 <= total <= len(ROWS) + 1 + 2 * cap, (before, total)


IMAGES = Path(__file__).resolve().parents[1] / "data/pneumoniamnist"
LABELS = {"normal": "正常", "pneumonia": "肺炎"}


async def test_multimodal_items_reach_the_endpoint_as_image_parts(stack: ServiceStack) -> None:
    rows = [line.split(",") for line in (IMAGES / "labels.csv").read_text().split()[1:]]
    images = {name: (IMAGES / name).read_bytes() for name, _ in rows}
    admin = AdminClient(channel(stack.address("rotator"), stack.admin_key))
    items = []
    for name, label in rows:
        item = import_item(
            {
                "item_id": f"mm-{name}",
                "dataset": "MedClass",
                "track": "multimodal",
                "question": "这张胸部X光片是正常还是肺炎？只回答“正常”或“肺炎”。",
                "image_paths": [name],
                "reference": [LABELS[label]],
            }
        )
        item.images.append(taskpool_pb2.ImageBlob(path=name, content=images[name]))
        items.append(item)
    await admin.import_items(items)
    await admin.publish("api-mm-pool", track=common_pb2.TRACK_MULTIMODAL, board=BOARD_API)
    label_of = {name: LABELS[label] for name, label in rows}
    seen: list[str] = []

    def original(url: str) -> str | None:
        """The bank image a sent image is this tenant's copy of."""
        sent = base64.b64decode(url.split(",", 1)[1])
        return next((n for n, c in images.items() if watermarked_copy(c, sent)), None)

    def looks(question: str) -> str:
        # A "vision model" that can only answer from the image it was sent.
        urls = fake.script.images.get(question, [])
        seen.extend(urls)
        name = original(urls[-1]) if urls else None
        return label_of[name] if name else ("不确定" if urls else "2")

    with FakeEndpoint(Script(answer=looks)) as fake:
        partner = partner_client(stack, "hospital-mm")
        created = await partner.create(
            "mm-run",
            "vision-model",
            track=common_pb2.TRACK_MULTIMODAL,
            mode=common_pb2.SUBMISSION_MODE_API,
            endpoint=endpoint(fake),
        )
        sid = created.submission.submission_id

        async def completed() -> bool:
            return (await state_of(partner, sid)).state == COMPLETED

        await eventually(completed, 60, "the multimodal API-mode submission", interval_s=0.3)
        report = await partner.report(sid)
    # Every bank image reached the endpoint as this tenant's own copy, never the bank's bytes.
    assert sorted({original(url) for url in seen}) == sorted(images)
    bank_urls = {"data:image/png;base64," + base64.b64encode(c).decode() for c in images.values()}
    assert not bank_urls & set(seen)
    assert report.scored_items == 4
    assert report.overall == pytest.approx(100.0)


async def test_agent_length_answers_are_carried_to_the_report_cut_at_the_answer_limit(
    stack: ServiceStack, pool: str, servers: Servers
) -> None:
    """Answers far past the official max_tokens (an agent's trace, a misbehaving endpoint):
    each is carried up to the platform's per-answer limit, the batch of them goes as events
    that fit, and the report is the one of the answers' first 32 KiB."""
    from medbench_messaging.sizing import MAX_ANSWER_BYTES

    def rambling(question: str) -> str:
        return smart(question) + "\n" + "推理过程" * 10_000  # 120 KB

    with FakeEndpoint(Script(answer=rambling)) as fake:
        partner, sid = await run(stack, "hospital-agent", fake)

        async def completed() -> bool:
            return (await state_of(partner, sid)).state == COMPLETED

        await eventually(completed, 120, "the agent-length run to complete")
        report = await partner.report(sid)
    assert report.overall == pytest.approx(expected_overall(), abs=1e-9)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri)
    try:
        records = client[stack.env("dispatcher")["MEDBENCH_MONGO__DATABASE"]].responses
        docs = await records.find({"submission_id": sid}, {"text": 1, "clipped": 1}).to_list()
    finally:
        await client.close()
    assert len(docs) == len(ROWS)
    assert all(d["clipped"] and len(d["text"].encode()) <= MAX_ANSWER_BYTES for d in docs)
    assert all(len(d["text"].encode()) > MAX_ANSWER_BYTES - 4 for d in docs)
