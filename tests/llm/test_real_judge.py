"""The real model as candidate and judge, end to end (make test-llm).

Gemma 3 270M behind llama-cpp-python's OpenAI-compatible server (the cached build in LLM_DIR)
answers a self-test API-mode run of MedSafety and the judge sample (MedHC, MedExplain, MedDiag,
MedTerm: the five LLM dimensions), and judges it through the real judge path: HTTP (through a
recording proxy), rubric prompt, structured decoding in llama-cpp-python's json_object_schema
style, parsing with the repair turn, the cache, lineage and cost. The small pretrained model's
verdicts are poor; what is asserted is the path: what the server received and answered, what
the judge scorer stored, and what the report and item results carry.

Then, on the same stack and server, the key-point cases (README "The judge": a paraphrase, a
negation, the key points as bare keywords, answering "高血压患者日常生活中应注意什么？" with its
five key points): an official upload-mode run of them is parked, not judged (no rubric is
calibrated), and a self-test API-mode run of the same answers (a scripted candidate) is judged
by the real model, key points decided in the verdict's call; what it decided is printed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from pymongo import MongoClient

from judge_scorer.core.verdict import key_point_recall
from medbench.common.v1 import common_pb2
from medbench.judge.v1 import judge_service_pb2, judge_service_pb2_grpc
from medbench.report.v1 import report_service_pb2, report_service_pb2_grpc
from medbench.submission.v1 import submission_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client.api import AdminClient, channel
from medbench_client.bank_files import import_item
from medbench_devstack import demo_llm
from medbench_devstack.demo import TENANT
from medbench_devstack.services import ServiceStack
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
from tests.e2e.fake_endpoint import FakeEndpoint, Script
from tests.e2e.fake_judge import fenced_answer, key_points
from tests.e2e.harness import Evaluation, eventually, partner_client
from tests.llm.proxy import RecordingProxy

pytestmark = [pytest.mark.llm, pytest.mark.e2e, pytest.mark.timeout(1800)]

DATASETS = ["MedSafety", "MedHC", "MedExplain", "MedDiag", "MedTerm"]
RUBRICS = {
    "MedHC": "generic.v1",
    "MedTerm": "generic.v1",
    "MedExplain": "popular_science.v1",
    "MedDiag": "clinical_reasoning.v1",
}
LLM_DIMENSIONS = {
    "knowledge_qa",
    "language_generation",
    "complex_reasoning",
    "language_understanding",
    "safety_ethics",
}
RUN_TIMEOUT_S = 1500.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    llm_dir = Path(os.environ.get("LLM_DIR") or demo_llm.LLM_DIR)
    if not (llm_dir / "venv" / "bin" / "python").exists():
        pytest.fail(f"no model server build in {llm_dir}: run `make test-llm` (it builds it)")
    work = tmp_path_factory.mktemp("llm-server")
    started = demo_llm.start_model_server(work, llm_dir, os.cpu_count() or 2)
    try:
        yield started
    finally:
        demo_llm.stop_model_server(work)


@pytest.fixture(scope="module")
def proxy(server: dict[str, Any]) -> Iterator[RecordingProxy]:
    with RecordingProxy(server["base_url"]) as recording:
        yield recording


@pytest.fixture(scope="module")
def stack(
    servers: Servers,
    tmp_path_factory: pytest.TempPathFactory,
    server: dict[str, Any],
    proxy: RecordingProxy,
) -> Iterator[ServiceStack]:
    # The judge reaches the model server through the proxy; the candidate calls it directly.
    env = demo_llm.judge_env(proxy.base_url, server["api_key"])
    # A CPU-only model on a busy 2-core machine can take over a minute for the preflight's
    # tiny prompt; the gateway waits up to 150 s for the dispatcher's answer.
    env["MEDBENCH_PREFLIGHT_TIMEOUT_S"] = "140"
    with running_stack(servers, tmp_path_factory, "llm", env) as services:
        yield services


async def item_results(stack: ServiceStack, sid: str, tenant: str = TENANT) -> dict[str, Any]:
    """The submission's item results from the aggregator (maintainer key), by item id."""
    stub = report_service_pb2_grpc.ReportServiceStub(
        channel(stack.address("aggregator"), stack.admin_key)
    )
    request = report_service_pb2.StreamItemResultsRequest(submission_id=sid, tenant_id=tenant)
    return {i.item_id: i async for batch in stub.StreamItemResults(request) for i in batch.items}


async def test_real_model_as_candidate_and_judge(
    stack: ServiceStack, server: dict[str, Any], proxy: RecordingProxy
) -> None:
    rows = demo_llm.demo_rows(DATASETS)
    judged = {r["item_id"]: r for r in rows if r["dataset"] in RUBRICS}
    assert len(judged) == 8 and len(rows) == 23
    await demo_llm.publish_pool(stack, rows)
    run = await demo_llm.run_self_test(
        stack, server, concurrency=1, max_tokens=demo_llm.MAX_TOKENS, timeout_s=RUN_TIMEOUT_S
    )
    sid, report = run.submission_id, run.report

    # The submission completed with every item answered, and its report has the five LLM
    # dimensions, the judge-scored datasets among its datasets.
    assert (run.expected, run.answered, run.infra_failed) == (23, 23, 0)
    assert {d.dimension for d in report.dimensions} == LLM_DIMENSIONS
    assert {d.dataset for d in report.datasets} == set(DATASETS)
    assert list(report.lineage.judge_models) == [demo_llm.MODEL_ALIAS]
    assert set(report.lineage.rubric_versions) == set(RUBRICS.values())
    assert not report.lineage.calibration_ids, "a self-test run is judged uncalibrated"

    # What the judge scorer stored: one judgment per judge-scored item, with lineage, and the
    # cost as the real server reported it (usage).
    database = stack.env("judge_scorer")["MEDBENCH_MONGO__DATABASE"]
    mongo_uri = stack.env("judge_scorer")["MEDBENCH_MONGO__URI"]
    docs = {d["item_id"]: d for d in demo_llm.judgments(mongo_uri, sid, database)}
    assert set(docs) == set(judged)
    results = await item_results(stack, sid)
    for item_id, doc in docs.items():
        dataset = judged[item_id]["dataset"]
        # judgments name the rubric "generic v1"; lineage and item parts "generic.v1".
        assert doc["rubric"] == RUBRICS[dataset].replace(".v", " v"), doc
        assert len(doc["prompt_hash"]) == 64, doc
        [verdict] = doc["verdicts"]
        assert verdict["model"] == demo_llm.MODEL_ALIAS and not verdict["cached"]
        assert verdict["calls"] in (1, 2), verdict  # the repair turn at most
        assert verdict["prompt_tokens"] > 0 and verdict["completion_tokens"] > 0, verdict
        assert verdict["gpu_seconds"] > 0, verdict
        if verdict["score"] is None:
            assert doc["score"] is None and verdict["error"], doc  # a failure with its reason
        [part] = [p for p in results[item_id].parts if p.component == "judge"]
        assert list(part.judge_models) == [demo_llm.MODEL_ALIAS]
        assert (part.rubric_version, part.prompt_hash) == (RUBRICS[dataset], doc["prompt_hash"])
        assert len(part.rubric_hash) == 64 and not part.calibration_id
        assert part.unscored == (doc["score"] is None), (part, doc)
    verdicts = [d["verdicts"][0] for d in docs.values()]
    read = [v for v in verdicts if v["score"] is not None]

    # What the server received and answered: every judge call asked for the verdict under the
    # schema in llama-cpp-python's style at temperature 0, and the tokens stored are the
    # server's usage, call for call.
    calls = proxy.recorder.completions()
    assert len(calls) == sum(v["calls"] for v in verdicts), [e.status for e in calls]
    for exchange in calls:
        assert exchange.status == 200, exchange
        body = exchange.body or {}
        assert body["model"] == demo_llm.MODEL_ALIAS and body["temperature"] == 0
        form = body["response_format"]
        assert form["type"] == "json_object", form
        assert form["schema"]["properties"]["score"]["enum"] == list(range(11)), form
        assert body["max_tokens"] > 512  # raised to the structured verdict's budget
    usage = [(e.reply or {}).get("usage", {}) for e in calls]
    assert sum(u.get("prompt_tokens", 0) for u in usage) == sum(
        v["prompt_tokens"] for v in verdicts
    )
    assert sum(u.get("completion_tokens", 0) for u in usage) == sum(
        v["completion_tokens"] for v in verdicts
    )

    # The maintainer's view of the cost agrees (JudgeService.GetJudgingCost).
    judge = judge_service_pb2_grpc.JudgeServiceStub(
        channel(stack.address("judge_scorer"), stack.admin_key)
    )
    cost = await judge.GetJudgingCost(judge_service_pb2.GetJudgingCostRequest(submission_id=sid))
    [total] = [r for r in cost.rows if not r.dataset and not r.judge_model]
    assert (total.items, total.calls, total.cache_hits) == (8, len(calls), 0)
    assert total.prompt_tokens == sum(v["prompt_tokens"] for v in verdicts)
    assert total.structured_verdicts == sum(bool(v["structured"]) for v in read)
    assert total.failures == len(verdicts) - len(read)

    sub = await demo_llm_partner_state(stack, sid)
    assert sub == submission_pb2.SUBMISSION_STATE_COMPLETED
    print(
        f"\ntest-llm: {len(read)}/{len(verdicts)} verdicts read "
        f"({sum(bool(v['structured']) for v in read)} structured), {len(calls)} judge calls, "
        f"{total.prompt_tokens}+{total.completion_tokens} tokens, {total.gpu_seconds:.0f} s of "
        f"judge calls; run {run.done_s:.0f} s (answered after {run.answered_s:.0f} s)\n"
        + demo_llm.judge_figures(mongo_uri, sid, database)
    )


async def demo_llm_partner_state(stack: ServiceStack, sid: str) -> int:
    """The submission's state as its owner sees it."""
    from medbench_client.api import PartnerClient
    from medbench_devstack.demo import demo_tenant_key

    partner = PartnerClient(channel(stack.address("gateway"), await demo_tenant_key(stack, TENANT)))
    return int((await partner.get(sid)).state)


# -- The key-point cases with the real model ---------------------------------------------------

KP_DATASET = "MedMC"
"""A knowledge_qa dataset scored key_point_recall+judge under the generic rubric, outside the run
above's pool (a pool is cut by dataset)."""
KP_POINTS = ["低盐饮食", "规律服药", "监测血压", "控制体重", "戒烟限酒"]
# Case markers without digits (a canary may alter numbers in a prompt) -> the answer.
KP_CASES = {
    "paraphrase": ("甲", "少吃盐，按医嘱每天吃降压药，家里自己量血压，减肥，不抽烟少喝酒。"),
    "negation": ("乙", "不需要低盐饮食，不必规律服药，不用监测血压，也无须控制体重或戒烟限酒。"),
    "keywords": ("丁", "低盐饮食 规律服药 监测血压 控制体重 戒烟限酒"),
}
KP_ROWS = [
    {
        "item_id": f"kp-{case}",
        "dataset": KP_DATASET,
        "answer_format": "free_text",
        "question": f"病例{marker}：高血压患者日常生活中应注意什么？",
        "reference": ["低盐饮食，规律服药，监测血压，控制体重，戒烟限酒。"],
        "specialties": ["IM.CARD"],
        "key_points": KP_POINTS,
    }
    for case, (marker, _) in KP_CASES.items()
]
KP_ANSWERS = {f"kp-{case}": answer for case, (_, answer) in KP_CASES.items()}
KP_TIMEOUT_S = 900.0


@pytest.fixture(scope="module")
async def kp_bank(stack: ServiceStack) -> None:
    """The key-point items in the bank, and a pool of them on each board."""
    admin = AdminClient(channel(stack.address("rotator"), stack.admin_key))
    done = await admin.import_items([import_item(r) for r in KP_ROWS])
    assert not done.rejected, done
    for board, name in ((taskpool_pb2.BOARD_UPLOAD, "upload"), (taskpool_pb2.BOARD_API, "api")):
        pool = await admin.publish(f"llm-kp-{name}", board=board, datasets=[KP_DATASET])
        assert pool.item_count == len(KP_ROWS), pool


def judge_metric(stack: ServiceStack, name: str) -> float | None:
    """An unlabelled metric of the judge scorer (None when absent)."""
    for line in stack.scrape("judge_scorer").splitlines():
        if line.startswith(f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return None


def stored_judgments(stack: ServiceStack, sid: str) -> list[dict[str, Any]]:
    """The judge scorer's judgments of a submission."""
    env = stack.env("judge_scorer")
    return demo_llm.judgments(env["MEDBENCH_MONGO__URI"], sid, env["MEDBENCH_MONGO__DATABASE"])


def parked_requests(stack: ServiceStack, sid: str) -> list[dict[str, Any]]:
    """The judge scorer's parked judge requests of a submission."""
    env = stack.env("judge_scorer")
    client: MongoClient[dict[str, Any]] = MongoClient(
        env["MEDBENCH_MONGO__URI"], serverSelectionTimeoutMS=5000
    )
    try:
        return list(client[env["MEDBENCH_MONGO__DATABASE"]]["parked"].find({"submission_id": sid}))
    finally:
        client.close()


async def test_an_official_run_is_parked_not_judged(
    stack: ServiceStack, proxy: RecordingProxy, kp_bank: None
) -> None:
    """No rubric is calibrated, so the judge requests of an official (upload-mode) run wait,
    parked where the README says (medbench_judge_parked_requests, the `parked` collection),
    nothing is asked of the judge, and there is no report as if judged."""
    calls_before = len(proxy.recorder.completions())
    parked_before = judge_metric(stack, "medbench_judge_parked_requests") or 0.0
    evaluation = Evaluation(stack, "hospital-official", "official-kp-run", KP_ANSWERS)
    sid = await evaluation.create()
    for batch in evaluation.batches(await evaluation.prompts()):
        await evaluation.upload_batch(batch)

    async def parked() -> list[dict[str, Any]]:
        return parked_requests(stack, sid)

    [doc] = await eventually(parked, 120, "the official run's judge request to be parked")
    assert "no calibration" in doc["reason"] and "generic" in doc["reason"], doc["reason"]

    async def gauge() -> bool:
        return judge_metric(stack, "medbench_judge_parked_requests") == parked_before + 1

    await eventually(gauge, 30, "medbench_judge_parked_requests to count it")
    # Nothing judged: no call reached the model server, no judgment was stored.
    assert len(proxy.recorder.completions()) == calls_before
    assert not stored_judgments(stack, sid)
    # The judge decides these items' key points, so no part of them is scored: the run waits
    # (SCORING), and its owner is told there is no report yet.
    sub = await evaluation.partner().get(sid)
    assert sub.state == submission_pb2.SUBMISSION_STATE_SCORING, sub
    assert (sub.progress.answered_items, sub.progress.scored_items) == (len(KP_ROWS), 0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await evaluation.partner().report(sid)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "its report exists once it is COMPLETED" in (err.value.details() or "")
    print(f"\ntest-llm: official run {sid} parked: {doc['reason']}")


def kp_answer(question: str) -> str:
    """The scripted candidate: each case's answer (anything else, e.g. the preflight: 好的)."""
    found = (answer for marker, answer in KP_CASES.values() if f"病例{marker}" in question)
    return next(found, "好的")


async def test_key_points_are_decided_by_the_real_model(
    stack: ServiceStack, proxy: RecordingProxy, kp_bank: None
) -> None:
    """The key-point cases judged by the real model through the real path: one call per answer
    with the five points numbered in the prompt and key_points_covered in the verdict's schema,
    a structured verdict read, the covered points recorded with the judgment's lineage, and the
    item's one part (the judge's) carrying the judged recall. Its decisions are printed, not
    asserted: the 270M model's are poor."""
    assert stack.env("metric_scorer")["MEDBENCH_KEY_POINT_RECALL"] == "judge"
    calls_before = len(proxy.recorder.completions())
    tenant = "hospital-kp"
    started = time.monotonic()
    with FakeEndpoint(Script(answer=kp_answer)) as model:
        partner = partner_client(stack, tenant)
        created = await partner.create(
            "kp-self-test",
            "kp-model",
            mode=common_pb2.SUBMISSION_MODE_API,
            endpoint=submission_pb2.Endpoint(
                base_url=model.base_url,
                model="test-model",
                api_key="secret-key",
                max_concurrency=len(KP_ROWS),
                self_test=True,
            ),
        )
        sid = created.submission.submission_id

        async def completed() -> bool:
            sub = await partner.get(sid)
            assert sub.state != submission_pb2.SUBMISSION_STATE_FAILED, sub.state_reason
            return sub.state == submission_pb2.SUBMISSION_STATE_COMPLETED

        await eventually(completed, KP_TIMEOUT_S, "the key-point run", interval_s=1.0)
    seconds = time.monotonic() - started

    docs = {d["item_id"]: d for d in stored_judgments(stack, sid)}
    assert set(docs) == set(KP_ANSWERS)
    results = await item_results(stack, sid, tenant)
    lines = []
    for item_id, doc in docs.items():
        [verdict] = doc["verdicts"]
        # A structured verdict, read, with no failure; the points it names are the item's.
        assert verdict["model"] == demo_llm.MODEL_ALIAS and verdict["error"] in ("", None), doc
        assert verdict["score"] is not None and verdict["structured"], verdict
        assert verdict["calls"] == 1 and verdict["prompt_tokens"] > 0, verdict
        covered = verdict["key_points_covered"]
        assert all(isinstance(n, int) and 1 <= n <= len(KP_POINTS) for n in covered), covered
        recall = key_point_recall(covered, KP_POINTS)  # (a point named twice counts once)
        assert doc["key_point_recall"] == pytest.approx(recall), doc
        assert doc["rubric"] == "generic v1" and len(doc["prompt_hash"]) == 64, doc
        # The item's one part is the judge's (the metric scorer left the key points to it),
        # the judged recall a component beside the score, with the judgment's lineage.
        [part] = results[item_id].parts
        assert (part.component, part.metric) == ("judge", "key_point_recall+judge"), part
        assert [c.name for c in part.components] == ["judge", "key_point_recall"], part
        assert part.components[1].score == pytest.approx(recall), part
        assert list(part.judge_models) == [demo_llm.MODEL_ALIAS] and not part.unscored
        assert (part.rubric_version, part.prompt_hash) == ("generic.v1", doc["prompt_hash"])
        lines.append(
            f"  {item_id:14} score {verdict['score']:g}, key points covered "
            f"{sorted(set(covered))} -> recall {recall:.1f}; {verdict['prompt_tokens']}+"
            f"{verdict['completion_tokens']} tokens, {verdict['gpu_seconds']:.1f} s; rationale "
            f"{str(verdict['rationale'])[:60]!r}"
        )

    # What the server was asked: one call per answer, the five points numbered in the prompt
    # and key_points_covered (numbers 1-5, at most 5) in the verdict's schema.
    calls = proxy.recorder.completions()[calls_before:]
    assert len(calls) == len(KP_ROWS), [e.status for e in calls]
    answered = set()
    for exchange in calls:
        assert exchange.status == 200, exchange
        body = exchange.body or {}
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        assert key_points(user) == KP_POINTS, user
        answered.add(fenced_answer(user))
        points = body["response_format"]["schema"]["properties"]["key_points_covered"]
        assert points["maxItems"] == len(KP_POINTS), points
        assert points["items"]["enum"] == list(range(1, len(KP_POINTS) + 1)), points
    assert answered == set(KP_ANSWERS.values())
    print(
        f"\ntest-llm: key points decided by {demo_llm.MODEL_ALIAS} ({seconds:.0f} s for the run; "
        "a rule-following judge covers 5, 0 and 0 points):\n" + "\n".join(lines)
    )
