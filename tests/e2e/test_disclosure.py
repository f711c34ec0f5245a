"""Per-item results of a hidden pool reach its submitters only after the maintainers disclose the
pool, on the real stack: a completed submission on a live pool is refused GetItemResults and
`medbench report` writes aggregates only; the pool cannot be disclosed while a board serves it
or one of its question groups; once it is rotated out and disclosed (maintainer CLI), the owner
reads its item results and `medbench report` writes items.csv, and no later pool ever holds one
of its question groups."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from pymongo import AsyncMongoClient

from medbench.common.v1 import common_pb2
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_client.api import AdminClient
from medbench_client.bank_files import import_item, read_jsonl
from medbench_devstack.services import ServiceStack
from rotator.core.synthetic import synthetic_items
from tests.conftest import Servers
from tests.e2e.harness import (
    Evaluation,
    admin_channel,
    eventually,
    maintainer_cli,
    partner_key,
)

pytestmark = [pytest.mark.e2e]

BANK = Path(__file__).resolve().parents[2] / "services/rotator/src/rotator/sample_bank"
ROWS = list(read_jsonl(BANK / "items.jsonl"))
QUESTIONS = {r["item_id"]: r["question"] for r in ROWS}
RIGHT = {r["item_id"]: "<" + ", ".join(r["reference"]) + ">" for r in ROWS}
TENANT = "disclosure-hospital"
LIVE = "llm-upload-a"


def rotator(stack: ServiceStack) -> taskpool_service_pb2_grpc.TaskPoolServiceStub:
    return taskpool_service_pb2_grpc.TaskPoolServiceStub(admin_channel(stack, "rotator"))


async def rotate(
    stack: ServiceStack, cycle: str, dataset: str, groups: int
) -> taskpool_service_pb2.RotatePoolResponse:
    return await rotator(stack).RotatePool(
        taskpool_service_pb2.RotatePoolRequest(
            track=common_pb2.TRACK_LLM,
            board=taskpool_pb2.BOARD_UPLOAD,
            cycle=cycle,
            datasets=[dataset],
            groups_per_dataset=groups,
        )
    )


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


async def groups_of(servers: Servers, stack: ServiceStack, pool_id: str) -> set[str]:
    """The question groups of a stored pool (its sealed keys)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri)
    try:
        sealed = client[stack.env("rotator")["MEDBENCH_MONGO__DATABASE"] + "_sealed"]
        return {
            key["group_id"]
            async for chunk in sealed.pool_keys.find({"pool_id": pool_id})
            for key in chunk["keys"]
        }
    finally:
        await client.close()


def medbench(stack: ServiceStack, *args: str) -> subprocess.CompletedProcess[str]:
    """The partner CLI as the tenant, --json."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDBENCH_")},
        "MEDBENCH_GATEWAY": stack.address("gateway"),
        "MEDBENCH_API_KEY": partner_key(stack, TENANT),
    }
    return subprocess.run(
        [str(Path(sys.executable).with_name("medbench")), *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def read_text(path: str) -> str:
    return Path(path).read_text(encoding="utf-8-sig")


async def report_files(stack: ServiceStack, sid: str, out: Path) -> dict[str, Any]:
    done = await asyncio.to_thread(medbench, stack, "report", sid, "--out", str(out))
    assert done.returncode == 0, done.stderr
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


async def test_item_results_are_released_only_by_disclosure_and_its_groups_never_return(
    stack: ServiceStack, servers: Servers, tmp_path: Path
) -> None:
    # The bank, and a live pool of two MedExam question groups (10 items) on the upload board.
    imported = await AdminClient(admin_channel(stack, "rotator")).import_items(
        [import_item(r) for r in ROWS]
    )
    assert imported.imported == len(ROWS) and not imported.rejected
    live = await rotate(stack, "a", "MedExam", groups=2)
    assert (live.pool.pool_id, live.pool.group_count) == (LIVE, 2)
    assert not live.pool.HasField("disclosed_at")
    live_groups = await groups_of(servers, stack, LIVE)

    # A completed submission on it: its owner gets the report, never its item results.
    evaluation = Evaluation(stack, TENANT, "run-a", RIGHT, questions=QUESTIONS)
    sid = await evaluation.create()
    for batch in evaluation.batches(await evaluation.prompts()):
        await evaluation.upload_batch(batch)
    report = await evaluation.wait_completed()
    assert report.lineage.pool_id == LIVE and report.scored_items >= 10
    withheld = await refused(evaluation.partner().item_results(sid))
    assert withheld.code() == grpc.StatusCode.FAILED_PRECONDITION
    message = withheld.details() or ""
    assert f"pool {LIVE} is a live hidden pool" in message
    assert "released when the maintainers disclose the pool" in message
    # The partner's report files: aggregates only, and why.
    shown = await report_files(stack, sid, tmp_path / "live")
    assert "is a live hidden pool" in shown["items_withheld"]
    assert "items.csv" not in shown["files"] and not (tmp_path / "live/items.csv").exists()
    assert json.loads(read_text(shown["files"]["report.json"]))["items"] == []

    # Not while it is its board's current pool, nor while the next cycle carries its groups
    # over as anchors; a refusal discloses nothing.
    current = await refused(
        rotator(stack).DisclosePool(taskpool_service_pb2.DisclosePoolRequest(pool_id=LIVE))
    )
    assert current.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "is the current pool of track llm, board upload" in (current.details() or "")
    anchored = await rotate(stack, "b", "MedExam", groups=2)
    assert await groups_of(servers, stack, anchored.pool.pool_id) == live_groups
    shared = await refused(
        rotator(stack).DisclosePool(taskpool_service_pb2.DisclosePoolRequest(pool_id=LIVE))
    )
    assert shared.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"shares 2 question groups ({', '.join(sorted(live_groups))})" in (
        shared.details() or ""
    )
    assert (await refused(evaluation.partner().item_results(sid))).code() == (
        grpc.StatusCode.FAILED_PRECONDITION
    )

    # Rotated out (the board now serves MedEthics only): the maintainer discloses it.
    await rotate(stack, "c", "MedEthics", groups=2)
    disclosed = await asyncio.to_thread(maintainer_cli, stack, "disclose", LIVE)
    assert disclosed.returncode == 0, disclosed.stderr
    assert f"pool {LIVE} disclosed at " in disclosed.stdout
    assert "2 question groups retired" in disclosed.stdout
    again = await rotator(stack).DisclosePool(
        taskpool_service_pb2.DisclosePoolRequest(pool_id=LIVE)
    )
    assert not again.newly_disclosed and again.retired_groups == 2
    read = await rotator(stack).GetPool(taskpool_service_pb2.GetPoolRequest(pool_id=LIVE))
    assert read.pool.disclosed_at == again.pool.disclosed_at and not read.pool.current

    # Its owner reads the item results now (the gateway may keep "live" for a few seconds).
    async def released() -> list[Any] | None:
        try:
            return await evaluation.partner().item_results(sid)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc
            return None

    items = await eventually(released, 15, "the item results of the disclosed pool")
    pool_items = {r["item_id"] for r in ROWS if r["group_id"] in live_groups}
    scored = {i.item_id: i.score for i in items if i.item_id in pool_items}
    assert scored == dict.fromkeys(pool_items, 1.0)
    shown = await report_files(stack, sid, tmp_path / "disclosed")
    assert shown["items_withheld"] == ""
    rows = read_text(shown["files"]["items.csv"]).splitlines()
    assert len(rows) == 1 + sum(i.HasField("score") for i in items)

    # Its question groups never serve again: a later MedExam rotation asking for every group
    # of the board (4) gets the other 2; neither the disclosed pool nor the one holding its
    # groups is ever made current again.
    later = await rotate(stack, "d", "MedExam", groups=4)
    later_groups = await groups_of(servers, stack, later.pool.pool_id)
    assert len(later_groups) == 2 and not later_groups & live_groups
    assert list(later.shortfalls) == ["MedExam: 2/4"]
    for cycle, why in (("a", "is disclosed"), ("b", "retired by the disclosure of pool")):
        back = await refused(rotate(stack, cycle, "MedExam", groups=2))
        assert back.code() == grpc.StatusCode.FAILED_PRECONDITION and why in (back.details() or "")
    current_pool = await rotator(stack).GetPool(
        taskpool_service_pb2.GetPoolRequest(track=common_pb2.TRACK_LLM)
    )
    assert current_pool.pool.pool_id == later.pool.pool_id


async def rotate_api(
    stack: ServiceStack, cycle: str, dataset: str, groups: int, exposure_cap: int = 0
) -> taskpool_service_pb2.RotatePoolResponse:
    return await rotator(stack).RotatePool(
        taskpool_service_pb2.RotatePoolRequest(
            track=common_pb2.TRACK_LLM,
            board=taskpool_pb2.BOARD_API,
            cycle=cycle,
            datasets=[dataset],
            groups_per_dataset=groups,
            exposure_cap=exposure_cap,
        )
    )


async def test_a_disclosure_racing_a_rotation_never_leaves_its_groups_in_a_current_pool(
    stack: ServiceStack, servers: Servers
) -> None:
    # The API board, on a synthetic bank: each round a pool x is rotated out (the board serves
    # another dataset), then its disclosure races a rotation that would take x's groups again.
    bank = [r for r in synthetic_items(600, seed=31) if r["dataset"] == "MedRxCheck"]
    bank += [r for r in synthetic_items(600, seed=31) if r["dataset"] == "MedSafety"][:60]
    admin = AdminClient(admin_channel(stack, "rotator"))
    assert not (await admin.import_items([import_item(r) for r in bank])).rejected
    outcomes = []
    # The disclosure starts later each round, so that either may commit first (measured: the
    # first rounds disclose and the rotation is refused, the last rotate and the disclosure is).
    for n, delay_s in enumerate((0.0, 0.4, 1.0, 2.0)):
        x = (await rotate_api(stack, f"x{n}", "MedRxCheck", 3, exposure_cap=10)).pool.pool_id
        await rotate_api(stack, f"y{n}", "MedSafety", groups=1)
        x_groups = await groups_of(servers, stack, x)

        async def disclose(pool_id: str, delay_s: float) -> Any:
            await asyncio.sleep(delay_s)
            return await rotator(stack).DisclosePool(
                taskpool_service_pb2.DisclosePoolRequest(pool_id=pool_id)
            )

        rotated, disclosed = await asyncio.gather(
            rotate_api(stack, f"z{n}", "MedRxCheck", groups=100, exposure_cap=10),
            disclose(x, delay_s),
            return_exceptions=True,
        )
        for result in (rotated, disclosed):
            if isinstance(result, BaseException):
                assert isinstance(result, grpc.aio.AioRpcError), result
                assert result.code() in (
                    grpc.StatusCode.FAILED_PRECONDITION,
                    grpc.StatusCode.ABORTED,
                ), result
        assert not (isinstance(rotated, BaseException) and isinstance(disclosed, BaseException))
        current = await rotator(stack).GetPool(
            taskpool_service_pb2.GetPoolRequest(
                track=common_pb2.TRACK_LLM, board=taskpool_pb2.BOARD_API
            )
        )
        read = await rotator(stack).GetPool(taskpool_service_pb2.GetPoolRequest(pool_id=x))
        serving = await groups_of(servers, stack, current.pool.pool_id)
        if read.pool.HasField("disclosed_at"):
            assert not serving & x_groups, (n, current.pool.pool_id)
        outcomes.append(
            (
                "disclosed" if read.pool.HasField("disclosed_at") else "live",
                "rotated" if not isinstance(rotated, BaseException) else "refused",
                bool(serving & x_groups),
            )
        )
    # Whichever won, never a disclosed pool's group in the current pool.
    assert not [o for o in outcomes if o[0] == "disclosed" and o[2]], outcomes
