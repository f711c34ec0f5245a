"""DownloadImages: the images of a partner's own upload-mode submission, with in-memory fakes of
the store and of the rotator's images (no stack), and the rotator client's image calls over a
fake stub."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from gateway.adapters.grpc_peers import RotatorClient
from gateway.core import images as rules
from gateway.core.images import CHUNK_BYTES, USES_BYTES, ImagesRequest, ImageUse
from gateway.core.submission import MODE_API, MODE_UPLOAD
from gateway.entrypoints import convert
from gateway.usecases.images import ImageBroken, ImageBytes, ImageHeader, Images
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2
from medbench_runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from tests.services.gateway.fakes import FakePoolImages, InMemorySubmissionStore

T, OTHER = "tenant-a", "tenant-b"
PNG = b"\x89PNG\r\n\x1a\n"


def blob(n: int, seed: int) -> bytes:
    """n bytes starting like a PNG, the rest a deterministic pattern of seed."""
    body = hashlib.sha256(str(seed).encode()).digest() * (n // 32 + 1)
    return (PNG + body)[:n]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


A, B, C, ELSEWHERE = blob(25, 1), blob(40, 2), blob(7, 3), blob(30, 4)
IA, IB, IC, IE = sha(A), sha(B), sha(C), sha(ELSEWHERE)
BANK = {IA: (A, "image/png"), IB: (B, "image/png"), IC: (C, "image/gif"), IE: (ELSEWHERE, "x")}
# Items in pool order: item-2 shows A again under another path; item-3 has no image.
SERVED = [
    ("item-1", ["MedClass/a.png", "MedClass/b.png"], [IA, IB]),
    ("item-2", ["MedClass/again/a.png"], [IA]),
    ("item-3", [], []),
    ("item-4", ["MedDetect/c.gif"], [IC]),
]


class World:
    def __init__(self, chunk: int = 10) -> None:
        self.store = InMemorySubmissionStore()
        self.pool = FakePoolImages(
            dict(BANK), {"sub-up": SERVED, "sub-other": [("x-1", ["e.png"], [IE])]}
        )
        self.images = Images(self.store, self.pool, chunk_bytes=chunk)
        for tenant, sid, mode in (
            (T, "sub-up", MODE_UPLOAD),
            (T, "sub-api", MODE_API),
            (OTHER, "sub-other", MODE_UPLOAD),
        ):
            self.store.records[(tenant, sid)] = {"_id": sid, "tenant_id": tenant, "mode": mode}

    async def parts(
        self, sid: str = "sub-up", tenant: str = T, **request: Any
    ) -> list[ImageHeader | ImageBytes]:
        return [p async for p in self.images.download(tenant, sid, ImagesRequest(**request))]


def assembled(parts: list[ImageHeader | ImageBytes]) -> dict[str, tuple[ImageHeader, bytes]]:
    """image id -> (its first header, its bytes as sent), checking that runs follow each other."""
    out: dict[str, tuple[ImageHeader, bytes]] = {}
    current = ""
    for part in parts:
        if isinstance(part, ImageHeader):
            current = part.image_id
            out.setdefault(current, (part, b""))
            continue
        header, data = out[current]
        assert part.offset == header.offset + len(data), "runs out of order"
        out[current] = (header, data + part.data)
    return out


async def test_every_image_once_in_order_of_first_use_with_its_uses_and_bytes() -> None:
    world = World(chunk=10)
    parts = await world.parts()
    got = assembled(parts)
    assert list(got) == [IA, IB, IC]
    for image_id, (header, data) in got.items():
        assert data == BANK[image_id][0] and sha(data) == image_id
        assert (header.size, header.media_type, header.offset) == (
            len(data),
            BANK[image_id][1],
            0,
        )
    assert got[IA][0].uses == (
        ImageUse("item-1", "MedClass/a.png"),
        ImageUse("item-2", "MedClass/again/a.png"),
    )
    assert got[IC][0].uses == (ImageUse("item-4", "MedDetect/c.gif"),)
    runs = [p for p in parts if isinstance(p, ImageBytes)]
    assert all(0 < len(r.data) <= 10 for r in runs)
    assert len(runs) == 3 + 4 + 1  # 25, 40 and 7 bytes in runs of 10
    # The image of another submission was never read.
    assert {r[0] for r in world.pool.reads} == {IA, IB, IC}


async def test_another_tenants_or_an_unknown_submission_is_not_found_and_nothing_is_read() -> None:
    world = World()
    with pytest.raises(NotFound) as theirs:
        await world.parts("sub-other")
    with pytest.raises(NotFound) as nobody:
        await world.parts("sub-nope")
    assert str(theirs.value).replace("sub-other", "X") == str(nobody.value).replace("sub-nope", "X")
    assert world.pool.reads == [] and world.pool.index_loads == 0


async def test_an_image_the_submission_does_not_use_is_not_found_whether_it_exists_or_not() -> None:
    world = World()
    missing = sha(b"nowhere")
    with pytest.raises(NotFound) as elsewhere:
        await world.parts(image_ids=(IA, IE))  # IE: another tenant's submission uses it
    with pytest.raises(NotFound) as nowhere:
        await world.parts(image_ids=(IA, missing))
    assert str(elsewhere.value).replace(IE, "X") == str(nowhere.value).replace(missing, "X")
    assert world.pool.reads == []  # refused before anything was streamed or looked up


async def test_api_mode_is_a_failed_precondition() -> None:
    world = World()
    with pytest.raises(FailedPrecondition, match="API-mode"):
        await world.parts("sub-api")
    assert world.pool.reads == [] and world.pool.index_loads == 0


async def test_resume_some_images_from_an_offset_and_skip_the_held_ones() -> None:
    world = World(chunk=10)
    got = assembled(await world.parts(image_ids=(IB, IC, IB), offset=13))
    assert list(got) == [IB, IC]  # in the asked order, each once
    header, data = got[IB]
    assert (header.offset, header.size, data) == (13, len(B), B[13:])
    assert got[IC][0].offset == 0 and got[IC][1] == C
    skipped = assembled(await world.parts(held_image_ids=(IA, IC, sha(b"unknown"))))
    assert list(skipped) == [IB]
    # An offset at the very end: the header alone (the client holds every byte).
    at_end = await world.parts(image_ids=(IC,), offset=len(C))
    assert [type(p) for p in at_end] == [ImageHeader]


async def test_info_only_lists_the_images_without_their_bytes() -> None:
    world = World()
    parts = await world.parts(info_only=True)
    assert all(isinstance(p, ImageHeader) for p in parts)
    assert [(p.image_id, p.size) for p in parts if isinstance(p, ImageHeader)] == [
        (IA, len(A)),
        (IB, len(B)),
        (IC, len(C)),
    ]
    assert world.pool.reads == [] and world.pool.infos == [IA, IB, IC]  # no byte read


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"image_ids": ("A" * 64,)}, "not an image id"),
        ({"held_image_ids": ("abc",)}, "not an image id"),
        ({"offset": 3}, "offset needs image_ids"),
        ({"image_ids": (IA,), "offset": -1}, "negative"),
        ({"image_ids": (IA,), "offset": 3, "held_image_ids": (IA,)}, "held"),
        ({"image_ids": (IA,), "offset": len(A) + 1}, "outside"),
        ({"image_ids": (IA,) * (rules.MAX_IDS + 1)}, "at most"),
    ],
)
async def test_malformed_requests_are_invalid_arguments(
    request_fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await World().parts(**request_fields)


async def test_a_damaged_or_lost_image_is_an_internal_error_before_its_last_bytes() -> None:
    world = World(chunk=10)
    world.pool.bank[IB] = (B[:-1] + b"!", "image/png")
    parts: list[Any] = []
    with pytest.raises(ImageBroken, match="hash"):
        async for part in world.images.download(T, "sub-up", ImagesRequest(image_ids=(IB,))):
            parts.append(part)
    sent = b"".join(p.data for p in parts if isinstance(p, ImageBytes))
    assert sent == B[:30]  # the last run, which completes the damaged image, is held back
    del world.pool.bank[IA]
    with pytest.raises(ImageBroken, match="not in the bank"):
        await world.parts(image_ids=(IA,))
    with pytest.raises(ImageBroken, match="not in the bank"):
        await world.parts(info_only=True)


async def test_a_rotator_outage_mid_image_ends_the_stream_and_an_offset_resumes_it() -> None:
    world = World(chunk=10)
    world.pool.fail_after = 2
    parts: list[Any] = []
    with pytest.raises(Unavailable, match="rotator down"):
        async for part in world.images.download(T, "sub-up", ImagesRequest(image_ids=(IB,))):
            parts.append(part)
    have = b"".join(p.data for p in parts if isinstance(p, ImageBytes))
    assert have == B[:20]
    world.pool.fail_after = None
    rest = assembled(await world.parts(image_ids=(IB,), offset=len(have)))
    assert have + rest[IB][1] == B


def test_uses_of_a_much_used_image_are_announced_in_runs_under_the_budget() -> None:
    uses = [ImageUse(f"MedClass-{n:06d}", f"MedClass/img/{n:06d}.png") for n in range(40_000)]
    groups = list(rules.use_groups(uses))
    assert len(groups) > 1 and [u for g in groups for u in g] == uses
    for group in groups:
        header = ImageHeader("a" * 64, 10, "image/png", group, 0)
        assert convert.image_part_to_proto(header).ByteSize() <= 1024 * 1024
    assert list(rules.use_groups([])) == [()]
    assert sum(len(u.item_id) + len(u.path) + 8 for u in groups[0]) <= USES_BYTES


def test_every_message_stays_under_one_mib() -> None:
    run = ImageBytes(16 * 1024 * 1024, b"x" * CHUNK_BYTES)
    assert convert.image_part_to_proto(run).ByteSize() <= 1024 * 1024
    assert list(rules.ranges(5, 2 * CHUNK_BYTES + 7)) == [
        (5, CHUNK_BYTES),
        (5 + CHUNK_BYTES, CHUNK_BYTES),
        (5 + 2 * CHUNK_BYTES, 2),
    ]


def test_items_whose_ids_do_not_pair_with_their_paths_are_left_out_and_counted() -> None:
    builder = rules.ImagesBuilder()
    builder.add("ok", ["a.png"], [IA])
    builder.add("missing-one", ["b.png", "c.png"], [IB])
    built = builder.build()
    assert dict(built.uses) == {IA: (ImageUse("ok", "a.png"),)} and built.unpaired == 1


# -- the rotator client's image calls over a fake stub ------------------------------------------


class FakeStub:
    """GetPrompts (with a canary and an unpaired item) and ranged GetImage; counts calls."""

    def __init__(self) -> None:
        self.prompt_calls: list[bool] = []
        self.image_requests: list[taskpool_service_pb2.GetImageRequest] = []

    def GetPrompts(  # noqa: N802 - the stub's name
        self, request: taskpool_service_pb2.GetPromptsRequest
    ) -> AsyncIterator[taskpool_service_pb2.GetPromptsResponse]:
        self.prompt_calls.append(request.include_prompts)

        async def batches() -> AsyncIterator[taskpool_service_pb2.GetPromptsResponse]:
            yield taskpool_service_pb2.GetPromptsResponse(
                pool_id="pool-1",
                items=[
                    taskpool_pb2.AssignedItem(
                        item_id="i-1", ordinal=0, image_paths=["x/a.png"], image_ids=[IA]
                    ),
                    taskpool_pb2.AssignedItem(item_id="canary-1", ordinal=1, canary=True),
                ],
            )
            yield taskpool_service_pb2.GetPromptsResponse(
                pool_id="pool-1",
                items=[
                    taskpool_pb2.AssignedItem(
                        item_id="i-2", ordinal=2, image_paths=["x/b.png", "x/c.png"], image_ids=[IB]
                    ),
                    taskpool_pb2.AssignedItem(
                        item_id="i-3", ordinal=3, image_paths=["y/a.png"], image_ids=[IA]
                    ),
                ],
            )

        return batches()

    async def GetImage(  # noqa: N802 - the stub's name
        self, request: taskpool_service_pb2.GetImageRequest, timeout: float
    ) -> taskpool_service_pb2.GetImageResponse:
        self.image_requests.append(request)
        end = request.offset + request.max_bytes
        content = b"" if request.info_only else A[request.offset : end]
        return taskpool_service_pb2.GetImageResponse(
            image_id=request.image_id, content=content, media_type="image/png", size=len(A)
        )


async def test_the_rotator_client_indexes_a_submissions_images_once_and_reads_ranges() -> None:
    client = RotatorClient(grpc.aio.insecure_channel("127.0.0.1:9"))
    stub = FakeStub()
    client._stub = stub  # type: ignore[assignment]
    first = await client.images("sub-1")
    again = await client.images("sub-1")
    assert first is again and stub.prompt_calls == [True]  # one pass, with prompts and ids
    assert dict(first.uses) == {IA: (ImageUse("i-1", "x/a.png"), ImageUse("i-3", "y/a.png"))}
    assert first.unpaired == 1
    part = await client.image_range(IA, 5, 10)
    assert (part.data, part.size) == (A[5:15], len(A))
    sent = stub.image_requests[0]
    assert (sent.image_id, sent.offset, sent.max_bytes, sent.info_only) == (IA, 5, 10, False)
    info = await client.image_info(IA)
    assert (info.data, info.size, info.media_type) == (b"", len(A), "image/png")
    assert stub.image_requests[1].info_only
