"""A judge that sees images, through the stack: a multimodal open-ended (MedVQA) self-test run
in API mode, judged by a panel of a text judge and a vision judge (fake OpenAI-compatible
endpoints on loopback). The items with images reach the vision judge only, with their images as
content parts whose bytes are the bank's own (not the tenant's watermarked copies), in the
item's order; the text-only item goes to both judges."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from medbench.common.v1 import common_pb2
from medbench.submission.v1 import submission_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client.api import AdminClient, channel
from medbench_client.bank_files import import_item
from medbench_devstack.services import ServiceStack
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
from tests.e2e.fake_endpoint import FakeEndpoint, Script
from tests.e2e.fake_judge import fenced_answer
from tests.e2e.harness import eventually, partner_client

pytestmark = [pytest.mark.e2e]

IMAGES = Path(__file__).resolve().parents[1] / "data/pneumoniamnist"
BANK = {name: (IMAGES / name).read_bytes() for name in ("test_0001.png", "test_0023.png")}
# Case markers without digits (a canary may alter numbers in a prompt).
ITEMS = {
    "vqa-one": ("病例甲", ["test_0001.png"]),
    "vqa-two": ("病例乙", ["test_0023.png", "test_0001.png"]),
    "vqa-text": ("病例丙", []),
}


class Seen:
    """What one judge endpoint received, per case marker: the image parts' (media type, bytes)."""

    def __init__(self) -> None:
        self.images: dict[str, list[list[tuple[str, bytes]]]] = {}
        self.lock = threading.Lock()


def judge(seen: Seen) -> Any:
    """A Script.reply: records the images of the judge's user message, answers a verdict."""

    def reply(messages: list[dict[str, Any]]) -> str:
        content = next(m["content"] for m in messages if m["role"] == "user")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        images = []
        for part in parts:
            if part["type"] == "image_url":
                head, data = part["image_url"]["url"].split(",", 1)
                images.append((head.removeprefix("data:").removesuffix(";base64"), data))
        fenced_answer(text)  # the answer is fenced as always
        case = next(
            marker for marker, _ in ITEMS.values() if marker in text.split("【参考答案】")[0]
        )
        with seen.lock:
            seen.images.setdefault(case, []).append(
                [(media, base64.b64decode(data)) for media, data in images]
            )
        verdict = {"score": 8 if images else 5, "key_points_covered": [1], "rationale": "据图"}
        return json.dumps(verdict, ensure_ascii=False)

    return reply


@pytest.fixture(scope="module")
def judges() -> Iterator[tuple[FakeEndpoint, Seen, FakeEndpoint, Seen]]:
    text_seen, vision_seen = Seen(), Seen()
    text = FakeEndpoint(Script(answer=str, model="judge-text", reply=judge(text_seen)))
    vision = FakeEndpoint(Script(answer=str, model="judge-vl", reply=judge(vision_seen)))
    with text, vision:
        yield text, text_seen, vision, vision_seen


@pytest.fixture(scope="module")
def stack(
    servers: Servers,
    tmp_path_factory: pytest.TempPathFactory,
    judges: tuple[FakeEndpoint, Seen, FakeEndpoint, Seen],
) -> Iterator[ServiceStack]:
    text, _, vision, _ = judges
    models = [
        {"model": "judge-text", "base_url": text.base_url, "api_key": "secret-key"},
        {"model": "judge-vl", "base_url": vision.base_url, "api_key": "secret-key", "vision": True},
    ]
    env = {
        "MEDBENCH_JUDGE__MODELS": json.dumps(models),
        "MEDBENCH_JUDGE__PANEL_RULE": "mean",
        "MEDBENCH_JUDGE__RETRY_BASE_DELAY_S": "0.01",
    }
    with running_stack(servers, tmp_path_factory, "vision", env) as services:
        yield services


async def test_image_answers_reach_the_vision_judge_with_the_items_own_bank_images(
    stack: ServiceStack, judges: tuple[FakeEndpoint, Seen, FakeEndpoint, Seen]
) -> None:
    _, text_seen, _, vision_seen = judges
    admin = AdminClient(channel(stack.address("rotator"), stack.admin_key))
    items = []
    for item_id, (marker, paths) in ITEMS.items():
        item = import_item(
            {
                "item_id": item_id,
                "dataset": "MedVQA",
                "track": "multimodal",
                "answer_format": "free_text",
                "question": f"{marker}：请描述所附胸部X光片的主要所见，并给出诊断意见。",
                "image_paths": paths,
                "reference": ["双肺纹理清晰，未见实变影，诊断：正常胸片。"],
                "key_points": ["未见实变", "正常"],
            }
        )
        for path in paths:
            item.images.append(taskpool_pb2.ImageBlob(path=path, content=BANK[path]))
        items.append(item)
    done = await admin.import_items(items)
    assert (done.imported, len(done.rejected)) == (3, 0), done
    await admin.publish(
        "vision-pool", track=common_pb2.TRACK_MULTIMODAL, board=taskpool_pb2.BOARD_API
    )

    with FakeEndpoint(Script(answer=lambda question: "双肺未见实变影，正常胸片。")) as model:
        partner = partner_client(stack, "hospital-vision")
        created = await partner.create(
            "vision-run",
            "vision-model",
            track=common_pb2.TRACK_MULTIMODAL,
            mode=common_pb2.SUBMISSION_MODE_API,
            endpoint=submission_pb2.Endpoint(
                base_url=model.base_url,
                model="test-model",
                api_key="secret-key",
                max_concurrency=4,
                # Judged at once by the uncalibrated judges (an official run would be parked).
                self_test=True,
            ),
        )
        sid = created.submission.submission_id

        async def completed() -> bool:
            return (await partner.get(sid)).state == submission_pb2.SUBMISSION_STATE_COMPLETED

        await eventually(completed, 120, "the multimodal self-test run", interval_s=0.3)
        report = await partner.report(sid)

    # Each image item reached the vision judge once, with its own bank images, in order.
    for marker, paths in (ITEMS["vqa-one"], ITEMS["vqa-two"]):
        [received] = vision_seen.images[marker]
        assert [media for media, _ in received] == ["image/png"] * len(paths)
        assert [hashlib.sha256(c).hexdigest() for _, c in received] == [
            hashlib.sha256(BANK[p]).hexdigest() for p in paths
        ], marker
        # ... and never to the text judge.
        assert marker not in text_seen.images
    # The text-only item went to both judges, as text.
    assert vision_seen.images["病例丙"] == [[]] and text_seen.images["病例丙"] == [[]]
    [dataset] = [d for d in report.datasets if d.dataset == "MedVQA"]
    assert dataset.items == 3 and dataset.metric == "key_point_recall+judge"
