"""Serving pools: reading them, assigning submissions, each download's prompts (in the tenant's
option order, with its canaries) and images."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from medbench_runtime.errors import InvalidArgument, NotFound
from rotator.core.bank import CHUNK_BYTES, check_id
from rotator.core.download import STREAM_BATCH, ServedItem, prompt_hash, shown_question
from rotator.core.leaktrace import PlacedCanary, Variant, make_variant
from rotator.core.pools import PoolRecord
from rotator.core.ports import AssignmentStore, ImageStore, PoolStore


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
        canaries_per_download: int = 3,
    ) -> None:
        self._pools = pools
        self._assignments = assignments
        self._images = images
        self._secret = leak_secret
        self._canaries = canaries_per_download

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
        """The submission's download, pool items and canaries in ordinal order, in batches of
        at most STREAM_BATCH items or about CHUNK_BYTES of prompts; without include_prompts
        only the items' identities and prompt hashes. NotFound without an assignment."""
        assignment = await self._assignments.assignment(submission_id)
        pool = await self._pool_of(assignment.pool_id)
        variant = await self._variant(submission_id, assignment.tenant_id, pool)
        orders = dict(variant.orders)
        canaries_after: dict[int, list[PlacedCanary]] = {}
        for canary in variant.canaries:
            canaries_after.setdefault(canary.after, []).append(canary)
        out: list[ServedItem] = []
        # (An item's prompt is at most MAX_PROMPT_BYTES: far under gRPC's 16 MiB message.)
        out_bytes = 0
        async for entry in self._pools.pool_entries(pool.pool_id):
            shown = shown_question(entry.question, orders.get(entry.item_id))
            item = ServedItem(
                item_id=entry.item_id,
                ordinal=entry.ordinal,
                dataset=entry.dataset,
                answer_format=entry.answer_format,
                prompt_hash=prompt_hash(shown, entry.messages, entry.image_ids),
            )
            if include_prompts:
                item = replace(
                    item,
                    question=shown,
                    image_paths=entry.image_paths,
                    image_ids=entry.image_ids,
                    messages=entry.messages,
                )
            out.append(item)
            out_bytes += item.prompt_bytes()
            for canary in canaries_after.get(entry.ordinal, ()):
                out.append(
                    ServedItem(
                        item_id=canary.item_id,
                        ordinal=canary.ordinal,
                        dataset=canary.dataset,
                        answer_format="choice_single",
                        prompt_hash=prompt_hash(canary.question, (), ()),
                        question=canary.question if include_prompts else "",
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

    async def _pool_of(self, pool_id: str) -> PoolRecord:
        pool = await self._pools.find_pool(pool_id)
        assert pool is not None, f"assigned pool {pool_id} is missing"
        return pool

    async def _variant(self, submission_id: str, tenant_id: str, pool: PoolRecord) -> Variant:
        found = await self._assignments.variant(submission_id)
        if found is not None:
            return found
        choice_items = [
            (entry.item_id, entry.dataset, entry.n_options)
            async for entry in self._pools.pool_entries(pool.pool_id)
        ]
        variant = make_variant(
            self._secret,
            submission_id,
            tenant_id,
            pool.pool_id,
            pool.item_count,
            choice_items,
            self._canaries,
        )
        await self._assignments.store_variant(variant)
        return variant
