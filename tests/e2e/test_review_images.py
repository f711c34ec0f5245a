"""A review of an image item shows its images, in a real headless Chromium against a running
stack: a multimodal item with two chest X-rays is imported into the task bank (the rotator), a
review of it is opened in the judge scorer's store as the panel opens one (with the item's bank
image ids), and the reviewer who claims it sees both images inline: each <img> loads
(naturalWidth > 0) from the app's own route, whose bytes are the bank's own (the judge scorer
reads them from the rotator with its service token), with the right Content-Type, no-store and
nosniff; the link to open an image full size is reachable with Tab. Another reviewer, without
the claim, gets 403 for the same image.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from medbench.identity.v1 import access_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client.api import AdminClient, channel
from medbench_client.bank_files import import_item
from medbench_devstack.services import ServiceStack
from tests.conftest import Servers
from tests.e2e.browser import Browser
from tests.e2e.conftest import running_stack
from tests.e2e.harness import partner_key
from tests.e2e.test_review_app import ARTIFACTS, ENTER, sign_in, tab_to

pytestmark = [pytest.mark.e2e]

IMAGES = Path(__file__).resolve().parents[1] / "data/pneumoniamnist"
PATHS = ["test_0023.png", "test_0001.png"]  # the item's order
BANK = {name: (IMAGES / name).read_bytes() for name in PATHS}
IDS = [hashlib.sha256(BANK[p]).hexdigest() for p in PATHS]
REVIEW_ID = "cd" * 12
QUESTION = "请描述所附两张胸部X光片的主要所见。"


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    # No judge model: the review queue and its images need none.
    with running_stack(servers, tmp_path_factory, "reviewimg") as services:
        yield services


async def import_image_item(stack: ServiceStack) -> None:
    admin = AdminClient(channel(stack.address("rotator"), stack.admin_key))
    item = import_item(
        {
            "item_id": "vqa-review",
            "dataset": "MedVQA",
            "track": "multimodal",
            "answer_format": "free_text",
            "question": QUESTION,
            "image_paths": PATHS,
            "reference": ["双肺纹理清晰，未见实变影。"],
            "key_points": ["未见实变"],
        }
    )
    for path in PATHS:
        item.images.append(taskpool_pb2.ImageBlob(path=path, content=BANK[path]))
    done = await admin.import_items([item])
    assert (done.imported, len(done.rejected)) == (1, 0), done


@pytest.fixture(scope="module")
def image_review(stack: ServiceStack, servers: Servers) -> str:
    asyncio.run(import_image_item(stack))
    database = stack.env("judge_scorer")["MEDBENCH_MONGO__DATABASE"]
    with MongoClient(servers.mongo_uri) as client:
        client[database].reviews.insert_one(
            {
                "_id": REVIEW_ID,
                "state": "open",
                "item_id": "secret-item-of-hospital-y",
                "dataset": "MedVQA",
                "dimension": "multimodal",
                "rubric_id": "imaging_multimodal",
                "rubric_version": 2,
                "question": QUESTION,
                "reference": "双肺纹理清晰，未见实变影。",
                "key_points": ["未见实变"],
                "answer": "右下肺可见片状实变影。",
                # As Judging._open_review stores them: the bank ids of the images judged.
                "image_ids": IDS,
                "judge_scores": [2.0, 9.0],
                "created_at": datetime.now(UTC),
            }
        )
    return REVIEW_ID


def loaded(b: Browser, deadline_s: float = 30) -> list[dict[str, object]]:
    """The review page's images once every one has finished loading (or failed)."""
    script = (
        "return [...document.querySelectorAll('.images img')].map(i => "
        "({src: i.getAttribute('src'), alt: i.alt, complete: i.complete, "
        "width: i.naturalWidth, height: i.naturalHeight}))"
    )
    deadline = time.monotonic() + deadline_s
    while True:
        images: list[dict[str, object]] = b.js(script)
        if images and all(i["complete"] for i in images):
            return images
        if time.monotonic() > deadline:
            raise AssertionError(f"the images did not finish loading in {deadline_s} s: {images}")
        time.sleep(0.1)


def fetched(b: Browser, url: str) -> httpx.Response:
    """url fetched with the browser's session cookie (the page's CSP allows no fetch() from
    script: default-src 'none')."""
    cookie = b._call("GET", "/cookie/mbr_session")  # noqa: SLF001 - HttpOnly: WebDriver only
    with httpx.Client(timeout=30) as http:
        return http.get(url, headers={"Cookie": f"mbr_session={cookie['value']}"})


def test_the_claiming_reviewer_sees_the_items_bank_images(
    stack: ServiceStack, image_review: str, app_url: str, browser: Browser
) -> None:
    b = browser
    reviewer = partner_key(stack, "physicians", access_pb2.ROLE_REVIEWER)
    sign_in(b, app_url, reviewer)
    tab_to(b, {"id": "claim"})
    b.press_and_load(ENTER)
    assert b.url.endswith(f"/review/{image_review}")
    html = b.js("return document.documentElement.outerHTML")
    assert "secret-item-of-hospital-y" not in html and "9.0" not in html

    images = loaded(b)
    assert [i["src"] for i in images] == [f"/review/{image_review}/image/{i}" for i in IDS]
    # Each loaded: a decoded 28x28 PNG, not a broken image.
    assert [(i["width"], i["height"]) for i in images] == [(28, 28), (28, 28)]
    assert images[0]["alt"] == f"题目图像 1/2（编号 {IDS[0][:12]}）"
    for image, path in zip(images, PATHS, strict=True):
        got = fetched(b, f"{app_url}{image['src']}")
        assert got.status_code == 200
        assert (got.headers["content-type"], got.headers["cache-control"]) == (
            "image/png",
            "no-store",
        )
        assert got.headers["x-content-type-options"] == "nosniff"
        # The bank's own bytes, exactly as imported (never a tenant's watermarked copy).
        assert got.content == BANK[path]
    # Keyboard: the links that open each image full size are reached with Tab.
    tab_to(b, {"id": "open-image-1", "tag": "A"})
    tab_to(b, {"id": "open-image-2", "tag": "A"})
    b.screenshot(ARTIFACTS / "review-images.png")

    # Another reviewer, without the claim: the service refuses the image (403), no bytes.
    # (partner_key makes one key per tenant and role: another tenant's reviewer.)
    other = partner_key(stack, "physicians-b", access_pb2.ROLE_REVIEWER)
    assert other.split("_")[1] != reviewer.split("_")[1]
    with httpx.Client(base_url=app_url, timeout=30) as http:
        form = http.get("/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf
        assert http.post("/signin", data={"csrf": csrf.group(1), "key": other}).status_code == 303
        refused = http.get(f"/review/{image_review}/image/{IDS[0]}")
        assert refused.status_code == 403 and BANK[PATHS[0]] not in refused.content
