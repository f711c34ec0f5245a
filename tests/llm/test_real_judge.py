"""The real model as candidate and judge, end to end (make test-llm).

Gemma 3 270M behind llama-cpp-python's OpenAI-compatible server (the cached build in LLM_DIR)
answers a self-test API-mode run of MedSafety and the judge sample (MedHC, MedExplain, MedDiag,
MedTerm: the five LLM dimensions), and judges it through the real judge path: HTTP (through a
recording proxy), rubric prompt, structured decoding in llama-cpp-python's json_object_schema
style, parsing with the repair turn, the cache, lineage and cost. The small pretrained model's
verdicts are poor; what is asserted is the path: what the server received and answered, what
the judge scorer stored, and what the report and item results carry.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from medbench.judge.v1 import judge_service_pb2, judge_service_pb2_grpc
from medbench.report.v1 import report_service_pb2, report_service_pb2_grpc
from medbench.submission.v1 import submission_pb2
from medbench_client.api import channel
from medbench_devstack import demo_llm
from medbench_devstack.demo import TENANT
from medbench_devstack.services import ServiceStack
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
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
    with running_stack(servers, tmp_path_factory, "llm", env) as services:
        yield services


async def item_results(stack: ServiceStack, sid: str) -> dict[str, Any]:
    """The submission's item results from the aggregator (maintainer key), by item id."""
    stub = report_service_pb2_grpc.ReportServiceStub(
        channel(stack.address("aggregator"), stack.admin_key)
    )
    request = report_service_pb2.StreamItemResultsRequest(submission_id=sid, tenant_id=TENANT)
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
