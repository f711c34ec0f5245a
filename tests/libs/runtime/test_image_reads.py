"""read_image: a whole image from ranges of GetImage replies, checked against the sha256 the
rotator serves; ranges that do not add up are an error, never a short or foreign image. (The
real rotator serving the largest image an import admits: tests/e2e/test_partner_images.py.)"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from medbench.taskpool.v1 import taskpool_service_pb2 as pb
from medbench_runtime.image_reads import (
    ImageHashMismatch,
    ImageReadFailed,
    read_image,
)

CONTENT = bytes(range(256)) * 40 + b"tail"
IMAGE_ID = hashlib.sha256(CONTENT).hexdigest()


class Rotator:
    """Answers GetImage ranges of CONTENT; `spoil` alters a reply by its call number."""

    def __init__(self, spoil: Any = None) -> None:
        self.requests: list[pb.GetImageRequest] = []
        self._spoil = spoil

    async def GetImage(self, request: pb.GetImageRequest, timeout: float) -> pb.GetImageResponse:
        self.requests.append(request)
        end = len(CONTENT) if request.max_bytes == 0 else request.offset + request.max_bytes
        reply = pb.GetImageResponse(
            image_id=request.image_id,
            content=CONTENT[request.offset : end],
            media_type="image/png",
            size=len(CONTENT),
            served_sha256=IMAGE_ID,
        )
        if self._spoil is not None:
            self._spoil(len(self.requests), reply)
        return reply


async def test_ranges_of_at_most_chunk_bytes_make_the_whole_image() -> None:
    rotator = Rotator()
    got = await read_image(rotator, IMAGE_ID, chunk_bytes=1000)  # type: ignore[arg-type]
    assert got.content == CONTENT and got.sha256 == IMAGE_ID and got.media_type == "image/png"
    assert [r.offset for r in rotator.requests] == list(range(0, len(CONTENT), 1000))
    assert {r.max_bytes for r in rotator.requests} == {1000}
    assert {r.tenant_id for r in rotator.requests} == {""}


def _size_changed(call: int, reply: pb.GetImageResponse) -> None:
    if call == 2:
        reply.size += 1


def _copy_changed(call: int, reply: pb.GetImageResponse) -> None:
    if call == 3:
        reply.served_sha256 = "0" * 64


def _empty(call: int, reply: pb.GetImageResponse) -> None:
    if call == 2:
        reply.content = b""


def _too_long(call: int, reply: pb.GetImageResponse) -> None:
    reply.content += b"x"


@pytest.mark.parametrize("spoil", [_size_changed, _copy_changed, _empty, _too_long])
async def test_ranges_that_do_not_add_up_are_refused(spoil: Any) -> None:
    with pytest.raises(ImageReadFailed) as caught:
        await read_image(Rotator(spoil), IMAGE_ID, chunk_bytes=1000)  # type: ignore[arg-type]
    assert not isinstance(caught.value, ImageHashMismatch)


async def test_bytes_that_do_not_hash_to_the_served_id_are_a_mismatch() -> None:
    def flipped(call: int, reply: pb.GetImageResponse) -> None:
        if call == 1:
            reply.content = b"\xff" + reply.content[1:]

    with pytest.raises(ImageHashMismatch, match=IMAGE_ID):
        await read_image(Rotator(flipped), IMAGE_ID, chunk_bytes=1000)  # type: ignore[arg-type]
