"""Leak tracing on every track (issue 22, item 4): a leaker downloads a pool and posts it, and
`TaskPoolService.TraceLeak` names the leaker's tenant whatever the track and answer format,
not only for multiple-choice items (tests/e2e/test_leak_tracing.py covers those).

One pool per track, none with a multiple-choice item: the LLM track's open-ended datasets
(free text with key points), the multimodal track's MedClass (a label from named candidates,
with a chest X-ray) and MedVQA (free text on an image), the agent track's MedIntentID (a label)
and MedDecomp (free text, judged). Two tenants download each pool; one of them posts its whole
download, in the MedBench upload format with the item ids, or as bare questions, with the images
it downloaded (DownloadImages: each tenant gets its own watermarked copies). The trace must name
that tenant first, on conclusive evidence (a canary of its download, one of its watermarked
images, or a match no other download reaches by chance: <= 1e-6), and no other tenant as well.
The bank's own questions and images name nobody."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from medbench.common.v1 import common_pb2
from medbench.submission.v1 import submission_service_pb2, submission_service_pb2_grpc
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_client.api import AdminClient, PartnerClient, channel, service_stub
from medbench_client.bank_files import import_item
from medbench_devstack.services import ServiceStack
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
from tests.e2e.harness import admin_channel, partner_key

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
XRAYS = sorted((ROOT / "tests/data/pneumoniamnist").glob("*.png"))
TRACKS = {
    "llm": common_pb2.TRACK_LLM,
    "multimodal": common_pb2.TRACK_MULTIMODAL,
    "agent": common_pb2.TRACK_AGENT,
}
# Fictitious, written for this test.
HC = [
    ("高血压患者日常生活中应注意什么？", ["低盐饮食", "规律服药", "监测血压"]),
    ("2型糖尿病患者如何进行足部护理？", ["每日检查双足", "温水洗脚", "避免赤足行走"]),
    ("慢性阻塞性肺疾病患者如何进行呼吸训练？", ["缩唇呼吸", "腹式呼吸", "循序渐进"]),
    ("痛风急性发作期饮食上应注意什么？", ["低嘌呤饮食", "多饮水", "戒酒"]),
]
SUMMARY = [
    ("请概括以下病历：患者男，62岁，反复胸痛3年，加重1天，心电图ST段抬高。", ["急性心肌梗死"]),
    ("请概括以下病历：患者女，35岁，发热伴尿频尿急2天，尿常规白细胞阳性。", ["尿路感染"]),
    ("请概括以下病历：患者男，8岁，咳嗽伴喘息1周，既往有过敏史。", ["支气管哮喘"]),
]
INTENTS = ("病情咨询", "用药咨询", "预约挂号", "费用争议投诉")
DIALOGUES = [
    ("预约挂号", "患者：我想挂明天上午心内科的号。"),
    ("用药咨询", "患者：这个降压药饭前吃还是饭后吃？"),
    ("费用争议投诉", "患者：账单比医生说的多了三百元，我要投诉。"),
    ("病情咨询", "患者：最近总是胸闷，是怎么回事？"),
]
PLANS = [
    "请将“为一名新确诊的2型糖尿病患者制定出院随访计划”分解为可执行的子任务。",
    "请将“协调一次多学科会诊讨论晚期肺癌治疗方案”分解为可执行的子任务。",
    "请将“为术后患者安排康复训练与复诊”分解为可执行的子任务。",
]


def _rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for n, (question, points) in enumerate(HC):
        rows.append(
            {
                "item_id": f"trk-hc-{n}",
                "dataset": "MedHC",
                "track": "llm",
                "answer_format": "free_text",
                "question": question,
                "reference": ["，".join(points) + "。"],
                "key_points": points,
                "specialties": ["IM.CARD"],
            }
        )
    for n, (question, points) in enumerate(SUMMARY):
        rows.append(
            {
                "item_id": f"trk-sum-{n}",
                "dataset": "MedSummary",
                "track": "llm",
                "answer_format": "free_text",
                "question": question,
                "reference": [points[0]],
                "key_points": points,
                "specialties": ["IM.GERI"],
            }
        )
    for n, xray in enumerate(XRAYS):
        path = f"trk/{xray.name}"
        label = "肺炎" if n >= 2 else "正常"
        rows.append(
            {
                "item_id": f"trk-cls-{n}",
                "dataset": "MedClass",
                "track": "multimodal",
                "answer_format": "label",
                "question": f"第{n + 1}例：请判断这张胸部X线片的诊断。候选诊断：正常、肺炎",
                "image_paths": [path],
                "reference": [label, "肺炎" if label == "正常" else "正常"],
                "specialties": ["RAD.DX"],
            }
        )
        rows.append(
            {
                "item_id": f"trk-vqa-{n}",
                "dataset": "MedVQA",
                "track": "multimodal",
                "answer_format": "free_text",
                "question": f"第{n + 1}例：请描述这张胸部X线片的主要表现，并给出诊断依据。",
                "image_paths": [path],
                "reference": [f"{label}。"],
                "key_points": [label],
                "specialties": ["RAD.DX"],
            }
        )
    for n, (label, dialogue) in enumerate(DIALOGUES):
        rows.append(
            {
                "item_id": f"trk-intent-{n}",
                "dataset": "MedIntentID",
                "track": "agent",
                "answer_format": "label",
                "question": (
                    "## 任务类型：医疗场景感知与交互--意图识别\n预定义的意图识别："
                    + "、".join(INTENTS)
                    + f"\n请问下面属于哪个意图标签？\n历史对话：{dialogue}"
                ),
                "reference": [label, *(i for i in INTENTS if i != label)],
                "specialties": ["IM.GERI"],
            }
        )
    for n, question in enumerate(PLANS):
        rows.append(
            {
                "item_id": f"trk-plan-{n}",
                "dataset": "MedDecomp",
                "track": "agent",
                "answer_format": "free_text",
                "question": question,
                "reference": ["明确目标；分解步骤；分配责任人；设定时间节点；评估反馈。"],
                "specialties": ["IM.GERI"],
            }
        )
    return rows


ROWS = _rows()
TENANTS = ("trk-leaker", "trk-bystander")
Line = dict[str, Any]
"""item_id, question, and for an item with an image the bytes its tenant downloaded (image)."""


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    with running_stack(servers, tmp_path_factory, "leaktracks") as services:
        yield services


@pytest.fixture(scope="module")
async def downloads(stack: ServiceStack) -> dict[tuple[str, str], tuple[str, list[Line]]]:
    """(track, tenant) -> (submission id, the download's lines: item id, question and, for the
    multimodal track, the item's image as DownloadImages served it to the tenant)."""
    images = {f"trk/{x.name}": x.read_bytes() for x in XRAYS}
    items = []
    for row in ROWS:
        item = import_item(row, track=row["track"])
        for path in row.get("image_paths", []):
            item.images.append(
                taskpool_pb2.ImageBlob(path=path, content=images[path], media_type="image/png")
            )
        items.append(item)
    admin = AdminClient(admin_channel(stack, "rotator"))
    done = await admin.import_items(items)
    assert done.imported == len(ROWS) and not done.rejected, done
    for track, enum in TRACKS.items():
        await admin.publish(f"trk-{track}", track=enum)
    out = {}
    for track, enum in TRACKS.items():
        for tenant in TENANTS:
            key = await asyncio.to_thread(partner_key, stack, tenant)
            client = PartnerClient(channel(stack.address("gateway"), key))
            created = await client.create(f"trk-{track}", f"m-{track}", track=enum)
            sid = created.submission.submission_id
            prompts = await client.prompts(sid)
            lines: list[Line] = [{"item_id": p.item_id, "question": p.question} for p in prompts]
            if track == "multimodal":
                images = await downloaded_images(stack, key, sid)
                for line in lines:
                    line["image"] = images[line["item_id"]]
            out[track, tenant] = (sid, lines)
    return out


async def downloaded_images(stack: ServiceStack, key: str, sid: str) -> dict[str, bytes]:
    """item id -> its (first) image as the gateway's DownloadImages streams it to the key's
    tenant, checked against the announced sha256."""
    stub = submission_service_pb2_grpc.SubmissionServiceStub(channel(stack.address("gateway"), key))
    request = submission_service_pb2.DownloadImagesRequest(submission_id=sid)
    by_item: dict[str, bytes] = {}
    info: Any = None
    data = b""

    def done() -> None:
        if info is not None:
            assert hashlib.sha256(data).hexdigest() == info.sha256 == info.image_id
            for use in info.uses:
                by_item.setdefault(use.item_id, data)

    async for message in stub.DownloadImages(request):
        if message.WhichOneof("part") == "image":
            done()
            info, data = message.image, b""
        else:
            data += message.chunk.data
    done()
    return by_item


async def trace(stack: ServiceStack, lines: list[Line]) -> taskpool_service_pb2.TraceLeakResponse:
    stub = service_stub(
        taskpool_service_pb2_grpc.TaskPoolServiceStub, admin_channel(stack, "rotator")
    )

    async def messages() -> AsyncIterator[taskpool_service_pb2.TraceLeakRequest]:
        yield taskpool_service_pb2.TraceLeakRequest(
            items=[
                taskpool_pb2.LeakedItem(
                    item_id=x.get("item_id", ""), question=x["question"], image=x.get("image", b"")
                )
                for x in lines
            ]
        )

    response: taskpool_service_pb2.TraceLeakResponse = await stub.TraceLeak(messages())
    return response


def evidence(s: taskpool_pb2.LeakSuspect) -> tuple[int, int]:
    return (s.canary_hits + s.image_hits, s.matched_items)


def describe(response: taskpool_service_pb2.TraceLeakResponse) -> str:
    return (
        "; ".join(
            f"{s.tenant_id} {s.submission_id}: canaries {s.canary_hits}, images "
            f"{s.image_hits}, matched "
            f"{s.matched_items}/{s.checked_items}, chance {s.chance:.1e}"
            for s in response.suspects
        )
        or "no suspect"
    )


# Canaries are altered pool items (choice options reordered; an age moved; a label's candidate
# list or an enumeration of the question reordered). The multimodal fixtures name two candidates
# (one other order) and their free-text items have no age and no enumeration: their text alone
# cannot tell two tenants apart, the watermarked images they downloaded do.


@pytest.mark.parametrize("with_ids", [True, False], ids=["with-ids", "questions-only"])
@pytest.mark.parametrize("track", sorted(TRACKS))
async def test_a_posted_download_names_its_tenant(
    stack: ServiceStack,
    downloads: dict[tuple[str, str], tuple[str, list[Line]]],
    track: str,
    with_ids: bool,
) -> None:
    sid, lines = downloads[track, "trk-leaker"]
    posted = lines if with_ids else [{k: v for k, v in x.items() if k != "item_id"} for x in lines]
    response = await trace(stack, posted)
    assert response.lines == len(posted)
    told = f"{track}, {len(posted)} lines: {describe(response)}"
    assert response.suspects, f"TraceLeak names nobody for a posted {told}"
    top = response.suspects[0]
    assert top.tenant_id == "trk-leaker" and top.submission_id == sid, told
    assert top.canary_hits + top.image_hits >= 1 or top.chance <= 1e-6, f"inconclusive: {told}"
    others = [s for s in response.suspects if s.tenant_id != "trk-leaker"]
    assert all(evidence(s) < evidence(top) for s in others), told


async def test_the_banks_own_questions_name_nobody(
    stack: ServiceStack, downloads: dict[tuple[str, str], tuple[str, list[Line]]]
) -> None:
    """A file of the bank's questions as imported (no tenant's download) is traced to no one."""
    bank = [{"item_id": r["item_id"], "question": r["question"]} for r in ROWS]
    response = await trace(stack, bank)
    assert not response.suspects, describe(response)


@pytest.mark.parametrize("resave", [False, True], ids=["as-imported", "resaved"])
async def test_the_banks_own_images_name_nobody(
    stack: ServiceStack, downloads: dict[tuple[str, str], tuple[str, list[Line]]], resave: bool
) -> None:
    """The bank's images as imported (or re-saved losslessly) with the bank's questions, with
    and without ids, name no one: only a tenant's watermarked copy is evidence."""
    images = {f"trk/{x.name}": x.read_bytes() for x in XRAYS}
    lines: list[Line] = []
    for r in ROWS:
        if r["track"] == "multimodal":
            image = images[r["image_paths"][0]]
            lines.append(
                {
                    "item_id": r["item_id"],
                    "question": r["question"],
                    "image": resaved(image) if resave else image,
                }
            )
    for posted in (lines, [{"question": x["question"], "image": x["image"]} for x in lines]):
        response = await trace(stack, posted)
        assert not response.suspects, describe(response)


async def test_images_resaved_without_their_metadata_still_name_their_tenant(
    stack: ServiceStack, downloads: dict[tuple[str, str], tuple[str, list[Line]]]
) -> None:
    """The leaker's images re-saved losslessly by another tool (metadata dropped, another
    compression, a tool's own text chunk), posted alone under no id: the watermark in their
    pixels names the leaker."""
    sid, lines = downloads["multimodal", "trk-leaker"]
    posted = [{"question": "", "image": resaved(x["image"])} for x in lines]
    assert all(p["image"] != x["image"] for p, x in zip(posted, lines, strict=True))
    response = await trace(stack, posted)
    told = describe(response)
    assert response.suspects, told
    top = response.suspects[0]
    assert (top.tenant_id, top.submission_id) == ("trk-leaker", sid), told
    assert top.image_hits == len(XRAYS) and top.chance <= 1e-6, told
    assert all(s.tenant_id == "trk-leaker" for s in response.suspects), told


def resaved(content: bytes) -> bytes:
    """A lossless re-save by another tool: the same pixels, the original's ancillary chunks
    dropped and the tool's own added, the highest compression."""
    image = Image.open(io.BytesIO(content))
    out = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "another tool")
    Image.frombytes(image.mode, image.size, image.tobytes()).save(
        out, format="PNG", compress_level=9, pnginfo=info
    )
    return out.getvalue()
