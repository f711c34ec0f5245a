"""MongoAssignmentStore: assignments in MongoDB, per-download variants and canaries sealed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from medbench_runtime.errors import NotFound
from rotator.adapters.mongo_task_store import in_chunks
from rotator.core.leaktrace import CanaryHit, PlacedCanary, Variant
from rotator.core.pools import Assignment
from rotator.core.ports import PoolStore


def _assignment(doc: Mapping[str, Any]) -> Assignment:
    return Assignment(
        doc["_id"], doc["tenant_id"], doc.get("track", ""), doc.get("board", ""), doc["pool_id"]
    )


def variant_doc(variant: Variant) -> dict[str, Any]:
    """The sealed `variants` document (the metric scorer reads its orders too)."""
    return {
        "_id": variant.submission_id,
        "tenant_id": variant.tenant_id,
        "pool_id": variant.pool_id,
        "orders": [[item_id, ",".join(map(str, order))] for item_id, order in variant.orders],
        "canaries": [
            {
                "item_id": c.item_id,
                "dataset": c.dataset,
                "question": c.question,
                "fingerprint": c.fingerprint,
                "ordinal": c.ordinal,
                "after": c.after,
            }
            for c in variant.canaries
        ],
    }


def variant_from_doc(doc: Mapping[str, Any]) -> Variant:
    return Variant(
        submission_id=doc["_id"],
        tenant_id=doc["tenant_id"],
        pool_id=doc["pool_id"],
        orders=tuple(
            (item_id, tuple(map(int, order.split(",")))) for item_id, order in doc["orders"]
        ),
        canaries=tuple(
            PlacedCanary(
                c["item_id"],
                c["dataset"],
                c["question"],
                c["fingerprint"],
                c["ordinal"],
                c["after"],
            )
            for c in doc["canaries"]
        ),
    )


class MongoAssignmentStore:
    """AssignmentStore: `assignments` in the main database; `variants` and `canaries` (by
    fingerprint) in the sealed one."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        sealed: AsyncDatabase[dict[str, Any]],
        pools: PoolStore,
    ) -> None:
        self._db = db
        self._sealed = sealed
        self._pools = pools

    async def assign(
        self, submission_id: str, tenant_id: str, track: str, board: str
    ) -> Assignment:
        found = await self._db.assignments.find_one({"_id": submission_id})
        if found is not None:
            return _assignment(found)
        pool = await self._pools.current_pool(track, board)
        doc = {
            "_id": submission_id,
            "tenant_id": tenant_id,
            "track": track,
            "board": board,
            "pool_id": pool.pool_id,
            "assigned_at": datetime.now(UTC),
        }
        try:
            await self._db.assignments.insert_one(doc)
        except DuplicateKeyError:
            found = await self._db.assignments.find_one({"_id": submission_id})
            assert found is not None
            return _assignment(found)
        return _assignment(doc)

    async def assignment(self, submission_id: str) -> Assignment:
        found = await self._db.assignments.find_one({"_id": submission_id})
        if found is None:
            raise NotFound(f"submission {submission_id} has no assignment")
        return _assignment(found)

    async def variant(self, submission_id: str) -> Variant | None:
        found = await self._sealed.variants.find_one({"_id": submission_id})
        return None if found is None else variant_from_doc(found)

    async def store_variant(self, variant: Variant) -> None:
        """Idempotent: the variant is a pure function of secret, tenant and pool."""
        for canary in variant.canaries:
            await self._sealed.canaries.replace_one(
                {"_id": canary.fingerprint},
                {
                    "tenant_id": variant.tenant_id,
                    "submission_id": variant.submission_id,
                    "pool_id": variant.pool_id,
                    "item_id": canary.item_id,
                },
                upsert=True,
            )
        await self._sealed.variants.replace_one(
            {"_id": variant.submission_id}, variant_doc(variant), upsert=True
        )

    async def canary_hits(self, fingerprints: Sequence[str]) -> list[CanaryHit]:
        hits: list[CanaryHit] = []
        for ids in in_chunks(list(fingerprints)):
            async for doc in self._sealed.canaries.find({"_id": {"$in": ids}}):
                hits.append(CanaryHit(doc["tenant_id"], doc["submission_id"], doc["pool_id"]))
        return hits

    async def variants(self) -> AsyncIterator[Variant]:
        async for doc in self._sealed.variants.find({}):
            yield variant_from_doc(doc)
