"""Images: the image files of a partner's own upload-mode submission (DownloadImages), so that
multimodal items can be answered offline, each the tenant's own watermarked copy. The rules
(which images, in what order, how they are cut) are in core/images.py; this module checks the
caller and orders the reads."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from gateway.core.images import (
    CHUNK_BYTES,
    ImagesRequest,
    ImageUse,
    SubmissionImages,
    ranges,
    select,
    use_groups,
)
from gateway.core.ports import ImageRange, PoolImages, SubmissionStore
from gateway.core.submission import MODE_API
from gateway.usecases import metrics
from medbench_runtime.errors import FailedPrecondition, NotFound

log = logging.getLogger(__name__)

# Image sizes and content ids asked of the rotator at once.
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
    """DownloadImages: the images of the items served in the caller's own submission, each the
    tenant's watermarked copy (the rotator makes it: a posted copy names its tenant), so
    content ids are per tenant: the sha256 of the copy's bytes."""

    def __init__(
        self,
        store: SubmissionStore,
        pool: PoolImages,
        chunk_bytes: int = CHUNK_BYTES,
        cached_submissions: int = 256,
    ) -> None:
        self._store = store
        self._pool = pool
        self._chunk = chunk_bytes
        self._cached = cached_submissions
        self._copies: OrderedDict[tuple[str, str], TenantImages] = OrderedDict()

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
        copies, fresh = await self._tenant_images(tenant_id, submission_id)
        chosen = select(submission_id, copies.images, request)
        if request.info_only:
            for k in range(0, len(chosen), INFO_READS_AT_ONCE):
                window = chosen[k : k + INFO_READS_AT_ONCE]
                if not fresh:  # kept from an earlier call: is each image still in the bank?
                    await asyncio.gather(
                        *(self._read_info(copies.bank[i][0], tenant_id) for i in window)
                    )
            for image_id in chosen:
                bank_id, first = copies.bank[image_id]
                if first is None:
                    raise _lost(bank_id, NotFound("no size"))
                for header in _headers(image_id, first, copies.images.uses[image_id], 0):
                    yield header
            return
        for n, image_id in enumerate(chosen):
            start = request.offset if n == 0 else 0
            bank_id = copies.bank[image_id][0]
            uses = copies.images.uses[image_id]
            async for part in self._image(tenant_id, bank_id, image_id, uses, start):
                if isinstance(part, ImageBytes):
                    metrics.IMAGE_BYTES.labels(tenant_id).inc(len(part.data))
                yield part

    async def _tenant_images(self, tenant_id: str, submission_id: str) -> tuple[TenantImages, bool]:
        """The submission's images under the tenant's content ids (the sha256 of its copies,
        asked of the rotator, INFO_READS_AT_ONCE at a time); kept per (tenant, submission):
        served items and copies never change. An image missing from the bank keeps its bank
        id (reading it is the internal error) and the result is not kept. Also whether it was
        made now (not kept from an earlier call)."""
        key = (tenant_id, submission_id)
        found = self._copies.get(key)
        if found is not None:
            self._copies.move_to_end(key)
            return found, False
        images = await self._pool.images(submission_id)
        if images.unpaired:
            log.warning(
                "submission %s: %d items have image ids that do not pair with their paths "
                "(imported with images missing); their images are not served",
                submission_id,
                images.unpaired,
            )
        bank_ids = list(images.uses)
        infos: list[ImageRange | None] = []
        for k in range(0, len(bank_ids), INFO_READS_AT_ONCE):
            window = bank_ids[k : k + INFO_READS_AT_ONCE]
            infos.extend(await asyncio.gather(*(self._info(i, tenant_id) for i in window)))
        served: dict[str, tuple[str, ImageRange | None]] = {}
        uses: dict[str, tuple[ImageUse, ...]] = {}
        for bank_id, info in zip(bank_ids, infos, strict=True):
            own = info.sha256 if info is not None and info.sha256 else bank_id
            served[own] = (bank_id, info)
            uses[own] = images.uses[bank_id]
        found = TenantImages(SubmissionImages(uses, images.unpaired), served)
        if all(info is not None for info in infos):
            self._copies[key] = found
            while len(self._copies) > self._cached:
                self._copies.popitem(last=False)
        return found, True

    async def _image(
        self, tenant_id: str, bank_id: str, image_id: str, uses: Sequence[ImageUse], start: int
    ) -> AsyncIterator[ImageHeader | ImageBytes]:
        """One image (the tenant's copy of bank image bank_id, content id image_id) from start:
        its headers, then its bytes. Read whole (start 0), its bytes are hashed as they pass
        and the last run is held back unless they match the id."""
        first = await self._read(bank_id, start, self._chunk, tenant_id)
        for header in _headers(image_id, first, uses, start):
            yield header
        digest = hashlib.sha256() if start == 0 else None
        for offset, length in ranges(start, first.size, self._chunk):
            part = (
                first if offset == start else await self._read(bank_id, offset, length, tenant_id)
            )
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

    async def _read(self, image_id: str, offset: int, max_bytes: int, tenant_id: str) -> ImageRange:
        try:
            return await self._pool.image_range(image_id, offset, max_bytes, tenant_id)
        except NotFound as exc:
            raise _lost(image_id, exc) from exc

    async def _read_info(self, image_id: str, tenant_id: str) -> ImageRange:
        try:
            return await self._pool.image_info(image_id, tenant_id)
        except NotFound as exc:
            raise _lost(image_id, exc) from exc

    async def _info(self, image_id: str, tenant_id: str) -> ImageRange | None:
        """The tenant's copy's size and sha256; None for an image missing from the bank."""
        try:
            return await self._pool.image_info(image_id, tenant_id)
        except NotFound:
            return None


@dataclass(frozen=True)
class TenantImages:
    """A submission's images as one tenant downloads them: keyed by the tenant's content ids,
    each with its bank image id and its copy's size and media type (None: missing)."""

    images: SubmissionImages
    bank: Mapping[str, tuple[str, ImageRange | None]]


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
