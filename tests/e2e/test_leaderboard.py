"""Leaderboards through the stack: opt-in publishing, rank groups from intervals, selection rule."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from medbench.common.v1 import common_pb2
from medbench.identity.v1 import access_pb2
from medbench.leaderboard.v1 import leaderboard_service_pb2 as lb
from medbench.leaderboard.v1 import leaderboard_service_pb2_grpc
from medbench.submission.v1 import submission_service_pb2
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_client.api import channel
from medbench_client.bank_files import answers_by_item, read_jsonl
from medbench_devstack.services import ServiceStack
from rotator.core.options import parse_options
from rotator.registry import DEFAULT_REGISTRY_PATH
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
from tests.e2e.harness import (
    Evaluation,
    admin_channel,
    eventually,
    gateway_metric,
    load_pool,
    partner_key,
    withheld_item_results,
)

VIEWER = access_pb2.ROLE_PARTNER_VIEWER

pytestmark = [pytest.mark.e2e]

BANK = Path(__file__).resolve().parents[2] / "services/rotator/src/rotator/sample_bank"
ROWS = list(read_jsonl(BANK / "items.jsonl"))
QUESTIONS = {r["item_id"]: r["question"] for r in ROWS}
RIGHT = {r["item_id"]: "<" + ", ".join(r["reference"]) + ">" for r in ROWS}
WRONG = dict.fromkeys(QUESTIONS, "<Z>")
BASELINE = answers_by_item(read_jsonl(BANK / "baseline_answers.jsonl"))


def sample_registry(folder: Path) -> Path:
    """The bundled registry with the LLM track cut to the sample bank's five datasets (four
    dimensions), so that a report on the sample bank covers its whole track: complete, and
    ranked (against the full registry it misses 31 datasets and is partial, unranked)."""
    doc = json.loads(DEFAULT_REGISTRY_PATH.read_text(encoding="utf-8"))
    kept = {r["dataset"] for r in ROWS}
    doc["datasets"] = [d for d in doc["datasets"] if d["track"] != "llm" or d["name"] in kept]
    count = {
        code: sum(d["dimension"] == code for d in doc["datasets"])
        for code in {d["code"] for d in doc["dimensions"]}
    }
    doc["dimensions"] = [
        {**d, "dataset_count": count[d["code"]]} for d in doc["dimensions"] if count[d["code"]]
    ]
    for track in doc["tracks"]:
        track["dataset_count"] = sum(d["track"] == track["code"] for d in doc["datasets"])
        track["dimension_count"] = sum(d["track"] == track["code"] for d in doc["dimensions"])
    path = folder / "registry-sample-llm.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


@contextmanager
def sample_track_stack(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory, name: str
) -> Iterator[ServiceStack]:
    """A stack whose registry's LLM track is the sample bank's datasets (see sample_registry)."""
    registry = sample_registry(tmp_path_factory.mktemp("registry"))
    env = {"MEDBENCH_REGISTRY_PATH": str(registry)}
    with running_stack(servers, tmp_path_factory, name, env) as services:
        yield services


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    with sample_track_stack(servers, tmp_path_factory, "board") as services:
        yield services


async def evaluate(stack: ServiceStack, tenant: str, run: str, answers: dict[str, str]) -> str:
    evaluation = Evaluation(stack, tenant, run, answers, questions=QUESTIONS)
    await evaluation.create()
    for batch in evaluation.batches(await evaluation.prompts()):
        await evaluation.upload_batch(batch)
    await evaluation.wait_completed()
    return evaluation.submission_id


def board(stack: ServiceStack) -> leaderboard_service_pb2_grpc.LeaderboardServiceStub:
    return leaderboard_service_pb2_grpc.LeaderboardServiceStub(
        channel(stack.address("gateway"), partner_key(stack, "board-reader", VIEWER))
    )


async def publish(stack: ServiceStack, tenant: str, sid: str, published: bool = True) -> bool:
    evaluation = Evaluation(stack, tenant, "", {})
    stub = evaluation.partner()._stub  # noqa: SLF001 - the raw call, to see its status
    response = await stub.PublishSubmission(
        submission_service_pb2.PublishSubmissionRequest(submission_id=sid, published=published),
    )
    return bool(response.published)


async def listing(stack: ServiceStack, **kw: object) -> lb.ListLeaderboardResponse:
    request = lb.ListLeaderboardRequest(
        track=common_pb2.TRACK_LLM, board=taskpool_pb2.BOARD_UPLOAD, **kw
    )
    return await board(stack).ListLeaderboard(request)


async def test_published_submissions_are_ranked_in_groups_and_others_stay_off(
    stack: ServiceStack,
) -> None:
    await load_pool(stack, ROWS, "lb-pool")
    best = await evaluate(stack, "hospital-best", "right", RIGHT)
    middle = await evaluate(stack, "hospital-mid", "baseline", BASELINE)
    worst = await evaluate(stack, "hospital-low", "wrong", WRONG)
    hidden = await evaluate(stack, "hospital-shy", "baseline", BASELINE)

    assert (await listing(stack)).entries == []
    for tenant, sid in (("hospital-best", best), ("hospital-mid", middle), ("hospital-low", worst)):
        assert await publish(stack, tenant, sid)
    # Publishing is the owner's call: another tenant's submission is not found.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await publish(stack, "hospital-best", hidden)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    page = await listing(stack)
    assert [e.submission_id for e in page.entries] == [best, middle, worst]
    assert hidden not in {e.submission_id for e in page.entries}
    top = page.entries[0]
    assert top.overall == pytest.approx(100.0) and top.overall_low <= top.overall
    assert top.overall_high >= top.overall and top.tenant_id == "hospital-best"
    # Each entry's rank counts only the entries whose interval lies wholly above its own.
    for entry in page.entries:
        above = [o for o in page.entries if o.overall_low > entry.overall_high and o is not entry]
        assert entry.rank == 1 + len(above)
    assert [len(e.dimensions) for e in page.entries] == [len(top.dimensions)] * 3

    # Pagination, and withdrawal.
    first = await listing(stack, page_size=2)
    rest = await listing(stack, page_size=2, page_token=first.next_page_token)
    assert [e.submission_id for e in [*first.entries, *rest.entries]] == [best, middle, worst]
    assert (first.total, rest.next_page_token) == (3, "")
    assert not await publish(stack, "hospital-low", worst, published=False)
    assert [e.submission_id for e in (await listing(stack)).entries] == [best, middle]


async def test_the_gateway_keeps_a_board_a_moment_and_forgets_it_when_one_publishes(
    stack: ServiceStack,
) -> None:
    await load_pool(stack, ROWS, "lb-cache-pool")
    sid = await evaluate(stack, "hospital-cache", "right", RIGHT)
    reads = "medbench_gateway_leaderboard_reads_total"
    hits, misses = gateway_metric(stack, reads, "hit"), gateway_metric(stack, reads, "miss")
    started = time.monotonic()
    first = await listing(stack, page_size=11)
    again = await listing(stack, page_size=11)
    elapsed = time.monotonic() - started
    assert again == first and sid not in {e.submission_id for e in first.entries}
    assert gateway_metric(stack, reads, "miss") == misses + 1 + (elapsed >= 2.0)
    if elapsed < 2.0:  # within the stack's 2 s: the second read is the gateway's own
        assert gateway_metric(stack, reads, "hit") == hits + 1
    # A publication forgets every kept board: the entry is there at the next read.
    assert await publish(stack, "hospital-cache", sid)
    shown = await listing(stack, page_size=11)
    assert sid in {e.submission_id for e in shown.entries}
    assert not await publish(stack, "hospital-cache", sid, published=False)
    assert sid not in {e.submission_id for e in (await listing(stack, page_size=11)).entries}


async def test_latest_or_best_submission_of_a_model(stack: ServiceStack) -> None:
    await load_pool(stack, ROWS, "lb-pool-2")
    good = await evaluate(stack, "vendor-x", "x-1", RIGHT)
    later = await evaluate(stack, "vendor-x", "x-2", WRONG)
    for sid in (good, later):
        assert await publish(stack, "vendor-x", sid)
    mine = [e for e in (await listing(stack)).entries if e.tenant_id == "vendor-x"]
    assert [e.submission_id for e in mine] == [later]
    best = await listing(stack, rule=lb.SELECTION_RULE_BEST)
    assert [e.submission_id for e in best.entries if e.tenant_id == "vendor-x"] == [good]


async def test_bad_requests_and_unfinished_submissions(stack: ServiceStack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await board(stack).ListLeaderboard(lb.ListLeaderboardRequest(track=common_pb2.TRACK_LLM))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "board" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await listing(stack, page_token="-2")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await board(stack).PublishEntry(lb.PublishEntryRequest(submission_id="x", tenant_id="t"))
    # Internal (the aggregator's, for the service token): a partner may not call it anywhere.
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await load_pool(stack, ROWS, "lb-pool-3")
    evaluation = Evaluation(stack, "hospital-slow", "unfinished", BASELINE, questions=QUESTIONS)
    await evaluation.create()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await publish(stack, "hospital-slow", evaluation.submission_id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "COMPLETED" in (err.value.details() or "")


def run_medbench(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    cli = str(Path(sys.executable).with_name("medbench"))
    return subprocess.run(
        [cli, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def written(folder: Path) -> tuple[set[str], dict[str, object], str]:
    if not folder.exists():
        return set(), {}, ""
    names = {p.name for p in folder.iterdir()}
    doc = json.loads((folder / "report.json").read_text()) if "report.json" in names else {}
    html = (folder / "report.html").read_text() if "report.html" in names else ""
    return names, doc, html


async def test_the_partner_cli_writes_the_report_files(stack: ServiceStack, tmp_path: Path) -> None:
    await load_pool(stack, ROWS, "lb-pool-4")
    sid = await evaluate(stack, "hospital-cli", "cli-run", BASELINE)
    report = await Evaluation(stack, "hospital-cli", "", {}).partner().report(sid)
    env = {
        **os.environ,
        "MEDBENCH_GATEWAY": stack.address("gateway"),
        "MEDBENCH_API_KEY": partner_key(stack, "hospital-cli"),
    }
    done = await asyncio.to_thread(run_medbench, env, "report", sid, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    names, doc, html = written(tmp_path)
    assert {"report.json", "report.html", "report.md", "radar.png", "datasets.csv"} <= names
    assert doc["overall"] == pytest.approx(report.overall)
    assert f"{report.overall:.1f}" in html
    # The pool is live: its item results are withheld (the CLI writes aggregates only; its
    # items.csv once the pool is disclosed: tests/e2e/test_disclosure.py).
    items = await withheld_item_results(stack, "hospital-cli", sid)
    assert sorted(i.item_id for i in items) == sorted(QUESTIONS)
    assert all(i.HasField("score") and i.parts[0].component == "metric" for i in items)
    assert "items.csv" not in names and doc["items"] == []
    assert "is a live hidden pool" in doc["items_withheld"]
    # Another tenant's submission is not found (exit code 3), and nothing is written.
    elsewhere = tmp_path / "other"
    other = await asyncio.to_thread(
        run_medbench,
        {**env, "MEDBENCH_API_KEY": partner_key(stack, "hospital-else")},
        "report",
        sid,
        "--out",
        str(elsewhere),
    )
    assert other.returncode == 3 and "NOT_FOUND" in other.stderr
    assert written(elsewhere)[0] == set()


async def test_equating_puts_every_published_entry_on_the_reference_pool(
    stack: ServiceStack,
) -> None:
    internal = leaderboard_service_pb2_grpc.LeaderboardServiceStub(
        channel(stack.address("aggregator"), stack.admin_key)
    )
    mine = []
    for pool, tenant, answers in (("eq-pool-1", "eq-a", RIGHT), ("eq-pool-2", "eq-b", BASELINE)):
        await load_pool(stack, ROWS, pool)
        sid = await evaluate(stack, tenant, f"{tenant}-run", answers)
        assert await publish(stack, tenant, sid)
        mine.append(sid)
    # Each tenant sees multiple-choice options in its own order: the prompt hash of an item
    # differs between the two runs only where the shown prompt can (items with options).
    shown = []
    for tenant, sid in zip(("eq-a", "eq-b"), mine, strict=True):
        results = await withheld_item_results(stack, tenant, sid)
        shown.append({i.item_id: i.prompt_hash for i in results})
    assert all(len(h) == 32 for h in shown[0].values()) and shown[0].keys() == shown[1].keys()
    differ = {i for i in shown[0] if shown[0][i] != shown[1][i]}
    with_options = {r["item_id"] for r in ROWS if parse_options(r["question"]) is not None}
    assert differ and differ <= with_options
    before = {e.submission_id: e for e in (await listing(stack)).entries}
    assert not any(before[sid].HasField("equated") for sid in mine)
    done = await internal.EquateBoard(
        lb.EquateBoardRequest(
            track=common_pb2.TRACK_LLM, board=taskpool_pb2.BOARD_UPLOAD, reference_pool="eq-pool-1"
        )
    )
    assert done.reference_pool == "eq-pool-1" and done.pools >= 2

    async def equated() -> dict[str, lb.LeaderboardEntry] | None:
        entries = {e.submission_id: e for e in (await listing(stack)).entries}
        return entries if all(e.HasField("equated") for e in entries.values()) else None

    # Equating is the aggregator's, not a publication through the gateway: the gateway's
    # kept boards show it within their 2 s.
    after = await eventually(equated, 10, "the gateway's board to show the equated scores")
    assert done.entries >= len(after)
    assert all(0 <= e.equated <= 100 for e in after.values())
    # The pools hold the same items here, so equating keeps the order of the two runs.
    right, baseline = (after[sid] for sid in mine)
    report = await Evaluation(stack, "eq-a", "", {}).partner().report(mine[0])
    assert report.HasField("equated") and report.equated == pytest.approx(right.equated)
    assert right.overall > baseline.overall and right.equated > baseline.equated
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await internal.EquateBoard(
            lb.EquateBoardRequest(
                track=common_pb2.TRACK_LLM, board=taskpool_pb2.BOARD_UPLOAD, reference_pool="nope"
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_partial_entry_is_listed_after_every_complete_one_marked_and_unranked(
    stack: ServiceStack,
) -> None:
    await load_pool(stack, ROWS, "lb-pool-5")
    whole = await evaluate(stack, "hospital-whole", "whole", BASELINE)
    # A pool cut to two of the track's five datasets: all right, and still not ranked.
    rotator = taskpool_service_pb2_grpc.TaskPoolServiceStub(admin_channel(stack, "rotator"))
    await rotator.PublishPool(
        taskpool_service_pb2.PublishPoolRequest(
            pool_id="lb-pool-cut",
            track=common_pb2.TRACK_LLM,
            board=taskpool_pb2.BOARD_UPLOAD,
            datasets=["MedExam", "MedSafety"],
        )
    )
    cut = await evaluate(stack, "hospital-cut", "cut", RIGHT)
    report = await Evaluation(stack, "hospital-cut", "", {}).partner().report(cut)
    assert report.partial and report.overall == pytest.approx(100.0)
    assert list(report.missing_dimensions) == ["complex_reasoning", "language_understanding"]
    assert list(report.missing_datasets) == ["DDx-advanced", "MedEthics", "MedRxCheck"]
    assert not (await Evaluation(stack, "hospital-whole", "", {}).partner().report(whole)).partial
    for tenant, sid in (("hospital-whole", whole), ("hospital-cut", cut)):
        assert await publish(stack, tenant, sid)

    entries = list((await listing(stack, page_size=500)).entries)
    complete = [e for e in entries if not e.partial]
    assert whole in {e.submission_id for e in complete}
    assert entries[len(complete) :] == [e for e in entries if e.partial]  # complete ones first
    [shown] = [e for e in entries if e.submission_id == cut]
    assert (shown.rank, shown.group) == (0, 0) and shown.overall >= max(e.overall for e in complete)
    assert list(shown.missing_dimensions) == list(report.missing_dimensions)
    assert list(shown.missing_datasets) == list(report.missing_datasets)
    # The complete entries' ranks count complete entries only.
    for e in complete:
        above = [o for o in complete if o.overall_low > e.overall_high]
        assert e.rank == 1 + len(above)
