"""Canaries through the stack: pool items a download shows altered for its tenant, in place.

A tenant's downloads of a pool are identical (canaries included); another tenant's show other
canaries; both are traced by TraceLeak. Every item is scored and counted alike: a run answering
everything right scores 100 with answered == scored == shown == GetUsage items == report items.
A right answer to a canary's original is wrong on the canary and recorded for maintainers
(ListLeakSignals, a Prometheus counter), never shown to the partner.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import grpc
import pytest
from pymongo import AsyncMongoClient

from medbench.identity.v1 import identity_service_pb2
from medbench.identity.v1 import identity_service_pb2_grpc as identity_grpc
from medbench.submission.v1 import submission_pb2
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_client.api import channel
from medbench_client.bank_files import read_jsonl
from medbench_devstack.answers import translate
from medbench_devstack.services import ServiceStack
from rotator.core.canaries import fingerprint
from tests.conftest import Servers
from tests.e2e.harness import Evaluation, admin_channel, eventually, load_pool, partner_key

pytestmark = [pytest.mark.e2e]

BANK = Path(__file__).resolve().parents[2] / "services/rotator/src/rotator/sample_bank"
# Structured records (SMDoc, field accuracy) whose key quotes the patient's age: detail canaries.
RECORDS = [
    {
        "item_id": f"SMDoc-{n}",
        "dataset": "SMDoc",
        "answer_format": "json_fields",
        "question": (
            "请从以下门诊病历中提取指定的实体信息，并以json格式输出。\n"
            f"门诊病历：\n患者，{'男女'[n % 2]}，{age}岁。主诉：头痛{n}天。\n"
            "需要提取的实体字段：\n- 年龄\n- 主诉"
        ),
        "reference": [json.dumps({"年龄": str(age), "主诉": f"头痛{n}天"}, ensure_ascii=False)],
        "specialties": ["IM.CARD"],
    }
    for n, age in ((1, 34), (2, 47), (3, 58), (4, 62))
]
ROWS = list(read_jsonl(BANK / "items.jsonl")) + RECORDS
BY_ID = {r["item_id"]: r for r in ROWS}
AGE = re.compile(r"(?<![0-9.])([0-9]{2})岁")


@pytest.fixture(scope="module")
async def pool(stack: ServiceStack) -> str:
    await load_pool(stack, ROWS, "hidden-pool")
    return "hidden-pool"


async def sealed_variant(servers: Servers, stack: ServiceStack, sid: str) -> dict[str, Any]:
    db_name = stack.env("rotator")["MEDBENCH_MONGO__DATABASE"]
    client: AsyncMongoClient = AsyncMongoClient(servers.mongo_uri)
    try:
        found = await client[f"{db_name}_sealed"].variants.find_one({"_id": sid})
    finally:
        await client.close()
    assert found is not None, sid
    return dict(found)


def right_answer(item_id: str, shown: str) -> str:
    """What a model that reads the shown question answers, right."""
    row = BY_ID[item_id]
    if row["answer_format"].startswith("choice"):
        return translate(f"<{', '.join(row['reference'])}>", row["question"], shown)
    moved = dict(zip(AGE.findall(row["question"]), AGE.findall(shown), strict=True))
    reference = json.loads(row["reference"][0])
    return json.dumps({k: moved.get(v, v) for k, v in reference.items()}, ensure_ascii=False)


async def run(stack: ServiceStack, tenant: str, answer: Any) -> tuple[Evaluation, list[Any]]:
    """Creates, downloads and answers every shown item with answer(prompt), in batches."""
    evaluation = Evaluation(stack, tenant, f"{tenant}-run", {})
    await evaluation.create()
    prompts = await evaluation.prompts()
    pairs = [(p.item_id, answer(p)) for p in prompts]
    for k in range(0, len(pairs), 25):
        last = k + 25 >= len(pairs)
        await evaluation.upload_batch((f"b{k}", pairs[k : k + 25], last))
    return evaluation, prompts


async def trace(stack: ServiceStack, lines: list[tuple[str, str]]) -> list[Any]:
    stub = taskpool_service_pb2_grpc.TaskPoolServiceStub(admin_channel(stack, "rotator"))

    async def messages() -> Any:
        yield taskpool_service_pb2.TraceLeakRequest(
            items=[taskpool_pb2.LeakedItem(item_id=i, question=q) for i, q in lines]
        )

    response = await stub.TraceLeak(messages())
    return list(response.suspects)


async def signals(stack: ServiceStack, tenant: str) -> list[Any]:
    stub = taskpool_service_pb2_grpc.TaskPoolServiceStub(admin_channel(stack, "rotator"))
    response = await stub.ListLeakSignals(
        taskpool_service_pb2.ListLeakSignalsRequest(tenant_id=tenant)
    )
    return list(response.signals)


async def test_a_tenants_downloads_agree_and_other_tenants_canaries_differ_and_are_traced(
    servers: Servers, stack: ServiceStack, pool: str
) -> None:
    first, again, other = (
        Evaluation(stack, tenant, request, {})
        for tenant, request in (("hospital-x", "x-1"), ("hospital-x", "x-2"), ("hospital-y", "y-1"))
    )
    for e in (first, again, other):
        await e.create()
    x1, x2, y = (await first.prompts(), await again.prompts(), await other.prompts())
    # A re-download shows the same, canaries included: nothing tells them apart.
    assert [(p.item_id, p.question) for p in x1] == [(p.item_id, p.question) for p in x2]
    # Another tenant is shown the same items, in the same places, under the same ids.
    assert [p.item_id for p in x1] == [p.item_id for p in y] == [r["item_id"] for r in sorted(
        ROWS, key=lambda r: (r["dataset"], r["item_id"])
    )]  # fmt: skip
    vx, vy = [await sealed_variant(servers, stack, e.submission_id) for e in (first, other)]
    cx, cy = ({c["item_id"]: c for c in v["canaries"]} for v in (vx, vy))
    assert cx and cy and set(cx) != set(cy)
    # Every dataset has a canary (every format here can be altered): choice and records.
    assert {c["dataset"] for c in cx.values()} == {r["dataset"] for r in ROWS}
    assert {c["kind"] for c in cx.values()} == {"order", "detail"}
    # The shown canaries are the stored ones; each stands where its pool item stands.
    shown_x = {p.item_id: p.question for p in x1}
    assert all(fingerprint(shown_x[i]) == c["fingerprint"] for i, c in cx.items())
    assert all(shown_x[i] != BY_ID[i]["question"] for i in cx)

    # Leaked canaries, ids stripped, name the tenant that was shown them (both its downloads).
    shown_y = {p.item_id: p.question for p in y}
    only_x = [("", shown_x[i]) for i in cx if shown_x[i] != shown_y[i]]
    only_y = [("", shown_y[i]) for i in cy if shown_y[i] != shown_x[i]]
    suspects = await trace(stack, only_x)
    assert {s.tenant_id for s in suspects if s.canary_hits} == {"hospital-x"}
    assert {s.submission_id for s in suspects[:2]} == {first.submission_id, again.submission_id}
    assert suspects[0].canary_hits == len(only_x) and suspects[0].chance < 1e-4
    suspects = await trace(stack, only_y)
    assert [(s.tenant_id, s.submission_id, s.canary_hits) for s in suspects] == [
        ("hospital-y", other.submission_id, len(only_y))
    ]
    # A record's canary (an altered age) is traced with its id too.
    record = next(i for i, c in cy.items() if c["kind"] == "detail")
    suspects = await trace(stack, [(record, shown_y[record])])
    assert suspects[0].tenant_id == "hospital-y" and suspects[0].canary_hits == 1


async def test_every_counter_agrees_when_every_shown_item_is_answered_right(
    stack: ServiceStack, pool: str
) -> None:
    evaluation, prompts = await run(
        stack, "hospital-c", lambda p: right_answer(p.item_id, p.question)
    )
    report = await evaluation.wait_completed()
    partner = evaluation.partner()
    sub = await partner.get(evaluation.submission_id)
    shown = len(prompts)
    assert shown == len(ROWS)
    progress = sub.progress
    assert progress.expected_items == progress.answered_items == progress.scored_items == shown
    listing = (await partner.list_submissions()).submissions
    [listed] = [s for s in listing if s.submission_id == sub.submission_id]
    assert listed.progress == progress
    usage = await identity_grpc.IdentityServiceStub(
        channel(stack.address("gateway"), partner_key(stack, "hospital-c"))
    ).GetUsage(identity_service_pb2.GetUsageRequest())
    assert usage.items_this_month == shown
    assert sum(d.items for d in report.datasets) == report.scored_items == shown
    # Canaries are real questions with real keys: answered right, they score like the rest.
    assert report.overall == pytest.approx(100.0)
    assert all(d.score == pytest.approx(100.0) for d in report.datasets)
    assert await signals(stack, "hospital-c") == []


async def test_a_right_answer_to_a_canarys_original_is_recorded_for_maintainers_only(
    servers: Servers, stack: ServiceStack, pool: str
) -> None:
    evaluation = Evaluation(stack, "hospital-o", "o-run", {})
    await evaluation.create()
    prompts = await evaluation.prompts()
    variant = await sealed_variant(servers, stack, evaluation.submission_id)
    canaries = {c["item_id"]: c for c in variant["canaries"]}
    order = next(i for i, c in canaries.items() if c["kind"] == "order")
    detail = next(i for i, c in canaries.items() if c["kind"] == "detail")
    # The original's answers: its letters in the tenant's plain order, its record as the bank
    # has it (with the age this download never showed). Everything else answered right.
    originals = {
        order: f"<{canaries[order]['originals'][0]}>",
        detail: BY_ID[detail]["reference"][0],
    }
    pairs = [(p.item_id, originals.get(p.item_id) or right_answer(p.item_id, p.question))
             for p in prompts]  # fmt: skip
    await evaluation.upload_batch(("all", pairs, True))
    report = await evaluation.wait_completed()
    assert report.overall < 100.0 and report.scored_items == len(ROWS)

    found = await eventually(lambda: signals(stack, "hospital-o"), 30, "leak signals")
    assert sorted((s.item_id, s.kind, s.matched) for s in found) == sorted(
        [
            (order, "order", f"letters {canaries[order]['originals'][0]}"),
            (detail, "detail", f"value {canaries[detail]['originals'][0]}"),
        ]
    )
    assert {(s.submission_id, s.pool_id) for s in found} == {(evaluation.submission_id, pool)}
    metrics = stack.scrape("metric_scorer")
    assert 'medbench_canary_original_answers_total{dataset="SMDoc",tenant="hospital-o"} 1.0' in (
        metrics
    )
    # The partner sees a score, nothing of the signal: no field, no word of it anywhere.
    partner = evaluation.partner()
    seen = [await partner.get(evaluation.submission_id), report]
    seen += (await partner.list_submissions()).submissions
    text = " ".join(str(m) for m in seen).lower()
    assert "canar" not in text and "leak" not in text
    # And the maintainers' listing is theirs alone.
    stub = taskpool_service_pb2_grpc.TaskPoolServiceStub(
        channel(stack.address("rotator"), partner_key(stack, "hospital-o"))
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ListLeakSignals(taskpool_service_pb2.ListLeakSignalsRequest())
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert sub_state(await partner.get(evaluation.submission_id)) == "COMPLETED"


def sub_state(sub: submission_pb2.Submission) -> str:
    return submission_pb2.SubmissionState.Name(sub.state).removeprefix("SUBMISSION_STATE_")
