"""Serving pools: reading them, assigning submissions, each download's prompts (in the tenant's
option and candidate-list orders, its canaries altered in place) and images."""

from __future__ import annotations

import asyncio
import hashlib
import heapq
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from medbench_runtime.errors import InvalidArgument, NotFound
from rotator.core.bank import CHUNK_BYTES, check_id
from rotator.core.canaries import (
    CanarySource,
    choose,
    may_alter,
    names_candidates,
    plain_lists,
    rank,
)
from rotator.core.download import STREAM_BATCH, ServedItem, prompt_hash, shown_question
from rotator.core.leaktrace import LegacyCanary, Variant, make_variant
from rotator.core.pools import PoolEntry, PoolKeyEntry, PoolRecord
from rotator.core.ports import AssignmentStore, ImageStore, PoolStore
from rotator.core.watermark import mark


@dataclass(frozen=True)
class PromptBatch:
    """One message of a download: a run of its items and the pool they come from."""

    pool: PoolRecord
    items: tuple[ServedItem, ...]


class PoolServing:
    """Serves pools to the gateway and the dispatcher."""

    def __init__(
        self,
        pools: PoolStore,
        assignments: AssignmentStore,
        images: ImageStore,
        leak_secret: bytes,
        canaries_per_dataset: int = 1,
    ) -> None:
        """canaries_per_dataset: question groups of each dataset a download shows altered for
        its tenant (0: none)."""
        self._pools = pools
        self._assignments = assignments
        self._images = images
        self._secret = leak_secret
        self._canaries = canaries_per_dataset
        self._copies = TenantCopies(leak_secret)

    async def pool(self, pool_id: str) -> tuple[PoolRecord, bool]:
        """A pool and whether it is its board's current one; NotFound."""
        found = await self._pools.find_pool(pool_id)
        if found is None:
            raise NotFound(f"pool {pool_id!r} not found")
        return found, await self._pools.is_current(found)

    async def current_pool(self, track: str, board: str) -> PoolRecord:
        """The board's current pool (the gateway asks before it calls a partner's endpoint)."""
        return await self._pools.current_pool(track, board)

    async def assign(
        self, submission_id: str, tenant_id: str, track: str, board: str
    ) -> tuple[PoolRecord, Variant]:
        """The submission's pool (the board's current one at its first call) and its
        download's variant, stored sealed before anyone can download or score."""
        check_id("submission_id", submission_id)
        assignment = await self._assignments.assign(submission_id, tenant_id, track, board)
        pool = await self._pool_of(assignment.pool_id)
        return pool, await self._variant(submission_id, assignment.tenant_id, pool)

    async def prompts(
        self, submission_id: str, include_prompts: bool
    ) -> AsyncIterator[PromptBatch]:
        """The submission's download in ordinal order, its canaries in their items' places, in
        batches of at most STREAM_BATCH items or about CHUNK_BYTES of prompts; without
        include_prompts only the items' identities and prompt hashes. NotFound without an
        assignment."""
        assignment = await self._assignments.assignment(submission_id)
        pool = await self._pool_of(assignment.pool_id)
        variant = await self._variant(submission_id, assignment.tenant_id, pool)
        orders, lists = dict(variant.orders), dict(variant.lists)
        altered = {c.item_id: c for c in variant.canaries}
        legacy_after: dict[int, list[LegacyCanary]] = {}
        for extra in variant.legacy:
            legacy_after.setdefault(extra.after, []).append(extra)
        out: list[ServedItem] = []
        # (An item's prompt is at most MAX_PROMPT_BYTES: far under gRPC's 16 MiB message.)
        out_bytes = 0
        async for entry in self._pools.pool_entries(pool.pool_id):
            canary = altered.get(entry.item_id)
            if canary is not None:
                # Shown as the pool item it is, altered: same id, ordinal, format and images.
                shown, messages = canary.shown(entry.question, entry.messages)
            else:
                shown = shown_question(
                    entry.question, orders.get(entry.item_id), lists.get(entry.item_id, ())
                )
                messages = entry.messages
            item = ServedItem(
                item_id=entry.item_id,
                ordinal=entry.ordinal,
                dataset=entry.dataset,
                answer_format=entry.answer_format,
                prompt_hash=prompt_hash(shown, messages, entry.image_ids),
            )
            if include_prompts:
                item = replace(
                    item,
                    question=shown,
                    image_paths=entry.image_paths,
                    image_ids=entry.image_ids,
                    messages=messages,
                )
            out.append(item)
            out_bytes += item.prompt_bytes()
            for extra in legacy_after.get(entry.ordinal, ()):
                out.append(
                    ServedItem(
                        item_id=extra.item_id,
                        ordinal=extra.ordinal,
                        dataset=extra.dataset,
                        answer_format="choice_single",
                        prompt_hash=prompt_hash(extra.question, (), ()),
                        question=extra.question if include_prompts else "",
                        canary=True,
                    )
                )
            if len(out) >= STREAM_BATCH or out_bytes >= CHUNK_BYTES:
                yield PromptBatch(pool, tuple(out))
                out, out_bytes = [], 0
        if out:
            yield PromptBatch(pool, tuple(out))

    async def image(
        self, image_id: str, offset: int = 0, max_bytes: int = 0, content: bool = True
    ) -> tuple[bytes, str, int]:
        """(content, media_type, size) of a task image, or of the range of its bytes from offset
        (at most max_bytes of them, 0: to the end; none without content); NotFound."""
        if not image_id:
            raise InvalidArgument("image_id is required")
        if offset < 0 or max_bytes < 0:
            raise InvalidArgument("offset and max_bytes must not be negative")
        return await self._images.get(image_id, offset, max_bytes, content)

    async def tenant_image(
        self,
        image_id: str,
        tenant_id: str,
        offset: int = 0,
        max_bytes: int = 0,
        content: bool = True,
    ) -> tuple[bytes, str, int, str]:
        """(content, media_type, size, sha256) of the tenant's watermarked copy of a task image
        (core/watermark.py), or of a range of it, as image() does for the bank's bytes; the copy
        is made once per (tenant, image) and kept while it fits TenantCopies' budget."""
        if not image_id or not tenant_id:
            raise InvalidArgument("image_id and tenant_id are required")
        if offset < 0 or max_bytes < 0:
            raise InvalidArgument("offset and max_bytes must not be negative")
        copy = self._copies.get(tenant_id, image_id)
        if copy is None:
            bank, media_type, _ = await self._images.get(image_id)
            if hashlib.sha256(bank).hexdigest() != image_id:
                raise ImageDamaged(f"image {image_id}: the bank's bytes do not hash to its id")
            copy = await self._copies.make(tenant_id, image_id, bank, media_type)
        if offset > len(copy.content):
            raise InvalidArgument(
                f"offset {offset} is past the end of image {image_id} ({len(copy.content)} bytes)"
            )
        end = len(copy.content) if max_bytes == 0 else min(len(copy.content), offset + max_bytes)
        data = copy.content[offset:end] if content else b""
        return data, copy.media_type, len(copy.content), copy.sha256

    async def _pool_of(self, pool_id: str) -> PoolRecord:
        pool = await self._pools.find_pool(pool_id)
        assert pool is not None, f"assigned pool {pool_id} is missing"
        return pool

    async def _variant(self, submission_id: str, tenant_id: str, pool: PoolRecord) -> Variant:
        found = await self._assignments.variant(submission_id)
        if found is not None:
            return found
        candidates, labelled = await self._candidates(tenant_id, pool.pool_id)
        choice_items: list[tuple[str, int]] = []
        lists = []
        sources: dict[str, dict[str, list[CanarySource]]] = {}
        async for entry in self._pools.pool_entries(pool.pool_id):
            choice_items.append((entry.item_id, entry.n_options))
            if entry.item_id in labelled:
                # A label item's candidates, in the tenant's own order for this item.
                metric, reference = labelled[entry.item_id]
                item = CanarySource(
                    entry.item_id, entry.ordinal, entry.dataset, "", metric, entry.question,
                    reference=reference,
                )  # fmt: skip
                lists.append((entry.item_id, plain_lists(self._secret, tenant_id, item)))
            key = candidates.get(entry.item_id)
            if key is not None:
                group = sources.setdefault(entry.dataset, {}).setdefault(key.group_id, [])
                group.append(_source(entry, key))
        variant = make_variant(
            self._secret,
            submission_id,
            tenant_id,
            pool.pool_id,
            choice_items,
            choose(self._secret, tenant_id, sources, self._canaries),
            lists,
        )
        await self._assignments.store_variant(variant)
        return variant

    async def _candidates(
        self, tenant_id: str, pool_id: str
    ) -> tuple[dict[str, PoolKeyEntry], dict[str, tuple[str, tuple[str, ...]]]]:
        """(item_id -> sealed key of the items of each dataset's best-ranked question groups
        for the tenant that may be altered (CANDIDATES_PER_CANARY a canary: memory stays flat
        however large the pool), item_id -> (metric, reference) of every item whose key names
        its candidates, three or more (a label set: `canaries.names_candidates`))."""
        labelled: dict[str, tuple[str, tuple[str, ...]]] = {}
        keep = CANDIDATES_PER_CANARY * self._canaries
        # dataset -> heap of (negated rank, group id): its worst kept group on top.
        heaps: dict[str, list[tuple[bytes, str]]] = {}
        members: dict[str, list[PoolKeyEntry]] = {}
        unfit: set[str] = set()
        async for key in self._pools.pool_keys(pool_id):
            if names_candidates(key.metric) and len(key.reference) >= 3:
                labelled[key.item_id] = (key.metric, tuple(key.reference))
            if self._canaries <= 0 or key.group_id in unfit:
                continue
            if not may_alter(key.metric, key.reference):
                unfit.add(key.group_id)
                members.pop(key.group_id, None)
                continue
            if key.group_id not in members:
                heap = heaps.setdefault(key.dataset, [])
                negated = bytes(255 - b for b in rank(self._secret, tenant_id, key.group_id))
                entry = (negated, key.group_id)
                if len(heap) < keep:
                    heapq.heappush(heap, entry)
                elif entry > heap[0]:
                    members.pop(heapq.heapreplace(heap, entry)[1], None)
                else:
                    unfit.add(key.group_id)  # ranked out: its later members are skipped too
                    continue
                members[key.group_id] = []
            members[key.group_id].append(key)
        return {key.item_id: key for group in members.values() for key in group}, labelled


class ImageDamaged(Exception):
    """The bank's copy of an image does not hash to its id: no tenant copy is made of it (an
    internal error)."""


@dataclass(frozen=True)
class TenantCopy:
    """A tenant's watermarked copy of a bank image."""

    content: bytes
    media_type: str
    sha256: str


class TenantCopies:
    """Tenants' watermarked image copies, made off the event loop (a 512x512 RGB PNG takes
    about 70 ms to decode, mark and re-encode) and kept, least recently used first out, while
    their bytes fit budget_bytes. A copy is deterministic, so every replica serves the same
    bytes and a download cut on one resumes on another."""

    def __init__(self, secret: bytes, budget_bytes: int = 128 * 1024 * 1024) -> None:
        self._secret = secret
        self._budget = budget_bytes
        self._copies: OrderedDict[tuple[str, str], TenantCopy] = OrderedDict()
        self._bytes = 0

    def get(self, tenant_id: str, image_id: str) -> TenantCopy | None:
        found = self._copies.get((tenant_id, image_id))
        if found is not None:
            self._copies.move_to_end((tenant_id, image_id))
        return found

    async def make(self, tenant_id: str, image_id: str, bank: bytes, media_type: str) -> TenantCopy:
        content = await asyncio.to_thread(mark, self._secret, tenant_id, image_id, bank)
        copy = TenantCopy(content, media_type, hashlib.sha256(content).hexdigest())
        key = (tenant_id, image_id)
        if key not in self._copies and len(content) <= self._budget:
            self._copies[key] = copy
            self._bytes += len(content)
            while self._bytes > self._budget:
                _, old = self._copies.popitem(last=False)
                self._bytes -= len(old.content)
        return copy


CANDIDATES_PER_CANARY = 32
"""Best-ranked groups per dataset and canary read whole: most may turn out unfit (no age in
the prompt, two options only), and a group whose key moves is preferred to one that only
traces a leak."""


def _source(entry: PoolEntry, key: PoolKeyEntry) -> CanarySource:
    return CanarySource(
        item_id=entry.item_id,
        ordinal=entry.ordinal,
        dataset=entry.dataset,
        group_id=key.group_id,
        metric=key.metric,
        question=entry.question,
        messages=entry.messages,
        reference=key.reference,
        key_points=key.key_points,
        prompt=key.prompt,
        images=len(entry.image_ids),
    )
