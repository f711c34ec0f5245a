"""`images`: the image files of an upload-mode submission's multimodal items (DownloadImages),
written where the prompts' image_paths name them, checked by their sha256, resumable.

``download_images(session, submission_id, dest)`` is the whole job (``medbench download`` calls it
too); ``images`` is the command around it.

How a run goes:
1. One ``info_only`` call lists the images (content id = sha256, size, the (item, path) pairs that
   use each). Every path is checked before anything is written: relative, no ``..``, no control
   character (``importers.image_path_problem``), and what it resolves to (symlinks followed) must
   lie inside dest; a path two different images claim is written by neither. Those paths are
   reported as problems, the rest goes on.
2. An image whose every file is already there with the right sha256 is kept; one that is there
   under one of its paths is copied to the others; the others are fetched.
3. Each fetched image is written to a hidden part file beside its first path
   (``.<name>.<id16>.medbench-part``), its sha256 checked at the end, then renamed into place
   (and copied to its other paths the same way: a temp file, then a rename). A cut stream (the
   network, the gateway, Ctrl-C) leaves the part file: the next call, in this run (UNAVAILABLE is
   retried with backoff) or a later one, asks for that image first with ``offset`` = the part
   file's size, so no byte is fetched twice.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc

from medbench.submission.v1 import submission_service_pb2
from medbench_client.cli_files import InputError, ProgressLine
from medbench_client.importers import image_path_problem
from medbench_client.partner_cli.errors import EXIT_OK, EXIT_OTHER, CliError
from medbench_client.partner_cli.output import emit, note
from medbench_client.partner_cli.session import RETRYABLE, Session, backoff_s, with_retries

PART_SUFFIX = ".medbench-part"
# Image ids named per DownloadImages call (the gateway takes up to 100,000).
IDS_PER_CALL = 5000
READ_BLOCK = 1024 * 1024
IMAGE_ID = re.compile(r"[0-9a-f]{64}")

# image id -> (size, [(item id, path)]), as the gateway announced them.
Announced = dict[str, tuple[int, list[tuple[str, str]]]]


@dataclass
class ImagesResult:
    """What download_images did. ``problems``: paths not written, and why (the other images
    are written all the same)."""

    submission_id: str
    images: int = 0  # distinct images the submission's items use
    files: int = 0  # files they are written as (an image used under two paths: two files)
    downloaded: int = 0  # images fetched by this run
    resumed: int = 0  # of those, continued from a part file of a cut run
    kept: int = 0  # images already in place with the right sha256: nothing fetched
    copied: int = 0  # files written from a copy of the image already in place elsewhere
    bytes: int = 0  # image bytes received
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "submission_id": self.submission_id,
            "images": self.images,
            "files": self.files,
            "downloaded": self.downloaded,
            "resumed": self.resumed,
            "kept": self.kept,
            "copied": self.copied,
            "bytes": self.bytes,
            "problems": list(self.problems),
        }

    def text(self, dest: Path) -> str:
        """One line for people, e.g. `images: 5 (6 files) in img/: 3 downloaded, 2 there`."""
        parts = [f"{self.downloaded} downloaded ({self.bytes} bytes)"]
        if self.resumed:
            parts.append(f"{self.resumed} of them resumed")
        if self.kept:
            parts.append(f"{self.kept} already there")
        if self.copied:
            parts.append(f"{self.copied} files copied from another path")
        if self.problems:
            parts.append(f"{len(self.problems)} paths not written")
        return f"images: {self.images} ({self.files} files) in {dest}: " + ", ".join(parts)


@dataclass
class _Image:
    """An image as the gateway announced it, with the files it is written to."""

    image_id: str
    size: int
    targets: list[Path] = field(default_factory=list)

    @property
    def part(self) -> Path:
        first = self.targets[0]
        return first.with_name(f".{first.name}.{self.image_id[:16]}{PART_SUFFIX}")


class _Cut(Exception):
    """The stream ended, or an image arrived damaged (its bytes are dropped, so that is no
    progress): ask again for what is missing."""

    def __init__(self, message: str, damaged: bool = False) -> None:
        super().__init__(message)
        self.damaged = damaged


def image_target(root: Path, path: str) -> tuple[Path | None, str]:
    """Where image path is written under root (resolved, symlinks followed), or (None, why
    not): a path image_path_problem refuses, or one that resolves outside root or to a
    folder."""
    problem = image_path_problem(path)
    if problem is not None:
        return None, problem
    try:
        target = (root / path).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL
        return None, f"image path {path!r} cannot be resolved: {exc}"
    if target == root or not target.is_relative_to(root):
        return None, f"image path {path!r} resolves outside {root}; not written"
    if target.is_dir():
        return None, f"image path {path!r} is a folder; not written"
    return target, ""


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _holds(path: Path, image: _Image) -> bool:
    try:
        return (
            path.is_file()
            and path.stat().st_size == image.size
            and file_sha256(path) == image.image_id
        )
    except OSError:
        return False


def _place(source: Path, target: Path) -> None:
    """A copy of source at target, written beside it and renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(source, temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


async def _announced(s: Session, submission_id: str, retries: int) -> Announced:
    """image id -> (size, [(item id, path)]) of every image of the submission, in the gateway's
    order (one info_only call, repeated after UNAVAILABLE)."""

    async def call() -> Announced:
        out: Announced = {}
        request = submission_service_pb2.DownloadImagesRequest(
            submission_id=submission_id, info_only=True
        )
        async for message in s.submissions.DownloadImages(request):
            if message.WhichOneof("part") != "image":
                continue
            info = message.image
            # The id names files (part files): only what a sha256 looks like is taken.
            if not IMAGE_ID.fullmatch(info.image_id) or info.sha256 != info.image_id:
                raise CliError(
                    "DATA_LOSS", f"image {info.image_id[:80]!r}: not a sha256 id", EXIT_OTHER
                )
            if info.size < 0:
                raise CliError("DATA_LOSS", f"image {info.image_id}: size {info.size}", EXIT_OTHER)
            _, uses = out.setdefault(info.image_id, (info.size, []))
            uses.extend((u.item_id, u.path) for u in info.uses)
        return out

    return await with_retries(call, retries, "listing the images")


def _plan(root: Path, announced: Announced, result: ImagesResult) -> list[_Image]:
    """The images with the files each is written to; paths refused, or claimed by two images,
    go to result.problems."""
    images: list[_Image] = []
    owner: dict[Path, str] = {}
    refused: set[Path] = set()
    for image_id, (size, uses) in announced.items():
        image = _Image(image_id, size)
        for item_id, path in uses:
            target, why = image_target(root, path)
            if target is None:
                result.problems.append(f"{item_id}: {why}")
                continue
            claimed = owner.setdefault(target, image_id)
            if claimed != image_id:
                refused.add(target)
                result.problems.append(
                    f"{item_id}: image path {path!r} names two different images "
                    f"({claimed[:12]}..., {image_id[:12]}...); written by neither"
                )
            elif target not in image.targets:
                image.targets.append(target)
        images.append(image)
    for image in images:
        image.targets = [t for t in image.targets if t not in refused]
    return [image for image in images if image.targets]


def _start(image: _Image, offset: int) -> tuple[IO[bytes], Any]:
    """The part file open for appending at offset, and the sha256 of its first offset bytes."""
    image.part.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    if offset == 0:
        return image.part.open("wb"), digest
    f = image.part.open("r+b")
    f.truncate(offset)
    while block := f.read(READ_BLOCK):
        digest.update(block)
    f.seek(offset)
    return f, digest


def _finish(image: _Image, f: IO[bytes], digest: Any) -> None:
    """The complete part file checked and renamed into place (copies at the other paths)."""
    f.flush()
    os.fsync(f.fileno())
    f.close()
    if digest.hexdigest() != image.image_id:
        image.part.unlink(missing_ok=True)
        raise _Cut(
            f"image {image.image_id} arrived damaged (sha256 {digest.hexdigest()})", damaged=True
        )
    os.replace(image.part, image.targets[0])
    for target in image.targets[1:]:
        _place(image.targets[0], target)


async def _stream(
    s: Session,
    submission_id: str,
    ids: Sequence[str],
    offset: int,
    todo: dict[str, _Image],
    result: ImagesResult,
    progress: ProgressLine,
) -> None:
    """One DownloadImages call for ids (offset into the first): each image that arrives whole is
    put in place and leaves todo. _Cut when the stream ends before its last image did."""
    request = submission_service_pb2.DownloadImagesRequest(
        submission_id=submission_id, image_ids=ids, offset=offset
    )
    current: _Image | None = None
    f: IO[bytes] | None = None
    digest: Any = None
    at = resumed_at = 0
    try:
        async for message in s.submissions.DownloadImages(request):
            which = message.WhichOneof("part")
            if which == "image":
                info = message.image
                if current is not None and current.image_id == info.image_id:
                    continue  # more uses of the announced image
                if current is not None or info.image_id not in todo:
                    raise CliError(
                        "DATA_LOSS", f"unexpected image {info.image_id} in the stream", EXIT_OTHER
                    )
                current = todo[info.image_id]
                if info.size != current.size:
                    raise CliError(
                        "DATA_LOSS", f"image {info.image_id}: its size changed", EXIT_OTHER
                    )
                at = resumed_at = info.offset
                f, digest = _start(current, at)
            elif which == "chunk":
                if current is None or f is None or message.chunk.offset != at:
                    raise CliError("DATA_LOSS", "image bytes out of order", EXIT_OTHER)
                f.write(message.chunk.data)
                digest.update(message.chunk.data)
                at += len(message.chunk.data)
                result.bytes += len(message.chunk.data)
            else:
                continue
            if current is not None and f is not None and at == current.size:
                _finish(current, f, digest)
                f = None
                result.downloaded += 1
                result.resumed += resumed_at > 0
                del todo[current.image_id]
                progress.advance(1)
                current = None
    finally:
        if f is not None:
            f.close()  # what arrived stays in the part file: the next call resumes there
    if any(i in todo for i in ids):
        raise _Cut("the stream ended before every image arrived")


def _next_call(todo: dict[str, _Image]) -> tuple[list[str], int]:
    """The ids of the next call and the offset into its first: an image with a part file of
    a cut run comes first, resumed where it stopped."""
    order = list(todo)
    offset = 0
    for image_id, image in todo.items():
        part = image.part
        size = part.stat().st_size if part.is_file() else 0
        if 0 < size < image.size:
            order.remove(image_id)
            order.insert(0, image_id)
            offset = size
            break
    return order[:IDS_PER_CALL], offset


def _root(dest: Path) -> Path:
    """dest, created when absent, resolved."""
    if dest.exists() and not dest.is_dir():
        raise InputError(f"{dest}: images are written to a folder; this is a file")
    dest.mkdir(parents=True, exist_ok=True)
    return dest.resolve()


def _to_fetch(images: Sequence[_Image], result: ImagesResult) -> dict[str, _Image]:
    """The images to fetch, by id in the gateway's order; the others are put in place from what
    is on disk (kept, copied, or a complete part file renamed)."""
    todo: dict[str, _Image] = {}
    for image in images:
        there = [t for t in image.targets if _holds(t, image)]
        if len(there) == len(image.targets):
            image.part.unlink(missing_ok=True)  # a part left by a run cut before its rename
            result.kept += 1
            continue
        if there:
            for target in image.targets:
                if target not in there:
                    _place(there[0], target)
                    result.copied += 1
            result.kept += 1
            continue
        part = image.part
        size = part.stat().st_size if part.is_file() else 0
        if size > image.size or (size == image.size and file_sha256(part) != image.image_id):
            part.unlink()
        elif size == image.size:  # complete, cut before its rename
            os.replace(part, image.targets[0])
            for target in image.targets[1:]:
                _place(image.targets[0], target)
            result.kept += 1
            continue
        todo[image.image_id] = image
    return todo


async def download_images(
    s: Session, submission_id: str, dest: Path, retries: int = 8
) -> ImagesResult:
    """Writes every image of the submission's items at dest / <its image path>, checked by
    sha256; images already there (right sha256) are not fetched again, a part file left by a
    cut run is resumed at its size. UNAVAILABLE and a cut stream are retried with backoff
    (retries attempts in a row without progress). Paths that are unsafe or claimed by two
    images are not written: they are listed in the result's problems (nothing raised).
    Raises grpc.aio.AioRpcError for the gateway's refusals (NOT_FOUND, FAILED_PRECONDITION in
    API mode, ...), CliError for a stream that breaks the protocol, InputError when dest is a
    file."""
    root = _root(dest)
    result = ImagesResult(submission_id)
    announced = await _announced(s, submission_id, retries)
    images = _plan(root, announced, result)
    result.images = len(announced)
    result.files = sum(len(image.targets) for image in images)
    todo = _to_fetch(images, result)
    progress = ProgressLine("images", len(todo))
    failures = 0
    while todo:
        ids, offset = _next_call(todo)
        before = (len(todo), result.bytes)
        try:
            await _stream(s, submission_id, ids, offset, todo, result, progress)
            failures = 0
        except (grpc.aio.AioRpcError, _Cut) as exc:
            if isinstance(exc, grpc.aio.AioRpcError) and exc.code() not in RETRYABLE:
                raise
            damaged = isinstance(exc, _Cut) and exc.damaged
            progressed = (len(todo), result.bytes) != before and not damaged
            failures = 0 if progressed else failures + 1
            if failures >= retries:
                if isinstance(exc, grpc.aio.AioRpcError):
                    raise
                raise CliError("UNAVAILABLE", str(exc), EXIT_OTHER) from None
            why = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            note(f"images: {why}; resuming ({len(todo)} left)")
            await asyncio.sleep(backoff_s(failures + 1))
    progress.close()
    return result


async def images(args: argparse.Namespace, s: Session) -> int:
    """`images SUBMISSION --out DIR`: download_images, then what it did (problems on stderr,
    exit code 1 when a path was not written)."""
    dest = Path(args.out)
    result = await download_images(s, args.submission, dest, retries=args.retries)
    for problem in result.problems:
        note(problem)
    emit(args, result.as_dict(), result.text(dest))
    return EXIT_OTHER if result.problems else EXIT_OK
