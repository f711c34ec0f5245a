"""Images for partners through the running stack: real SAM-Med2D CT slices and PneumoniaMNIST
chest X-rays imported into a multimodal upload pool, downloaded with `medbench images` and
compared byte for byte (sha256) with the tenant's watermarked copies the rotator serves (pixels
within 1 of the originals), resumed after a cut, refused for anything but
the caller's own upload-mode submission; and the largest image an import admits, carried through
every hop (rotator GetImage by ranges, gateway DownloadImages in messages under 1 MiB, the CLI)."""

from __future__ import annotations

import base64
import hashlib
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from PIL import Image

from dispatcher.adapters.rotator_images import RotatorImages as DispatchImages
from dispatcher.core.multimodal import ImageNotSendable, check_images
from judge_scorer.adapters.rotator_images import RotatorImages as JudgeImages
from medbench.common.v1 import common_pb2
from medbench.submission.v1 import (
    submission_pb2,
    submission_service_pb2,
    submission_service_pb2_grpc,
)
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_client.api import MAX_MESSAGE, AdminClient, channel
from medbench_client.bank_files import import_item, read_jsonl
from medbench_client.partner_cli.images import PART_SUFFIX
from medbench_devstack.services import ServiceStack
from medbench_runtime.bearer import authorized_channel
from tests.e2e.fake_endpoint import FakeEndpoint, Script
from tests.e2e.harness import (
    admin_channel,
    eventually,
    partner_client,
    partner_key,
    service_channel,
)
from tests.e2e.test_partner_cli import Cli
from tests.shared_data import shared_path

pytestmark = [pytest.mark.e2e]

MIB = 1024 * 1024
# The gRPC message limit of every service and of the client (MEDBENCH_GRPC_MAX_MESSAGE_BYTES).
LIMIT = 16 * MIB
PNG = b"\x89PNG\r\n\x1a\n"
REFERENCE = "REFERENCE-MARKER-肝脏"
BANK = Path(__file__).resolve().parents[2] / "services/rotator/src/rotator/sample_bank"
UPLOAD_POOL, API_POOL = "images-upload", "images-api"
BIG, BIG_PATH = "big", "big.png"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Bank:
    """What was imported: every pooled image path with its bytes, the largest admitted image,
    and an image in the bank that no pool serves."""

    files: dict[str, bytes] = field(default_factory=dict)
    largest: bytes = b""
    largest_path: str = BIG_PATH
    unpooled_id: str = ""


def row(item_id: str, paths: list[str], keyed: bool = True) -> dict[str, object]:
    return {
        "item_id": item_id,
        "dataset": "MedClass",
        "track": "multimodal",
        "question": "这张医学图像最可能显示的是？A. 肝脏 B. 肺炎 C. 正常",
        "image_paths": paths,
        **({"reference": [REFERENCE]} if keyed else {}),
    }


def with_images(item: taskpool_pb2.ImportItem, images: dict[str, bytes]) -> taskpool_pb2.ImportItem:
    for path, content in images.items():
        item.images.append(taskpool_pb2.ImageBlob(path=path, content=content))
    return item


def largest_item(extra: int = 0) -> taskpool_pb2.ImportItem:
    """A MedClass item whose ImportTasks message is exactly LIMIT bytes (+ extra), and as small
    as an item can be around its image (short id, one-character question and reference), so its
    image is the largest one an import admits. The bytes start like a PNG (the rotator checks
    the first bytes only) and are otherwise a fixed pattern."""
    item = taskpool_pb2.ImportItem(
        task=taskpool_pb2.Task(
            item_id=BIG, dataset="MedClass", question="?", image_paths=[BIG_PATH]
        ),
        key=taskpool_pb2.SealedKey(item_id=BIG, reference=["x"]),
    )
    blob = item.images.add(path=BIG_PATH)

    def pattern(n: int) -> bytes:
        return (PNG + hashlib.sha256(b"big").digest() * (n // 32 + 1))[:n]

    size = LIMIT - 64
    for _ in range(3):  # the length prefixes settle within a step or two
        blob.content = pattern(size)
        size += LIMIT - taskpool_service_pb2.ImportTasksRequest(items=[item]).ByteSize()
    blob.content = pattern(size + extra)
    assert taskpool_service_pb2.ImportTasksRequest(items=[item]).ByteSize() == LIMIT + extra
    return item


@pytest.fixture(scope="module")
async def bank(stack: ServiceStack) -> Bank:
    sam = sorted((shared_path("medbench-data", "sam-med2d-demo-masks") / "images").glob("*.png"))
    xray_dir = shared_path("medbench-data", "pneumoniamnist-test-sample") / "images"
    xrays = sorted(xray_dir.glob("*.png"))[:7]
    assert len(sam) == 5 and len(xrays) == 7
    out = Bank()
    items = []
    for f in sam:
        path = f"MedClass/sam/{f.name}"
        items.append(
            with_images(import_item(row(f"MedClass-sam-{f.stem}", [path])), {path: f.read_bytes()})
        )
        out.files[path] = f.read_bytes()
    for f in xrays[:6]:
        path = f"MedClass/pneumonia/{f.name}"
        items.append(
            with_images(import_item(row(f"MedClass-pn-{f.stem}", [path])), {path: f.read_bytes()})
        )
        out.files[path] = f.read_bytes()
    # Two images of one item, both also used by other items under other paths.
    pair = {
        "MedClass/pair/ct.png": sam[0].read_bytes(),
        "MedClass/pair/xray.png": xrays[0].read_bytes(),
    }
    items.append(with_images(import_item(row("MedClass-pair", list(pair))), pair))
    out.files.update(pair)
    # An image in the bank that no pool serves (its item has no key).
    unpooled = xrays[6].read_bytes()
    items.append(
        with_images(
            import_item(row("MedClass-unkeyed", ["u.png"], keyed=False)), {"u.png": unpooled}
        )
    )
    out.unpooled_id = sha(unpooled)
    admin = AdminClient(admin_channel(stack, "rotator"))
    done = await admin.import_items(items)
    assert (done.imported, len(done.rejected)) == (len(items), 0), done
    big = largest_item()
    done = await admin.import_items([big])
    assert (done.imported, done.images_stored) == (1, 1), done
    out.largest = big.images[0].content
    out.files[out.largest_path] = out.largest
    rotator = taskpool_service_pb2_grpc.TaskPoolServiceStub(admin_channel(stack, "rotator"))
    await rotator.PublishPool(
        taskpool_service_pb2.PublishPoolRequest(
            pool_id=UPLOAD_POOL,
            track=common_pb2.TRACK_MULTIMODAL,
            datasets=["MedClass"],
            board=taskpool_pb2.BOARD_UPLOAD,
        )
    )
    # An API board (LLM track) for the API-mode refusal.
    await admin.import_items([import_item(r) for r in read_jsonl(BANK / "items.jsonl")])
    await admin.publish(API_POOL, board=taskpool_pb2.BOARD_API)
    return out


@pytest.fixture(scope="module")
def endpoint() -> Iterator[FakeEndpoint]:
    with FakeEndpoint(Script(answer=lambda question: "<A>")) as fake:
        yield fake


def gateway_stub(
    stack: ServiceStack, tenant: str
) -> submission_service_pb2_grpc.SubmissionServiceStub:
    return submission_service_pb2_grpc.SubmissionServiceStub(
        channel(stack.address("gateway"), partner_key(stack, tenant))
    )


async def stream(
    stack: ServiceStack, tenant: str, **fields: object
) -> list[submission_service_pb2.DownloadImagesResponse]:
    request = submission_service_pb2.DownloadImagesRequest(**fields)  # type: ignore[arg-type]
    return [m async for m in gateway_stub(stack, tenant).DownloadImages(request)]


async def upload_submission(stack: ServiceStack, tenant: str) -> str:
    created = await partner_client(stack, tenant).create(
        f"img-{uuid.uuid4().hex[:8]}", "img-model", track=common_pb2.TRACK_MULTIMODAL
    )
    assert created.submission.pool_id == UPLOAD_POOL
    return created.submission.submission_id


def cli_for(stack: ServiceStack, tmp_path: Path, tenant: str) -> Cli:
    return Cli(
        tmp_path,
        MEDBENCH_GATEWAY=stack.address("gateway"),
        MEDBENCH_API_KEY=partner_key(stack, tenant),
    )


async def tenant_copies(stack: ServiceStack, tenant: str, bank: Bank) -> dict[str, bytes]:
    """path -> the bytes the rotator serves the tenant for it (its watermarked copy; the
    largest image is no decodable PNG and is served as in the bank)."""
    rotator = taskpool_service_pb2_grpc.TaskPoolServiceStub(service_channel(stack, "rotator"))
    out = {bank.largest_path: bank.largest}
    for path, content in bank.files.items():
        if path != bank.largest_path:
            got = await rotator.GetImage(
                taskpool_service_pb2.GetImageRequest(image_id=sha(content), tenant_id=tenant)
            )
            assert got.served_sha256 == sha(got.content) != sha(content), path
            out[path] = got.content
    return out


def near(copy: bytes, original: bytes) -> bool:
    """The same picture: mode and size, every channel value within 1."""
    a, b = Image.open(io.BytesIO(copy)), Image.open(io.BytesIO(original))
    if (a.mode, a.size) != (b.mode, b.size):
        return False
    return max(abs(x - y) for x, y in zip(a.tobytes(), b.tobytes(), strict=True)) <= 1


def on_disk(dest: Path) -> dict[str, str]:
    return {
        p.relative_to(dest).as_posix(): sha(p.read_bytes())
        for p in sorted(dest.rglob("*"))
        if p.is_file()
    }


async def test_a_partner_gets_every_image_byte_for_byte_and_a_cut_run_resumes(
    stack: ServiceStack, bank: Bank, tmp_path: Path
) -> None:
    sid = await upload_submission(stack, "img-hospital")
    prompts = await partner_client(stack, "img-hospital").prompts(sid)
    named = {path for p in prompts for path in p.image_paths}
    assert named == set(bank.files)  # every served image path, and only those
    cli = cli_for(stack, tmp_path, "img-hospital")
    dest = tmp_path / "images"
    copies = await tenant_copies(stack, "img-hospital", bank)
    distinct = {sha(b): len(b) for b in copies.values()}

    first = await cli.ok("images", sid, "--out", str(dest))
    assert (first["images"], first["files"]) == (len(distinct), len(bank.files))
    assert (first["downloaded"], first["kept"], first["problems"]) == (len(distinct), 0, [])
    assert first["bytes"] == sum(distinct.values())
    # Byte for byte: each file's sha256 is the tenant's copy's, the largest one included; each
    # copy is its original to within 1 per channel value.
    assert on_disk(dest) == {path: sha(content) for path, content in copies.items()}
    assert all(near(copies[p], c) for p, c in bank.files.items() if p != bank.largest_path)
    assert (dest / bank.largest_path).stat().st_size == len(bank.largest)

    # A cut run: the largest image half there (its part file), a slice gone, a copy gone.
    big = dest / bank.largest_path
    half = len(bank.largest) // 2
    part = big.with_name(f".{big.name}.{sha(bank.largest)[:16]}{PART_SUFFIX}")
    part.write_bytes(bank.largest[:half])
    big.unlink()
    # (The first slice is also pair/ct.png: the last one is used once.)
    lost = sorted(p for p in bank.files if p.startswith("MedClass/sam/"))[-1]
    (dest / lost).unlink()
    (dest / "MedClass/pair/xray.png").unlink()  # its bytes are also at pneumonia/<first>.png
    again = await cli.ok("images", sid, "--out", str(dest))
    assert (again["downloaded"], again["resumed"], again["copied"]) == (2, 1, 1)
    assert again["kept"] == len(distinct) - 2
    assert again["bytes"] == (len(bank.largest) - half) + len(copies[lost])
    assert on_disk(dest) == {path: sha(content) for path, content in copies.items()}
    third = await cli.ok("images", sid, "--out", str(dest))
    assert (third["downloaded"], third["bytes"], third["kept"]) == (0, 0, len(distinct))


async def test_the_largest_admitted_image_passes_every_hop_in_small_messages(
    stack: ServiceStack, bank: Bank
) -> None:
    # It is the largest: one byte more and the rotator refuses the import message.
    wide = [
        ("grpc.max_send_message_length", 2 * LIMIT),
        ("grpc.max_receive_message_length", 2 * LIMIT),
    ]
    rotator_admin = taskpool_service_pb2_grpc.TaskPoolServiceStub(
        authorized_channel(stack.address("rotator"), stack.admin_key, wide)
    )
    with pytest.raises(grpc.aio.AioRpcError) as over:
        await rotator_admin.ImportTasks(
            iter([taskpool_service_pb2.ImportTasksRequest(items=[largest_item(1)])])
        )
    assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert MAX_MESSAGE == LIMIT

    # Whole, it does not fit in one GetImage reply: the gateway reads it by ranges.
    big_id = sha(bank.largest)
    whole = taskpool_service_pb2.GetImageResponse(
        image_id=big_id, content=bank.largest, media_type="image/png", size=len(bank.largest)
    )
    assert whole.ByteSize() > LIMIT
    rotator = taskpool_service_pb2_grpc.TaskPoolServiceStub(service_channel(stack, "rotator"))
    with pytest.raises(grpc.aio.AioRpcError) as too_big:
        await rotator.GetImage(taskpool_service_pb2.GetImageRequest(image_id=big_id))
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ranged = await rotator.GetImage(
        taskpool_service_pb2.GetImageRequest(image_id=big_id, offset=LIMIT - 100, max_bytes=MIB)
    )
    assert (ranged.size, ranged.content) == (len(bank.largest), bank.largest[LIMIT - 100 :])

    # Through the gateway: every message under 1 MiB, the bytes whole and in order.
    sid = await upload_submission(stack, "img-big")
    messages = await stream(stack, "img-big", submission_id=sid, image_ids=[big_id])
    assert max(m.ByteSize() for m in messages) <= MIB
    info = messages[0].image
    assert (info.image_id, info.sha256, info.size, info.offset) == (
        big_id,
        big_id,
        len(bank.largest),
        0,
    )
    assert [(u.item_id, u.path) for u in info.uses] == [(BIG, BIG_PATH)]
    data = b"".join(m.chunk.data for m in messages[1:])
    assert sha(data) == big_id and len(messages) == 1 + -(-len(bank.largest) // 1_044_480)
    # From an offset: the tail only.
    tail = await stream(
        stack, "img-big", submission_id=sid, image_ids=[big_id], offset=len(bank.largest) - 1000
    )
    assert tail[0].image.offset == len(bank.largest) - 1000
    assert b"".join(m.chunk.data for m in tail[1:]) == bank.largest[-1000:]


async def test_the_largest_admitted_image_reaches_the_dispatcher_and_the_judge_whole(
    stack: ServiceStack, bank: Bank
) -> None:
    """The dispatcher (API-mode payloads, a tenant's copy) and the judge scorer (a vision judge,
    physicians' GetReviewImage: the bank's bytes) read it from the real rotator with their own
    tokens, in ranges. They used to ask for it in one reply: RESOURCE_EXHAUSTED, after which the
    dispatcher put the item back in its queue for ever and the judge retried it for ever."""
    big_id = sha(bank.largest)

    def rotator_as(service: str) -> taskpool_service_pb2_grpc.TaskPoolServiceStub:
        return taskpool_service_pb2_grpc.TaskPoolServiceStub(
            channel(stack.address("rotator"), stack.service_tokens[service])
        )

    judged = await JudgeImages(rotator_as("judge_scorer")).image(big_id)
    assert (judged.image_id, judged.media_type) == (big_id, "image/png")
    assert sha(judged.content) == big_id and len(judged.content) == len(bank.largest)
    # Not a decodable PNG: the tenant's copy is the bank's bytes, and within what the
    # dispatcher sends (the import limit: every admitted item can be sent).
    sent = await DispatchImages(rotator_as("dispatcher")).get(big_id, "img-api-tenant")
    assert sent.content == bank.largest and sent.media_type == "image/png"
    check_images([sent])
    with pytest.raises(ImageNotSendable, match="the limit is"):
        check_images([sent], max_image_bytes=len(bank.largest) - 1)
    # A small PNG: the tenant's own watermarked copy, whole.
    path, content = next((p, c) for p, c in bank.files.items() if p != bank.largest_path)
    copy = await DispatchImages(rotator_as("dispatcher")).get(sha(content), "img-api-tenant")
    assert copy.content != content and len(copy.content) > 0, path


async def test_an_api_run_sends_the_largest_admitted_image_to_the_endpoint(
    stack: ServiceStack, bank: Bank, endpoint: FakeEndpoint
) -> None:
    """API mode on a multimodal pool holding the largest image an import admits: the endpoint
    is sent it whole as a data URL and the run ends with every item answered (an image over the
    dispatcher's limit used to be an infrastructure failure, every API run of the pool
    stalled)."""
    rotator = taskpool_service_pb2_grpc.TaskPoolServiceStub(admin_channel(stack, "rotator"))
    await rotator.PublishPool(
        taskpool_service_pb2.PublishPoolRequest(
            pool_id="images-api-mm",
            track=common_pb2.TRACK_MULTIMODAL,
            datasets=["MedClass"],
            board=taskpool_pb2.BOARD_API,
        )
    )
    partner = partner_client(stack, "img-api-big")
    created = await partner.create(
        "big-api",
        "vl-model",
        track=common_pb2.TRACK_MULTIMODAL,
        mode=common_pb2.SUBMISSION_MODE_API,
        endpoint=submission_pb2.Endpoint(
            base_url=endpoint.base_url, model="test-model", api_key="secret-key", max_concurrency=4
        ),
    )
    sid = created.submission.submission_id

    async def dispatched() -> submission_pb2.Submission | None:
        shown = await partner.get(sid)
        return None if shown.state == submission_pb2.SUBMISSION_STATE_DISPATCHING else shown

    shown = await eventually(dispatched, 120, "the API run to leave DISPATCHING")
    assert shown.state != submission_pb2.SUBMISSION_STATE_FAILED, shown.state_reason
    progress = shown.progress
    assert progress.infra_failed_items == 0
    assert progress.answered_items == progress.expected_items > 0
    (url,) = endpoint.script.images["?"]  # the largest item's question
    head, _, data = url.partition(",")
    assert head == "data:image/png;base64"
    assert base64.b64decode(data) == bank.largest


async def test_anything_but_the_callers_own_upload_submissions_images_is_refused(
    stack: ServiceStack, bank: Bank, endpoint: FakeEndpoint, tmp_path: Path
) -> None:
    sid = await upload_submission(stack, "img-owner")
    listed = await stream(stack, "img-owner", submission_id=sid, info_only=True)
    assert listed and all(m.WhichOneof("part") == "image" for m in listed)
    own = [m.image.image_id for m in listed]
    # Never a reference, in any message.
    assert all(REFERENCE.encode() not in m.SerializeToString() for m in listed)

    async def refused(tenant: str, **fields: object) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stream(stack, tenant, **fields)
        return err.value

    # Another tenant's submission, and one that does not exist: NOT_FOUND alike.
    theirs = await refused("img-stranger", submission_id=sid)
    nobody = await refused("img-owner", submission_id="sub_does_not_exist")
    assert theirs.code() == nobody.code() == grpc.StatusCode.NOT_FOUND
    # An image the submission does not use: the same NOT_FOUND whether the bank holds it or not.
    elsewhere = await refused("img-owner", submission_id=sid, image_ids=[own[0], bank.unpooled_id])
    nowhere_id = sha(b"no such image")
    nowhere = await refused("img-owner", submission_id=sid, image_ids=[nowhere_id])
    assert elsewhere.code() == nowhere.code() == grpc.StatusCode.NOT_FOUND
    assert (elsewhere.details() or "").replace(bank.unpooled_id, "X") == (
        nowhere.details() or ""
    ).replace(nowhere_id, "X")
    # API mode: its prompts are never handed out, nor their images.
    api = partner_client(stack, "img-owner")
    created = await api.create(
        f"img-api-{uuid.uuid4().hex[:6]}",
        "api-model",
        mode=common_pb2.SUBMISSION_MODE_API,
        endpoint=submission_pb2.Endpoint(
            base_url=endpoint.base_url, model="test-model", api_key="secret-key", max_concurrency=2
        ),
    )
    api_sid = created.submission.submission_id
    in_api = await refused("img-owner", submission_id=api_sid)
    assert in_api.code() == grpc.StatusCode.FAILED_PRECONDITION

    # The CLI says the same, with its exit codes: 3 not found, 4 failed precondition.
    stranger = cli_for(stack, tmp_path, "img-stranger")
    done = await stranger.run("images", sid, "--out", str(tmp_path / "s"))
    assert done.returncode == 3 and done.stderr.startswith("medbench: NOT_FOUND: ")
    assert not any((tmp_path / "s").rglob("*.png"))
    owner = cli_for(stack, tmp_path, "img-owner")
    done = await owner.run("images", api_sid, "--out", str(tmp_path / "a"))
    assert done.returncode == 4 and "FAILED_PRECONDITION" in done.stderr
