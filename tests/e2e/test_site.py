"""The public website, built from a running stack and read in a real headless Chromium: the
numbers on the pages are the aggregator's, intervals and rank groups render, an unpublished
submission is nowhere, the language switch works, and a phone-sized viewport has no overflow.

Screenshots are kept in .tmp/artifacts/site/ (MEDBENCH_ARTIFACTS overrides the folder).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from medbench_site.__main__ import build
from medbench_site.publish import LINK
from medbench_site.render import board_page, submission_page
from medbench_site.server import SiteServer
from medbench_site.snapshot import Board

from medbench.common.v1 import common_pb2
from medbench.leaderboard.v1 import leaderboard_service_pb2 as lb
from medbench.report.v1 import report_service_pb2, report_service_pb2_grpc
from medbench.submission.v1 import submission_pb2
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_devstack.services import ServiceStack
from tests.conftest import Servers
from tests.e2e.browser import TAB, Browser
from tests.e2e.harness import Evaluation, admin_channel, load_pool
from tests.e2e.test_leaderboard import (
    BASELINE,
    QUESTIONS,
    RIGHT,
    ROWS,
    WRONG,
    board,
    publish,
    sample_track_stack,
)

pytestmark = [pytest.mark.e2e]

ARTIFACTS = Path(os.environ.get("MEDBENCH_ARTIFACTS", ".tmp/artifacts")) / "site"
PHONE = (390, 844)
UPLOAD = board_page(Board("llm", "upload", (), {}))


def fmt(x: float) -> str:
    return f"{x:.1f}"


async def evaluate(
    stack: ServiceStack, tenant: str, model: submission_pb2.ModelInfo, answers: dict[str, str]
) -> str:
    evaluation = Evaluation(stack, tenant, "site-run", answers, questions=QUESTIONS, model=model)
    await evaluation.create()
    for batch in evaluation.batches(await evaluation.prompts()):
        await evaluation.upload_batch(batch)
    await evaluation.wait_completed()
    return evaluation.submission_id


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    """The sample bank is the LLM track of this stack's registry: its reports are complete."""
    with sample_track_stack(servers, tmp_path_factory, "site") as services:
        yield services


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    chrome = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield chrome
    finally:
        chrome.close()


async def test_the_website_shows_the_aggregators_numbers_and_nothing_unpublished(
    stack: ServiceStack, browser: Browser, tmp_path: Path
) -> None:
    await load_pool(stack, ROWS, "site-pool")
    models = {
        "hospital-a": submission_pb2.ModelInfo(
            name="华佗-72B",
            version="2.1",
            organisation="甲医院",
            open_source=True,
            parameter_count="72B",
            release_date="2026-09-30",
        ),
        "hospital-b": submission_pb2.ModelInfo(
            name="baseline-7b", organisation="Hospital B", parameter_count="7B"
        ),
        "hospital-c": submission_pb2.ModelInfo(name="unpublished-model-x9", organisation="C"),
    }
    best = await evaluate(stack, "hospital-a", models["hospital-a"], RIGHT)
    base = await evaluate(stack, "hospital-b", models["hospital-b"], BASELINE)
    hidden = await evaluate(stack, "hospital-c", models["hospital-c"], WRONG)
    assert await publish(stack, "hospital-a", best)
    assert await publish(stack, "hospital-b", base)
    # A partial entry: a pool of two of the track's five datasets (two of its four dimensions),
    # all answered right.
    rotator = taskpool_service_pb2_grpc.TaskPoolServiceStub(admin_channel(stack, "rotator"))
    await rotator.PublishPool(
        taskpool_service_pb2.PublishPoolRequest(
            pool_id="site-pool-cut",
            track=common_pb2.TRACK_LLM,
            board=taskpool_pb2.BOARD_UPLOAD,
            datasets=["MedExam", "MedSafety"],
        )
    )
    part = await evaluate(
        stack, "hospital-d", submission_pb2.ModelInfo(name="partial-7b", organisation="D"), RIGHT
    )
    assert await publish(stack, "hospital-d", part)

    out = tmp_path / "site"
    link, pages, shown = await build(
        out, stack.address("aggregator"), stack.address("rotator"), stack.admin_key
    )
    assert shown == 3
    site = link.resolve()
    # Nothing of the unpublished submission in any file of the build.
    for path in site.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert hidden.encode() not in data and b"unpublished-model-x9" not in data, path
    for path in site.rglob("*.html"):
        assert path.stat().st_size < 300_000, path

    listing = await board(stack).ListLeaderboard(
        lb.ListLeaderboardRequest(track=common_pb2.TRACK_LLM, board=taskpool_pb2.BOARD_UPLOAD)
    )
    entries = {e.submission_id: e for e in listing.entries}
    assert set(entries) == {best, base, part}
    assert entries[part].partial and not entries[best].partial
    reports = report_service_pb2_grpc.ReportServiceStub(admin_channel(stack, "aggregator"))

    server = SiteServer(out).start()
    root = f"http://127.0.0.1:{server.port}"
    try:
        # The board: every number is the aggregator's, to the shown precision.
        browser.get(f"{root}/zh/{UPLOAD}")
        assert browser.js("return document.documentElement.lang;") == "zh-CN"
        for sid, e in entries.items():
            row = f'tr[data-sid="{sid}"]'
            # A partial entry has no rank, no group: a dash.
            rank, group = ("-", "-") if e.partial else (str(e.rank), str(e.group))
            assert browser.text(f'{row} td[data-field="rank"]') == rank
            assert browser.text(f'{row} td[data-field="group"]') == group
            assert browser.text(f'{row} td[data-field="overall"] .v') == fmt(e.overall)
            assert browser.text(f'{row} td[data-field="overall"] .lo') == fmt(e.overall_low)
            assert browser.text(f'{row} td[data-field="overall"] .hi') == fmt(e.overall_high)
            for d in e.dimensions:
                cell = f'{row} td[data-dimension="{d.dimension}"]'
                assert browser.text(f"{cell} .v") == fmt(d.score)
                assert browser.text(f"{cell} .lo") == fmt(d.low)
                assert browser.text(f"{cell} .hi") == fmt(d.high)
        a_row = f'tr[data-sid="{best}"]'
        assert browser.text(f'{a_row} th[data-field="model"]') == "华佗-72B 2.1"
        assert browser.text(f'{a_row} td[data-field="organisation"]') == "甲医院"
        assert browser.text(f'{a_row} td[data-field="released"]') == "2026-09-30"
        assert browser.text(f'{a_row} td[data-field="params"]') == "72B"
        assert browser.text(f'{a_row} td[data-field="source"]') == "开源"
        # The partial entry: last, with its mark beside its name (2 of the 4 dimensions).
        mark = browser.text(f'tr[data-sid="{part}"] [data-field="partial"]')
        assert mark == "不完整：覆盖 2/4 个维度"
        order = browser.js(
            "return [...document.querySelectorAll('tbody tr')].map(r => r.dataset.sid);"
        )
        assert order[-1] == part and set(order) == {best, base, part}
        assert entries[part].overall >= entries[best].overall  # and still after it
        # Exactly the published rows.
        assert browser.js("return document.querySelectorAll('tbody tr').length;") == 3
        source = browser.js("return document.documentElement.outerHTML;")
        assert hidden not in source and "unpublished-model-x9" not in source

        # Keyboard: the first Tab reaches the skip link, which leads to the main content.
        browser.press(TAB)
        assert browser.js("return document.activeElement.className;") == "skip"
        assert browser.js("return document.activeElement.getAttribute('href');") == "#main"

        # The language switch: same page in English.
        browser.click("a[data-switch]")
        assert browser.url == f"{root}/en/{UPLOAD}"
        assert browser.js("return document.documentElement.lang;") == "en"
        assert browser.text(f'tr[data-sid="{best}"] td[data-field="source"]') == "open"
        mark = browser.text(f'tr[data-sid="{part}"] [data-field="partial"]')
        assert mark == "partial: 2 of 4 dimensions"
        browser.screenshot(ARTIFACTS / "board-en-desktop.png")

        # A submission's page: overall, dataset scores and the radar chart.
        report = (
            await reports.GetReport(
                report_service_pb2.GetReportRequest(submission_id=best, tenant_id="hospital-a")
            )
        ).report
        browser.get(f"{root}/zh/{submission_page(best)}")
        assert browser.text('.big[data-field="overall"]') == fmt(report.overall)
        assert browser.text('[data-field="overall-low"]') == fmt(report.overall_low)
        assert browser.text('[data-field="overall-high"]') == fmt(report.overall_high)
        for d in report.datasets:
            cell = f'tr[data-dataset="{d.dataset}"] td[data-field="dataset"]'
            assert browser.text(f"{cell} .v") == fmt(d.score)
        assert browser.js("return document.querySelectorAll('svg[role=img] title').length;") == 1
        assert report.lineage.pool_id in browser.js("return document.body.textContent;")
        browser.screenshot(ARTIFACTS / "submission-zh-desktop.png")

        # The partial entry's page: unranked, and what it misses, by name.
        browser.get(f"{root}/en/{submission_page(part)}")
        block = browser.text('div[data-field="partial"]')
        assert "partial: 2 of 4 dimensions" in block
        assert "DDx-advanced, MedEthics, MedRxCheck" in block
        assert "Complex Medical Reasoning" in block  # a missing dimension, by its name
        assert "not ranked (partial)" in browser.text("main")
        browser.screenshot(ARTIFACTS / "submission-partial-en-desktop.png")

        # The unpublished submission has no page.
        browser.get(f"{root}/zh/{submission_page(hidden)}")
        assert "404" in browser.js("return document.title + document.body.textContent;")

        # A phone: no page is wider than the screen (wide tables scroll inside their box).
        browser.viewport(*PHONE, mobile=True)
        for name in (
            "index.html",
            UPLOAD,
            f"{UPLOAD.removesuffix('.html')}-history.html",
            submission_page(best),
            submission_page(part),
            "methods.html",
        ):
            for lang in ("zh", "en"):
                browser.get(f"{root}/{lang}/{name}")
                width = browser.js("return document.documentElement.scrollWidth;")
                assert width <= PHONE[0], (lang, name, width)
                browser.screenshot(ARTIFACTS / f"phone-{lang}-{name.removesuffix('.html')}.png")
    finally:
        server.stop()
    assert (out / LINK).is_symlink()
