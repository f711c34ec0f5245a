"""Images: the image files of a partner's own upload-mode submission (DownloadImages), so that
multimodal items can be answered offline. The rules (which images, in what order, how they are
cut) are in core/images.py; this module checks the caller and orders the reads."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from gateway.core.images import (
    CHUNK_BYTES,
    ImagesRequest,
    ImageUse,
    ranges,
    select,
    use_groups,
)
from gateway.core.ports import ImageRange, PoolImages, SubmissionStore
from gateway.core.submission import MODE_API
from gateway.usecases import metrics
from medbench_runtime.errors import FailedPrecondition, NotFound

log = logging.getLogger(__name__)

# info_only: image sizes asked of the rotator at once.
INFO_READS_AT_ONCE = 16


@dataclass(frozen=True)
class ImageHeader:
    """Announces an image (an ImageInfo message); its bytes from offset follow."""

    image_id: str
    size: int
    media_type: str
    uses: tuple[ImageUse, ...]
    offset: int


@dataclass(frozen=True)
class ImageBytes:
    """A run of the announced image's bytes (an ImageChunk message)."""

    offset: int
    data: bytes


class ImageBroken(Exception):
    """The bank's copy of an image is missing or does not hash to its id (an internal error:
    the partner is told INTERNAL, the log says which)."""


class Images:
    """DownloadImages: the images of the items served in the caller's own submission."""

    def __init__(
        self, store: SubmissionStore, pool: PoolImages, chunk_bytes: int = CHUNK_BYTES
    ) -> None:
        self._store = store
        self._pool = pool
        self._chunk = chunk_bytes

    async def download(
        self, tenant_id: str, submission_id: str, request: ImagesRequest
    ) -> AsyncIterator[ImageHeader | ImageBytes]:
        """Each selected image's header(s), then (unless info_only) its bytes in runs of at
        most chunk_bytes. NotFound for another tenant's submission or an image id it does not
        use; FailedPrecondition in API mode; InvalidArgument for a malformed request."""
        doc = await self._store.view(tenant_id, submission_id)
        if doc["mode"] == MODE_API:
            raise FailedPrecondition(
                "API-mode submissions are answered by the platform calling your endpoint; "
                "their prompts and images cannot be downloaded"
            )
        images = await self._pool.images(submission_id)
        if images.unpaired:
            log.warning(
                "submission %s: %d items have image ids that do not pair with their paths "
                "(imported with images missing); their images are not served",
                submission_id,
                images.unpaired,
            )
        chosen = select(submission_id, images, request)
        if request.info_only:
            for k in range(0, len(chosen), INFO_READS_AT_ONCE):
                window = chosen[k : k + INFO_READS_AT_ONCE]
                firsts = await asyncio.gather(*(self._info(i) for i in window))
                for image_id, first in zip(window, firsts, strict=True):
                    for header in _headers(image_id, first, images.uses[image_id], 0):
                        yield header
            return
        for n, image_id in enumerate(chosen):
            start = request.offset if n == 0 else 0
            async for part in self._image(image_id, images.uses[image_id], start):
                if isinstance(part, ImageBytes):
                    metrics.IMAGE_BYTES.labels(tenant_id).inc(len(part.data))
                yield part

    async def _image(
        self, image_id: str, uses: Sequence[ImageUse], start: int
    ) -> AsyncIterator[ImageHeader | ImageBytes]:
        """One image from start: its headers, then its bytes. Read whole (start 0), its bytes
        are hashed as they pass and the last run is held back unless they match the id."""
        first = await self._read(image_id, start, self._chunk)
        for header in _headers(image_id, first, uses, start):
            yield header
        digest = hashlib.sha256() if start == 0 else None
        for offset, length in ranges(start, first.size, self._chunk):
            part = first if offset == start else await self._read(image_id, offset, length)
            if len(part.data) != length or part.size != first.size:
                raise ImageBroken(
                    f"image {image_id}: {len(part.data)} bytes read at {offset} of "
                    f"{part.size}, {length} expected"
                )
            if digest is not None:
                digest.update(part.data)
                if offset + length == first.size and digest.hexdigest() != image_id:
                    raise ImageBroken(f"image {image_id}: its bytes hash to {digest.hexdigest()}")
            yield ImageBytes(offset, part.data)

    async def _read(self, image_id: str, offset: int, max_bytes: int) -> ImageRange:
        try:
            return await self._pool.image_range(image_id, offset, max_bytes)
        except NotFound as exc:
            raise _lost(image_id, exc) from exc

    async def _info(self, image_id: str) -> ImageRange:
        try:
            return await self._pool.image_info(image_id)
        except NotFound as exc:
            raise _lost(image_id, exc) from exc


def _lost(image_id: str, exc: NotFound) -> ImageBroken:
    """A served image missing from the bank: an internal error (what the partner asked for is
    known)."""
    return ImageBroken(f"image {image_id} is served but not in the bank: {exc}")


def _headers(
    image_id: str, first: ImageRange, uses: Sequence[ImageUse], offset: int
) -> list[ImageHeader]:
    return [
        ImageHeader(image_id, first.size, first.media_type, group, offset)
        for group in use_groups(uses)
    ]


__all__ = ["ImageBroken", "ImageBytes", "ImageHeader", "Images", "ImagesRequest"]
