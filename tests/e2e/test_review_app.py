"""The physician review web app against a running stack, in a real headless Chromium.

A reviewer signs in with a reviewer key, claims the open review, rates every criterion and the
overall score with the keyboard only, and submits: the judge scorer holds the rating with the
scores per criterion under the reviewer's own key id, and the page never showed the judges'
scores. A wrong key gets a clear 401 page; the reviewer's key gets 403 (the service's
PERMISSION_DENIED) on the maintainers' import page. A maintainer imports a ratings file and
recalibrates: the calibration report page shows the service's new n and kappa.

The review is seeded in the judge scorer's store as the panel opens one (test_judge_scorer.py
covers the panel-disagreement path that opens reviews).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from medbench.identity.v1 import access_pb2
from medbench_client.api import JudgeAdmin, channel
from medbench_devstack.review_app import reviewer_key, start_review, stop_review
from medbench_devstack.services import ServiceStack
from tests.conftest import Servers
from tests.e2e.browser import ELEMENT, TAB, Browser
from tests.e2e.conftest import running_stack
from tests.e2e.fake_endpoint import FakeEndpoint, Script
from tests.e2e.fake_judge import judge
from tests.e2e.harness import eventually, partner_key

pytestmark = [pytest.mark.e2e]

ARTIFACTS = Path(os.environ.get("MEDBENCH_ARTIFACTS", ".tmp/artifacts")) / "review"
ENTER, SPACE, RIGHT = "\ue007", "\ue00d", "\ue014"
QUESTION = "高血压患者日常生活中应注意什么？"
POINTS = ["低盐饮食", "规律服药", "监测血压"]
REVIEW_ID = "ab" * 12
# generic v1: 0-10, four criteria. The reviewer picks these with the arrow keys.
CRITERIA = [7, 6, 5, 8]
OVERALL = 6


@pytest.fixture(scope="module")
def fair_judge() -> Iterator[FakeEndpoint]:
    endpoint = FakeEndpoint(Script(answer=str, model="judge-a", reply=judge()))
    with endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def stack(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory, fair_judge: FakeEndpoint
) -> Iterator[ServiceStack]:
    models = [{"model": "judge-a", "base_url": fair_judge.base_url, "api_key": "secret-key"}]
    env = {"MEDBENCH_JUDGE__MODELS": json.dumps(models)}
    with running_stack(servers, tmp_path_factory, "review", env) as services:
        database = services.env("judge_scorer")["MEDBENCH_MONGO__DATABASE"]
        with MongoClient(servers.mongo_uri) as client:
            client[database].reviews.insert_one(
                {
                    "_id": REVIEW_ID,
                    "state": "open",
                    "item_id": "secret-item-of-hospital-x",
                    "dataset": "MedHC",
                    "dimension": "knowledge_qa",
                    "rubric_id": "generic",
                    "rubric_version": 1,
                    "question": QUESTION,
                    "reference": "低盐饮食，规律服药，监测血压。",
                    "key_points": POINTS,
                    "answer": "应当低盐饮食，规律服药。",
                    "image_ids": [],
                    "judge_scores": [9.25, 1.75],
                    "created_at": datetime.now(UTC),
                }
            )
        yield services


def active(b: Browser) -> dict[str, str]:
    return dict(
        b.js(
            "const e = document.activeElement;"
            "return {tag: e.tagName, name: e.name || '', id: e.id || '', type: e.type || ''};"
        )
    )


def tab_to(b: Browser, wanted: dict[str, str], most: int = 80) -> None:
    for _ in range(most):
        b.press(TAB)
        now = active(b)
        if all(now.get(k) == v for k, v in wanted.items()):
            return
    raise AssertionError(f"Tab never reached {wanted}; last {active(b)}")


def sign_in(b: Browser, url: str, key: str) -> None:
    b.get(f"{url}/signin")
    tab_to(b, {"id": "key"})
    found = b._call("GET", "/element/active")  # noqa: SLF001 - typing into the focused input
    b._call("POST", f"/element/{found[ELEMENT]}/value", {"text": key})  # noqa: SLF001
    b.press_and_load(ENTER)


def status_of(b: Browser) -> str:
    return b.text("h1")


async def test_reviewer_rates_with_the_keyboard_and_maintainer_recalibrates(
    stack: ServiceStack, app_url: str, browser: Browser, tmp_path: Path
) -> None:
    b = browser
    reviewer_key = partner_key(stack, "physicians", access_pb2.ROLE_REVIEWER)
    reviewer_id = reviewer_key.split("_")[1]
    admin = JudgeAdmin(channel(stack.address("judge_scorer"), stack.admin_key))

    # A wrong key: a clear 401 page, no session.
    sign_in(b, app_url, "mbk_0123456789abcdef_" + "x" * 43)
    assert status_of(b).startswith("401")
    assert "密钥无效" in b.text("main")

    # The reviewer signs in (Chinese first), claims with Enter, rates with the keyboard only.
    sign_in(b, app_url, reviewer_key)
    assert b.js("return document.documentElement.lang") == "zh-CN"
    assert reviewer_id in b.text("header")
    tab_to(b, {"id": "claim"})
    b.press_and_load(ENTER)
    assert b.url.endswith(f"/review/{REVIEW_ID}")
    page = b.text("main")
    assert QUESTION in page and "应当低盐饮食，规律服药。" in page and "规律服药" in page
    for hidden in ("secret-item-of-hospital-x", "9.25", "1.75", "judge-a"):
        assert hidden not in b.js("return document.documentElement.outerHTML")
    assert reviewer_key not in b.js("return document.documentElement.outerHTML")
    legends = b.js(
        "return [...document.querySelectorAll('fieldset legend')].map(e => e.textContent)"
    )
    assert len(legends) == len(CRITERIA) + 1 and legends[-1] == "总分"
    for name, value in [*((f"c{i}", v) for i, v in enumerate(CRITERIA)), ("overall", OVERALL)]:
        tab_to(b, {"name": name, "type": "radio"})
        b.press(SPACE)  # checks the scale's first point (0)
        for _ in range(value):
            b.press(RIGHT)
        assert b.js(
            "return document.querySelector(`input[name='${arguments[0]}']:checked`).value", name
        ) == str(value)
    b.screenshot(ARTIFACTS / "review.png")
    tab_to(b, {"id": "submit"})
    b.press_and_load(ENTER)
    assert "评分已提交" in status_of(b)
    [done] = await admin.reviews("done")
    assert (done.review_id, done.reviewer_id, done.score) == (REVIEW_ID, reviewer_id, OVERALL)
    assert [c.score for c in done.criteria] == CRITERIA

    # The rating recalibrates the rubric (off the request path): one rated answer so far.
    async def first() -> object:
        latest = await admin.calibration("generic")
        return latest if latest.n == 1 else None

    await eventually(first, 60, "the recalibration after the review")
    b.get(f"{app_url}/calibration/generic")
    assert b.text("#n") == "1"

    # English too; the reviewer may not open the maintainers' import page (the service says so).
    b.get(f"{app_url}/lang/en?next=/import")
    assert b.js("return document.documentElement.lang") == "en"
    assert status_of(b).startswith("403")
    assert "may not" in b.text("main")

    # A maintainer imports a ratings file and measures again: the report shows the new n.
    ratings = tmp_path / "ratings.jsonl"
    ratings.write_text(
        "".join(
            json.dumps(
                {
                    "item_id": f"cal-{i}",
                    "dataset": "MedHC",
                    "dimension": "knowledge_qa",
                    "question": QUESTION,
                    "key_points": POINTS,
                    "answer": f"第{i}份回答：" + "，".join(POINTS[: i % 4]),
                    "score": round(10 * (i % 4) / 3),
                    "rater_id": "dr-zhao",
                },
                ensure_ascii=False,
            )
            + "\n"
            for i in range(24)
        ),
        encoding="utf-8",
    )
    sign_in(b, app_url, stack.admin_key)
    b.get(f"{app_url}/import")
    assert status_of(b) == "Import ratings"
    found = b._call("POST", "/element", {"using": "css selector", "value": "#file"})  # noqa: SLF001
    b._call("POST", f"/element/{found[ELEMENT]}/value", {"text": str(ratings)})  # noqa: SLF001
    tab_to(b, {"id": "upload"})
    b.press_and_load(ENTER)
    assert "24 imported" in b.text("#import-result")

    b.get(f"{app_url}/calibration/generic")
    tab_to(b, {"id": "measure"})
    b.press_and_load(ENTER)

    async def measured() -> object:
        latest = await admin.calibration("generic")
        return latest if latest.n >= 25 else None

    calibration = await eventually(measured, 60, "the calibration with the imported ratings")
    b.get(f"{app_url}/calibration/generic")
    assert b.text("#n") == str(calibration.n) == "25"
    q = calibration.quadratic
    assert b.text("#kappa") == f"{q.kappa:.3f} [{q.low:.3f}, {q.high:.3f}]"
    assert b.text("#verdict") == "Not calibrated: not admitted for official scoring"
    assert "MEDBENCH_JUDGE__MIN_RATINGS" in b.text("main")
    assert b.text("#confusion") != "None"
    b.screenshot(ARTIFACTS / "calibration.png")


def test_the_local_stack_serves_the_review_app_with_a_reviewer_key(
    stack: ServiceStack, tmp_path: Path
) -> None:
    """What `make run` starts: the app as its own process, and a reviewer key that signs in."""
    (tmp_path / "services").mkdir()
    url = start_review(tmp_path, stack)
    try:
        key_file = reviewer_key(tmp_path, stack)
        assert key_file.stat().st_mode & 0o077 == 0
        with httpx.Client(base_url=url.rstrip("/"), timeout=30) as http:
            form = http.get("/signin")
            assert form.status_code == 200
            csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            signed = http.post("/signin", data={"csrf": csrf, "key": key_file.read_text().strip()})
            assert signed.status_code == 303, signed.text
            assert http.get("/").status_code == 200
    finally:
        stop_review(tmp_path)
    assert not (tmp_path / "review.json").exists()
