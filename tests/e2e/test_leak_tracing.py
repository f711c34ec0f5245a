"""Leak tracing: each tenant's download differs traceably (its option orders, its canaries:
pool items altered for it in place); a leaked file names its tenant."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from medbench_client.bank_files import read_jsonl
from medbench_devstack.services import ServiceStack
from tests.conftest import Servers
from tests.e2e.harness import Evaluation, load_pool

pytestmark = [pytest.mark.e2e]

BANK = Path(__file__).resolve().parents[2] / "services/rotator/src/rotator/sample_bank"
ROWS = list(read_jsonl(BANK / "items.jsonl"))
TENANTS = ("hospital-x", "hospital-y", "hospital-z")


@pytest.fixture(scope="module")
async def downloads(stack: ServiceStack) -> dict[str, tuple[str, list[dict[str, str]]]]:
    await load_pool(stack, ROWS, "leak-pool")
    out = {}
    for tenant in TENANTS:
        evaluation = Evaluation(stack, tenant, "leak-run", {})
        sid = await evaluation.create()
        out[tenant] = (
            sid,
            [{"item_id": p.item_id, "question": p.question} for p in await evaluation.prompts()],
        )
    return out


async def canary_ids(servers: Servers, stack: ServiceStack, sid: str) -> set[str]:
    """The download's canaries, as the sealed database keeps them (a partner cannot tell)."""
    db_name = stack.env("rotator")["MEDBENCH_MONGO__DATABASE"]
    client: AsyncMongoClient = AsyncMongoClient(servers.mongo_uri)
    try:
        variant = await client[f"{db_name}_sealed"].variants.find_one({"_id": sid})
    finally:
        await client.close()
    assert variant is not None
    return {c["item_id"] for c in variant["canaries"]}


def trace(stack: ServiceStack, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "medbench_client",
            "--rotator",
            stack.address("rotator"),
            "--key",
            stack.admin_key,
            "trace-leak",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write(path: Path, lines: list[dict[str, object]]) -> Path:
    path.write_text(
        "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8"
    )
    return path


async def test_downloads_differ_between_tenants(downloads: dict[str, tuple[str, list]]) -> None:
    x, y = downloads["hospital-x"][1], downloads["hospital-y"][1]
    # The same items under the same ids (canaries are pool items), shown differently.
    assert [i["item_id"] for i in x] == [i["item_id"] for i in y]
    assert len(x) == len(ROWS)
    same_items = {i["item_id"]: i["question"] for i in y}
    differing = sum(
        1 for i in x if i["item_id"] in same_items and same_items[i["item_id"]] != i["question"]
    )
    assert differing >= len(ROWS) * 0.9


async def test_a_leaked_file_names_the_tenant_that_leaked_it(
    servers: Servers,
    stack: ServiceStack,
    downloads: dict[str, tuple[str, list]],
    tmp_path: Path,
) -> None:
    sid, lines = downloads["hospital-y"]
    canaries = await canary_ids(servers, stack, sid)
    assert canaries
    # A leak in the MedBench upload format, as a partner's tooling would write it.
    leaked = write(
        tmp_path / "leak.jsonl",
        [
            {"question": i["question"], "answer": "", "other": {"id": i["item_id"], "source": "x"}}
            for i in lines
        ],
    )
    done = await asyncio.to_thread(trace, stack, leaked)
    assert done.returncode == 0, done.stdout + done.stderr
    first = done.stdout.splitlines()[1]
    assert "hospital-y" in first and sid in first, done.stdout
    assert f"matched {len(ROWS)}/{len(ROWS)}, canaries {len(canaries)}," in first, done.stdout
    assert "hospital-x" not in first


async def test_a_few_reordered_questions_without_ids_are_enough(
    servers: Servers,
    stack: ServiceStack,
    downloads: dict[str, tuple[str, list]],
    tmp_path: Path,
) -> None:
    sid, lines = downloads["hospital-z"]
    canaries = await canary_ids(servers, stack, sid)
    # Five real questions with their ids, no canaries: the option orders alone decide.
    sample = [i for i in lines if i["item_id"] not in canaries][:5]
    done = await asyncio.to_thread(trace, stack, write(tmp_path / "few.jsonl", sample))
    first = done.stdout.splitlines()[1]
    assert "hospital-z" in first and "matched 5/5" in first and "canaries 0" in first, done.stdout
    # Canaries alone, ids stripped (the file says nothing of which items they are), decide.
    found = [{"question": i["question"]} for i in lines if i["item_id"] in canaries]
    done = await asyncio.to_thread(trace, stack, write(tmp_path / "canaries.jsonl", found))
    first = done.stdout.splitlines()[1]
    assert "hospital-z" in first and sid in first, done.stdout
    assert f"matched 0/0, canaries {len(found)}," in first, done.stdout


async def test_a_file_from_nobody_names_nobody(
    stack: ServiceStack, tmp_path: Path, downloads: dict[str, tuple[str, list]]
) -> None:
    canonical = [{"item_id": r["item_id"], "question": r["question"]} for r in ROWS]
    done = await asyncio.to_thread(trace, stack, write(tmp_path / "bank.jsonl", canonical))
    assert done.returncode == 1 and "no download matches" in done.stdout, done.stdout
