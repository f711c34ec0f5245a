"""A judge that sees images: the request shape (text part, then the bank's images as data URLs),
hashes that cover the images, and the use case with fakes (vision judges only, parking without
one, an image missing from the bank, an outage of the rotator)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from dataclasses import replace
from typing import Any

import pytest
from PIL import Image

from judge_scorer.core.prompt import JudgeImage, build_messages, prompt_hash
from judge_scorer.core.rubric import load_rubrics
from judge_scorer.usecases.judging import Judging
from judge_scorer.usecases.panel import PROMPT_FORMAT, JudgeInput, NoVisionJudge, Panel, cache_key
from medbench.scoring.v1 import scoring_events_pb2 as ev
from medbench_storage.pool_keys import PoolKey
from tests.services.judge_scorer.fakes import (
    FakeJudge,
    InMemoryImages,
    InMemoryJudgeStore,
    InMemoryPoolKeys,
    InMemoryPublisher,
)

RUBRICS = load_rubrics()
VQA = RUBRICS.for_dataset("MedVQA")


def png(colour: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def image(content: bytes, media_type: str = "image/png") -> JudgeImage:
    return JudgeImage(hashlib.sha256(content).hexdigest(), media_type, content)


CT, XRAY = image(png((200, 10, 10))), image(png((10, 10, 200), (5, 9)))
ITEM: dict[str, Any] = {
    "question": "请描述图 1 与图 2 的主要影像所见。",
    "reference": "右肺下叶实变影，考虑肺炎。",
    "key_points": ["右肺下叶实变", "肺炎"],
    "answer": "右下肺可见片状实变影，提示肺炎。",
}


def decoded(part: dict[str, Any]) -> tuple[str, bytes]:
    """(media type, bytes) of an image_url part's data URL."""
    assert part["type"] == "image_url"
    head, data = part["image_url"]["url"].split(",", 1)
    assert head.startswith("data:") and head.endswith(";base64")
    return head.removeprefix("data:").removesuffix(";base64"), base64.b64decode(data)


# -- the request shape ----------------------------------------------------------------------


def test_images_follow_the_text_as_data_urls_of_the_bank_bytes_in_the_items_order() -> None:
    system, user = build_messages(VQA, **ITEM, images=[CT, XRAY])
    assert system["role"] == "system" and isinstance(system["content"], str)
    assert user["role"] == "user"
    text, first, second = user["content"]
    assert text["type"] == "text" and "右肺下叶实变影" in text["text"]
    assert "本题附有 2 张图像" in text["text"] and "【待评回答】" in text["text"]
    assert decoded(first) == ("image/png", CT.content)
    assert decoded(second) == ("image/png", XRAY.content)
    # The order is the item's: swapped images, swapped parts.
    _, swapped = build_messages(VQA, **ITEM, images=[XRAY, CT])
    assert [decoded(p)[1] for p in swapped["content"][1:]] == [XRAY.content, CT.content]


def test_an_item_without_images_gets_the_text_only_messages_it_always_got() -> None:
    plain = build_messages(VQA, **ITEM)
    assert plain == build_messages(VQA, **ITEM, images=())
    assert all(isinstance(m["content"], str) for m in plain)
    assert "【图像】" not in plain[1]["content"]


def test_the_prompt_hash_changes_with_the_images_bytes_and_order() -> None:
    hashes = {
        prompt_hash(build_messages(VQA, **ITEM, images=images))
        for images in ([], [CT], [XRAY], [CT, XRAY], [XRAY, CT])
    }
    assert len(hashes) == 5
    # One pixel changed is another image: another hash.
    other = image(png((200, 10, 11)))
    assert prompt_hash(build_messages(VQA, **ITEM, images=[other])) != prompt_hash(
        build_messages(VQA, **ITEM, images=[CT])
    )
    # ... and the same image again, the same hash (cached verdicts stay reusable).
    assert prompt_hash(build_messages(VQA, **ITEM, images=[image(CT.content)])) == prompt_hash(
        build_messages(VQA, **ITEM, images=[CT])
    )


def test_cached_verdicts_never_mix_images() -> None:
    text = JudgeInput(VQA, ITEM["question"], ITEM["reference"], tuple(ITEM["key_points"]), "答")
    keys = {
        cache_key("vlm", item)
        for item in (text, replace(text, images=(CT,)), replace(text, images=(XRAY,)))
    }
    assert len(keys) == 3
    # A text item's key is what it was before images were sent (its cached verdicts stay).
    parts = ["vlm", VQA.content_hash, PROMPT_FORMAT, ITEM["question"], ITEM["reference"],
             f"key_points:{len(ITEM['key_points'])}", *ITEM["key_points"], "答"]  # fmt: skip
    before = hashlib.sha256(b"".join(p.encode() + b"\0" for p in parts)).hexdigest()
    assert cache_key("vlm", text) == before


# -- the use case with fakes ----------------------------------------------------------------

POOL = [
    PoolKey("VQA-1", "MedVQA", "multimodal", "VQA-1", "judge", "mean", (ITEM["reference"],),
            tuple(ITEM["key_points"]), prompt=ITEM["question"],
            image_ids=(CT.image_id, XRAY.image_id)),
    PoolKey("VQA-2", "MedVQA", "multimodal", "VQA-2", "judge", "mean", ("未见异常。",),
            prompt="这张胸片有异常吗？", image_ids=()),
]  # fmt: skip
CONTEXT = ev.ScoringContext(submission_id="sub-v", tenant_id="hospital-a", pool_id="pool-v")


def request(self_test: bool = True) -> ev.JudgeRequested:
    return ev.JudgeRequested(
        event_id="sub-v:b1:judge-requested",
        batch_id="b1",
        context=CONTEXT,
        self_test=self_test,
        track=2,
        tasks=[
            ev.JudgeTask(item_id=k.item_id, dataset=k.dataset, answer=f"回答 {k.item_id}",
                         ordinal=n, dimension=k.dimension, group_id=k.group_id)
            for n, k in enumerate(POOL)
        ],
    )  # fmt: skip


def verdict(points: float) -> str:
    return json.dumps({"score": points, "key_points_covered": [], "rationale": "依据图像"})


def judging(
    *judges: FakeJudge, vision: set[str], bank: InMemoryImages
) -> tuple[Judging, InMemoryJudgeStore, InMemoryPublisher]:
    store, publisher = InMemoryJudgeStore(), InMemoryPublisher()
    panel = Panel(list(judges), store, "median", vision=vision)
    use_case = Judging(
        panel,
        RUBRICS,
        store,
        InMemoryPoolKeys({"pool-v": POOL}),
        publisher,
        images=bank,
    )
    return use_case, store, publisher


def full_bank() -> InMemoryImages:
    return InMemoryImages({i.image_id: (i.media_type, i.content) for i in (CT, XRAY)})


async def test_an_image_item_goes_to_the_vision_judge_only_with_its_own_bank_images() -> None:
    text_judge = FakeJudge("qwen-text", [verdict(2)])
    vlm = FakeJudge("qwen-vl", [verdict(8), verdict(6)])
    use_case, store, publisher = judging(text_judge, vlm, vision={"qwen-vl"}, bank=full_bank())
    assert await use_case.handle(request()) is True
    [message] = [m.message for m in publisher.messages]
    image_score, text_score = message.scores  # type: ignore[attr-defined]
    assert list(image_score.judge.judge_models) == ["qwen-vl"] and image_score.score == 0.8
    assert list(text_score.judge.judge_models) == ["qwen-text", "qwen-vl"]
    # The text judge never saw the image item; the VLM got it with both images, in order.
    assert len(text_judge.calls) == 1 and "回答 VQA-2" in text_judge.calls[0][1]["content"]
    [with_images] = [c for c in vlm.calls if isinstance(c[1]["content"], list)]
    text, *parts = with_images[1]["content"]
    assert "回答 VQA-1" in text["text"]
    assert [decoded(p)[1] for p in parts] == [CT.content, XRAY.content]
    # Lineage: the judgment names the images and its prompt hash covers them.
    judgment = store.judgments_["sub-v:VQA-1"]
    assert judgment["image_ids"] == [CT.image_id, XRAY.image_id]
    assert judgment["rubric"] == "imaging_multimodal v2"
    assert judgment["prompt_hash"] == image_score.judge.prompt_hash == prompt_hash(with_images)


async def test_without_a_vision_judge_an_image_request_is_parked_never_judged_blind() -> None:
    bank = full_bank()
    text_judge = FakeJudge("qwen-text", [])
    use_case, store, publisher = judging(text_judge, vision=set(), bank=bank)
    assert await use_case.handle(request()) is False
    assert publisher.messages == [] and text_judge.calls == [] and bank.fetched == []
    [parked] = store.parked_.values()
    assert "vision" in parked["reason"] and "MEDBENCH_JUDGE__MODELS" in parked["reason"]
    # Start-up without one releases nothing...
    assert await use_case.release_parked() == 0 and len(store.parked_) == 1
    # ... and with a VLM configured it is judged (a self-test: no calibration needed).
    vlm = FakeJudge("qwen-vl", [verdict(9), verdict(7)])
    again = Judging(
        Panel([vlm], store, vision={"qwen-vl"}),
        RUBRICS,
        store,
        InMemoryPoolKeys({"pool-v": POOL}),
        publisher,
        images=bank,
    )
    assert await again.release_parked() == 1
    assert store.parked_ == {} and len(publisher.messages) == 1


async def test_an_image_missing_from_the_bank_makes_its_item_unscorable_with_the_reason() -> None:
    bank = InMemoryImages({CT.image_id: (CT.media_type, CT.content)})  # XRAY is missing
    vlm = FakeJudge("qwen-vl", [verdict(7)])
    use_case, store, publisher = judging(vlm, vision={"qwen-vl"}, bank=bank)
    assert await use_case.handle(request()) is True
    image_score, text_score = publisher.messages[0].message.scores  # type: ignore[attr-defined]
    assert image_score.unscored and image_score.score == 0.0
    assert not text_score.unscored and text_score.score == 0.7
    [judged] = vlm.calls  # only the text item reached the judge
    assert isinstance(judged[1]["content"], str)
    [outcome] = store.judgments_["sub-v:VQA-1"]["verdicts"]
    assert outcome["error"].startswith("unscorable:") and XRAY.image_id in outcome["error"]
    assert "not in the bank" in outcome["error"]


async def test_bytes_that_are_not_the_image_their_id_names_are_not_shown() -> None:
    bank = full_bank()
    bank.images[XRAY.image_id] = ("image/png", CT.content)
    vlm = FakeJudge("qwen-vl", [verdict(7)])
    use_case, store, publisher = judging(vlm, vision={"qwen-vl"}, bank=bank)
    await use_case.handle(request())
    image_score, _ = publisher.messages[0].message.scores  # type: ignore[attr-defined]
    assert image_score.unscored
    assert "hash to" in store.judgments_["sub-v:VQA-1"]["verdicts"][0]["error"]


async def test_an_outage_of_the_image_source_fails_the_request_for_a_later_retry() -> None:
    bank = full_bank()
    bank.down = True
    vlm = FakeJudge("qwen-vl", [])
    use_case, store, publisher = judging(vlm, vision={"qwen-vl"}, bank=bank)
    with pytest.raises(ConnectionError):
        await use_case.handle(request())
    assert publisher.messages == [] and store.judgments_ == {} and vlm.calls == []
    assert store.parked_ == {}


def test_a_panel_without_a_vision_judge_refuses_an_item_with_images() -> None:
    panel = Panel([FakeJudge("qwen-text", [])], InMemoryJudgeStore())
    item = JudgeInput(VQA, "q", "r", (), "a", images=(CT,))
    assert not panel.sees_images
    with pytest.raises(NoVisionJudge, match="vision"):
        panel.judges_of(item)
