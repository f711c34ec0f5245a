"""The registry changing while the platform runs, through the real stack and the maintainer CLI:
a dataset added at run time takes imports at once, pools record the registry version they were
built from, a submission on an older pool is scored under that pool's version after the dataset
is revised, and a second rotator process on the same database sees every version at once
(concurrent changes of one version: one wins, the other is ABORTED)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from statistics import mean
from typing import Any

import grpc
import pytest
from pymongo import AsyncMongoClient

from medbench.common.v1 import common_pb2
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_client.api import channel
from medbench_devstack.services import ServiceSpec, ServiceStack
from metric_scorer.core.structured import normalise_text
from metric_scorer.core.text_similarity import bleu, rouge_l
from tests.conftest import Servers
from tests.e2e.harness import Evaluation, maintainer_cli

pytestmark = [pytest.mark.e2e]

NEW = "MedFollowUp"
ITEMS = 16
REFERENCES = {
    f"{NEW}-{i}": f"术后第{i}天复查血常规，伤口换药，观察体温变化。" for i in range(ITEMS)
}
# Half right: ROUGE-L and BLEU score it differently, so the report shows which one was used.
ANSWER = "术后复查血常规，每日观察体温。"


def stub(address: str, key: str) -> taskpool_service_pb2_grpc.TaskPoolServiceStub:
    return taskpool_service_pb2_grpc.TaskPoolServiceStub(channel(address, key))


def cli(stack: ServiceStack, *args: str) -> str:
    done = maintainer_cli(stack, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def dataset(**changes: Any) -> dict[str, Any]:
    return {
        "name": NEW,
        "track": "llm",
        "dimension": "language_generation",
        "description": "Post-operative follow-up plans (added at run time)",
        "answer_format": "free_text",
        "metric": "rouge_l",
        "dataset_rule": "mean",
        "permutations": 1,
        "pool_lines": ITEMS,
    } | changes


@pytest.fixture(scope="module")
def second_rotator(
    servers: Servers, stack: ServiceStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceStack]:
    """Another rotator process on the stack's database (a second replica), same credentials."""
    env = stack.env("rotator")
    replica = ServiceStack(
        tmp_path_factory.mktemp("rotator-2"),
        servers.mongo_uri,
        env["MEDBENCH_MONGO__DATABASE"],
        servers.kafka_bootstrap,
        env["MEDBENCH_KAFKA__TOPIC_PREFIX"],
        {
            "MEDBENCH_AUTH__SERVICE_TOKEN": stack.service_token,
            "MEDBENCH_AUTH__BOOTSTRAP_KEY": stack.admin_key,
            "MEDBENCH_METRICS_TOKEN": stack.metrics_token,
        },
        specs=[ServiceSpec("rotator", "rotator")],
    )
    replica.start(timeout_s=60)
    try:
        yield replica
    finally:
        replica.stop()


async def sealed_metrics(servers: Servers, stack: ServiceStack, pool_id: str) -> set[str]:
    """The metric specs the sealed keys of a pool carry (what the scorers score it by)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri)
    try:
        sealed = client[stack.env("rotator")["MEDBENCH_MONGO__DATABASE"] + "_sealed"]
        return {
            key["metric"]
            async for chunk in sealed.pool_keys.find({"pool_id": pool_id})
            for key in chunk["keys"]
        }
    finally:
        await client.close()


async def submit(stack: ServiceStack, tenant: str) -> tuple[Evaluation, list[str]]:
    """A submission assigned to the board's current pool, and its items that REFERENCES keys."""
    evaluation = Evaluation(stack, tenant, f"run-{tenant}", dict.fromkeys(REFERENCES, ANSWER))
    await evaluation.create()
    prompts = await evaluation.prompts()
    return evaluation, [p.item_id for p in prompts if p.item_id in REFERENCES]


async def finish(evaluation: Evaluation) -> Any:
    for batch in evaluation.batches(await evaluation.prompts()):
        await evaluation.upload_batch(batch)
    report = await evaluation.wait_completed(timeout_s=180)
    return next(d for d in report.datasets if d.dataset == NEW)


def expected(similarity: Any, items: list[str]) -> float:
    return 100 * mean(
        similarity(normalise_text(ANSWER), normalise_text(REFERENCES[i])) for i in items
    )


async def test_a_dataset_added_and_revised_at_run_time(
    servers: Servers, stack: ServiceStack, second_rotator: ServiceStack, tmp_path: Path
) -> None:
    key = stack.admin_key
    one, two = stub(stack.address("rotator"), key), stub(second_rotator.address("rotator"), key)
    assert "current registry version: 1" in cli(stack, "registry", "versions")

    # Items of a dataset the registry does not have yet: refused once, nothing sent.
    items = tmp_path / "followup.jsonl"
    lines = [
        {"id": i, "q": f"病例{i}：请给出术后随访计划。", "a": ref} for i, ref in REFERENCES.items()
    ]
    items.write_text(
        "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8"
    )
    mapping = f"item_id=id,question=q,reference=a,dataset=:{NEW},answer_format=:free_text"
    refused = maintainer_cli(stack, "import-jsonl", str(items), "--map", mapping)
    assert refused.returncode == 1
    assert f"unknown dataset '{NEW}' in {ITEMS} lines" in refused.stdout

    # The maintainer adds it (the registry's own JSON for one dataset) ...
    new_file = tmp_path / "new.json"
    new_file.write_text(json.dumps(dataset(), ensure_ascii=False), encoding="utf-8")
    stale = maintainer_cli(stack, "registry", "put", str(new_file), "--revises", "0")
    assert stale.returncode == 2 and "INVALID_ARGUMENT: revises:" in stale.stderr
    out = cli(stack, "registry", "put", str(new_file), "--revises", "1", "--note", "follow-up")
    assert f"registry version 2: added dataset {NEW}" in out
    # ... and both replicas have it at once, without a restart.
    for rotator in (one, two):
        listed = await rotator.ListDatasets(
            taskpool_service_pb2.ListDatasetsRequest(track=common_pb2.TRACK_LLM)
        )
        assert listed.registry_version == "2"
        assert next(d.metric for d in listed.datasets if d.dataset == NEW) == "rouge_l"
    shown = json.loads(cli(stack, "registry", "show", "--dataset", NEW))
    assert shown == dataset()

    # The import goes through now; the pool rotated from it records version 2.
    imported = cli(stack, "import-jsonl", str(items), "--map", mapping)
    assert f"server: {ITEMS} imported" in imported
    rotated = cli(
        stack, "rotate", "--track", "llm", "--board", "upload", "--cycle", "rg1",
        "--dataset", NEW, "--groups", str(ITEMS),
    )  # fmt: skip
    assert "registry version 2" in rotated
    old = await one.GetPool(taskpool_service_pb2.GetPoolRequest(pool_id="llm-upload-rg1"))
    assert old.pool.registry_version == "2" and old.pool.current
    # A partner starts on that pool.
    on_old, old_items = await submit(stack, "followup-a")
    assert old_items

    # The dataset is revised (another metric) while that submission is running ...
    revised = tmp_path / "revised.json"
    revised.write_text(json.dumps(dataset(metric="bleu"), ensure_ascii=False), encoding="utf-8")
    stale = maintainer_cli(stack, "registry", "put", str(revised), "--revises", "1")
    assert stale.returncode == 3 and "ABORTED" in stale.stderr
    assert "registry put failed" in stale.stderr
    out = cli(stack, "registry", "put", str(revised), "--revises", "2")
    assert f"registry version 3: revised dataset {NEW}" in out
    # ... concurrent changes of version 3 on the two replicas: exactly one wins.
    extra = [
        taskpool_pb2.RegistryDataset(
            **dataset(name=f"MedRace{n}", description="", metric="rouge_l", pool_lines=5)
        )
        for n in range(2)
    ]
    outcomes = await asyncio.gather(
        one.PutDataset(taskpool_service_pb2.PutDatasetRequest(revises=3, dataset=extra[0])),
        two.PutDataset(taskpool_service_pb2.PutDatasetRequest(revises=3, dataset=extra[1])),
        return_exceptions=True,
    )
    won = [o for o in outcomes if isinstance(o, taskpool_service_pb2.PutDatasetResponse)]
    lost = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(won) == 1 and won[0].version.version == 4, outcomes
    assert len(lost) == 1 and lost[0].code() == grpc.StatusCode.ABORTED, outcomes
    listed = await one.ListDatasets(taskpool_service_pb2.ListDatasetsRequest())
    assert listed.registry_version == "4"
    assert sum(d.dataset.startswith("MedRace") for d in listed.datasets) == 1

    # A new pool records the newest version; the old one keeps version 2 and its metric.
    cli(
        stack, "rotate", "--track", "llm", "--board", "upload", "--cycle", "rg2",
        "--dataset", NEW, "--groups", str(ITEMS),
    )  # fmt: skip
    new = await two.GetPool(taskpool_service_pb2.GetPoolRequest(pool_id="llm-upload-rg2"))
    assert new.pool.registry_version == "4"
    old = await two.GetPool(taskpool_service_pb2.GetPoolRequest(pool_id="llm-upload-rg1"))
    assert old.pool.registry_version == "2" and not old.pool.current
    assert await sealed_metrics(servers, stack, "llm-upload-rg1") == {"rouge_l"}
    assert await sealed_metrics(servers, stack, "llm-upload-rg2") == {"bleu"}
    of_old = await two.ListDatasets(
        taskpool_service_pb2.ListDatasetsRequest(pool_id="llm-upload-rg1")
    )
    assert of_old.registry_version == "2"
    assert [(d.dataset, d.metric) for d in of_old.datasets] == [(NEW, "rouge_l")]
    on_new, new_items = await submit(stack, "followup-b")

    # Each submission is scored under its own pool's version.
    old_score, new_score = await finish(on_old), await finish(on_new)
    assert old_score.metric == "rouge_l"
    assert old_score.score == pytest.approx(expected(rouge_l, old_items), abs=0.01)
    assert new_score.metric == "bleu"
    assert new_score.score == pytest.approx(expected(bleu, new_items), abs=0.01)
    assert abs(old_score.score - new_score.score) > 1

    history = cli(stack, "registry", "versions")
    assert "current registry version: 4" in history
    assert f"revised dataset {NEW}" in history and "(follow-up)" in history
    assert "seeded from medbench_v4.json" in history
    summary = cli(stack, "registry", "show", "--version", "2")
    assert summary.startswith("registry version 2: MedBench v4") and NEW in summary
