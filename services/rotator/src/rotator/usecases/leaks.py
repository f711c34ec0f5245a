"""Tracing a leaked file to the downloads it may come from (canaries, then option orders)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass

from medbench_runtime.errors import InvalidArgument
from rotator.core.bank import MAX_IMPORT_BATCH
from rotator.core.leaktrace import (
    ImageHit,
    LeakedLine,
    LeakEvidence,
    LeakSignal,
    Suspect,
    fingerprint,
    listed_questions,
    observed_orders,
)
from rotator.core.ports import AssignmentStore, ImageStore, LeakSignals, PoolStore, TaskStore
from rotator.core.watermark import MAX_POSTED_BYTES, Pixels, PostedImage, trace_image

MAX_TRACE_LINES = 1_000_000
DEFAULT_SIGNALS = 100
MAX_SIGNALS = 1000
MAX_TRACE_IMAGE_BYTES = 512 * 1024 * 1024
"""Posted images' bytes a trace reads in all (each at most watermark.MAX_POSTED_BYTES)."""
SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Trace:
    """The downloads a leaked file may come from, most likely first, and the lines read."""

    suspects: tuple[Suspect, ...]
    lines: int


class LeakTracing:
    """Finds which downloads a leaked file matches."""

    def __init__(
        self,
        tasks: TaskStore,
        assignments: AssignmentStore,
        signals: LeakSignals | None = None,
        images: tuple[PoolStore, ImageStore, bytes] | None = None,
    ) -> None:
        """images: the pools, the bank's images and the leak secret, to trace posted images
        by their watermarks (None: images are not traced)."""
        self._tasks = tasks
        self._assignments = assignments
        self._signals = signals
        self._images = images

    async def signals(self, tenant_id: str, pool_id: str, limit: int) -> list[LeakSignal]:
        """Canaries answered with their original's right answer, newest first (of a tenant, of
        a pool, when given): at most limit (0: DEFAULT_SIGNALS; InvalidArgument outside
        0-MAX_SIGNALS)."""
        if not 0 <= limit <= MAX_SIGNALS:
            raise InvalidArgument(f"limit must be between 0 and {MAX_SIGNALS}, got {limit}")
        if self._signals is None:
            return []
        return await self._signals.signals(tenant_id, pool_id, limit or DEFAULT_SIGNALS)

    async def trace(self, batches: AsyncIterable[Sequence[LeakedLine]]) -> Trace:
        """Reads the leaked file's lines (at most MAX_IMPORT_BATCH a batch, MAX_TRACE_LINES in
        all: InvalidArgument beyond), then weighs every download against them: a canary in
        the file (its question, under its own id or none) counts against every download that
        showed it, with the chance that another download shows it too; so does each of the
        file's choice items shown in a download's own option order, and each label item whose
        candidates it lists in a download's own order."""
        leaked: list[LeakedLine] = []
        image_bytes = 0
        async for batch in batches:
            if len(batch) > MAX_IMPORT_BATCH:
                raise InvalidArgument(
                    f"{len(batch)} lines in one message; at most {MAX_IMPORT_BATCH}"
                )
            leaked.extend(batch)
            image_bytes = _check_images(batch, image_bytes)
            if len(leaked) > MAX_TRACE_LINES:
                raise InvalidArgument(f"a leaked file is traced {MAX_TRACE_LINES} lines at most")
        questions = await self._tasks.questions([line.item_id for line in leaked if line.item_id])
        evidence = LeakEvidence(
            observed_orders(leaked, questions), listed_questions(leaked, questions)
        )
        # A canary's question in the file counts under its own id or under none (a line naming
        # another item is that item's, whatever its text).
        ids: dict[str, set[str]] = {}
        for line in leaked:
            ids.setdefault(fingerprint(line.question), set()).add(line.item_id)
        for hit in await self._assignments.canary_hits(list(ids)):
            named = ids.get(hit.fingerprint, set())
            if "" in named or hit.item_id in named or not hit.item_id:
                evidence.add_canary_hit(hit)
        variants = []
        async for variant in self._assignments.variants():
            evidence.add_variant(variant)
            variants.append((variant.submission_id, variant.tenant_id, variant.pool_id))
        hits = await self._image_hits(leaked, variants)
        return Trace(tuple(evidence.ranked_with_images(hits)), len(leaked))

    async def _image_hits(
        self, leaked: Sequence[LeakedLine], variants: Sequence[tuple[str, str, str]]
    ) -> list[ImageHit]:
        """The posted images that are a tenant's watermarked copy of an image of a pool the
        tenant downloaded, one hit per download of that pool by that tenant. A line's image is
        compared with its item's images when the line names an item of those pools, else with
        every image of the downloaded pools (each bank image read and decoded once)."""
        posted = [line for line in leaked if line.image or line.image_sha256]
        if not posted or self._images is None:
            return []
        pools, images, secret = self._images
        downloads: dict[tuple[str, str], list[str]] = {}
        for submission_id, tenant_id, pool_id in variants:
            downloads.setdefault((pool_id, tenant_id), []).append(submission_id)
        item_images: dict[str, tuple[str, ...]] = {}
        image_pools: dict[str, set[str]] = {}
        for pool_id in sorted({pool_id for pool_id, _ in downloads}):
            async for entry in pools.pool_entries(pool_id):
                item_images[entry.item_id] = entry.image_ids
                for image_id in entry.image_ids:
                    image_pools.setdefault(image_id, set()).add(pool_id)
        tenants: dict[str, set[str]] = {}
        for pool_id, tenant_id in downloads:
            tenants.setdefault(pool_id, set()).add(tenant_id)

        def tenants_of(image_id: str) -> list[str]:
            return sorted({t for p in image_pools.get(image_id, ()) for t in tenants[p]})

        bank: dict[str, bytes] = {}
        decoded: dict[str, Pixels | None] = {}
        hits: list[ImageHit] = []
        for line in posted:
            wanted = item_images.get(line.item_id) or tuple(image_pools)
            for image_id in wanted:
                if image_id not in bank:
                    bank[image_id] = (await images.get(image_id))[0]
            matches = await asyncio.to_thread(
                trace_image,
                secret,
                PostedImage(line.image, line.image_sha256),
                [(i, bank[i]) for i in wanted],
                tenants_of,
                decoded,
            )
            for m in matches:
                for pool_id in sorted(image_pools.get(m.image_id, ())):
                    for submission_id in downloads.get((pool_id, m.tenant_id), []):
                        hits.append(
                            ImageHit(m.tenant_id, submission_id, pool_id, m.image_id, m.chance)
                        )
        return hits


def _check_images(batch: Sequence[LeakedLine], read: int) -> int:
    """The posted images' bytes read so far with this batch's; InvalidArgument for an image
    over MAX_POSTED_BYTES, a malformed sha256 or MAX_TRACE_IMAGE_BYTES in all."""
    for line in batch:
        if len(line.image) > MAX_POSTED_BYTES:
            raise InvalidArgument(
                f"a posted image is {len(line.image)} bytes; at most {MAX_POSTED_BYTES}"
            )
        if line.image_sha256 and not SHA256.fullmatch(line.image_sha256):
            raise InvalidArgument(f"image_sha256 {line.image_sha256[:80]!r} is not 64 hex digits")
        read += len(line.image)
    if read > MAX_TRACE_IMAGE_BYTES:
        raise InvalidArgument(f"a trace reads {MAX_TRACE_IMAGE_BYTES} bytes of images at most")
    return read
