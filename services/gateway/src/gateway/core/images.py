"""The images partners download (DownloadImages): which images a submission's served items use,
which of them a request asks for, and how an image is cut into messages. Pure rules; the use
case is usecases/images.py."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from medbench_runtime.errors import InvalidArgument, NotFound

# Bytes of an image per message: four GridFS chunks of 255 KiB, so a message with its framing
# stays under 1 MiB (gRPC's limit is 16 MiB at every hop).
CHUNK_BYTES = 4 * 255 * 1024
# Uses (item id + path) announced per ImageInfo message, counted in bytes of their strings.
USES_BYTES = 512 * 1024
# Ids per list of a request (image_ids, held_image_ids).
MAX_IDS = 100_000
IMAGE_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ImageUse:
    """A served item that shows an image, and the relative path it names it by."""

    item_id: str
    path: str


@dataclass(frozen=True)
class SubmissionImages:
    """The images of a submission's served items: content id -> its uses, in order of first
    use (pool order, then image_paths order). Items whose image ids do not pair one to one with
    their image paths (imported with some images missing) are left out: no path can be named
    for their images (``unpaired`` counts them)."""

    uses: Mapping[str, tuple[ImageUse, ...]]
    unpaired: int = 0


class ImagesBuilder:
    """SubmissionImages from a download's items, in pool order."""

    def __init__(self) -> None:
        self._uses: dict[str, list[ImageUse]] = {}
        self._unpaired = 0

    def add(self, item_id: str, paths: Sequence[str], image_ids: Sequence[str]) -> None:
        if len(paths) != len(image_ids):
            self._unpaired += 1
            return
        for path, image_id in zip(paths, image_ids, strict=True):
            self._uses.setdefault(image_id, []).append(ImageUse(item_id, path))

    def build(self) -> SubmissionImages:
        return SubmissionImages(
            {image_id: tuple(uses) for image_id, uses in self._uses.items()}, self._unpaired
        )


@dataclass(frozen=True)
class ImagesRequest:
    """What a DownloadImages call asks for (see the proto's DownloadImagesRequest)."""

    image_ids: tuple[str, ...] = ()
    offset: int = 0
    held_image_ids: tuple[str, ...] = ()
    info_only: bool = False


def _check_ids(name: str, ids: Sequence[str]) -> None:
    if len(ids) > MAX_IDS:
        raise InvalidArgument(f"{len(ids)} ids in {name}; at most {MAX_IDS} per call")
    for image_id in ids:
        if not IMAGE_ID.fullmatch(image_id):
            raise InvalidArgument(
                f"{name}: {image_id[:80]!r} is not an image id (64 lowercase hex digits, the "
                f"sha256 of the image)"
            )


def not_found(submission_id: str, image_id: str) -> NotFound:
    """The one answer for an image id no served item of the submission uses, whether or not
    such an image exists elsewhere: nothing else is ever looked up."""
    return NotFound(f"image {image_id} is not used by submission {submission_id}")


def select(submission_id: str, images: SubmissionImages, request: ImagesRequest) -> list[str]:
    """The ids to stream, in order: request.image_ids (each once) or every image of the
    submission, less request.held_image_ids. InvalidArgument for a malformed request, NotFound
    for an asked id no served item uses (before anything is streamed)."""
    _check_ids("image_ids", request.image_ids)
    _check_ids("held_image_ids", request.held_image_ids)
    if request.offset < 0:
        raise InvalidArgument(f"offset {request.offset} is negative")
    if request.offset and not request.image_ids:
        raise InvalidArgument("offset needs image_ids: it applies to the first of them")
    held = set(request.held_image_ids)
    if request.offset and request.image_ids[0] in held:
        raise InvalidArgument(
            f"offset applies to image {request.image_ids[0]}, which held_image_ids names as held"
        )
    if not request.image_ids:
        return [i for i in images.uses if i not in held]
    for image_id in request.image_ids:
        if image_id not in images.uses:
            raise not_found(submission_id, image_id)
    return [i for i in dict.fromkeys(request.image_ids) if i not in held]


def use_groups(
    uses: Sequence[ImageUse], budget: int = USES_BYTES
) -> Iterator[tuple[ImageUse, ...]]:
    """uses in runs of about budget bytes of strings (at least one use each; at least one run,
    possibly empty), one per ImageInfo message."""
    run: list[ImageUse] = []
    used = 0
    for use in uses:
        size = len(use.item_id.encode()) + len(use.path.encode()) + 8
        if run and used + size > budget:
            yield tuple(run)
            run, used = [], 0
        run.append(use)
        used += size
    yield tuple(run)


def ranges(offset: int, size: int, chunk: int = CHUNK_BYTES) -> Iterable[tuple[int, int]]:
    """(start, length) of the runs of bytes [offset, size), each at most chunk long."""
    return ((start, min(chunk, size - start)) for start in range(offset, size, chunk))
