"""MongoAssignmentStore: assignments in MongoDB, per-download variants and canaries sealed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from medbench_runtime.errors import NotFound
from medbench_storage.indexes import IndexSpec, asc
from rotator.adapters.mongo_task_store import in_chunks
from rotator.core.canaries import LIST, ORDER, Canary
from rotator.core.leaktrace import CanaryHit, LegacyCanary, Lists, Variant
from rotator.core.pools import Assignment
from rotator.core.ports import PoolStore

SEALED_INDEXES = (IndexSpec("canaries", asc("fingerprint")),)


def _assignment(doc: Mapping[str, Any]) -> Assignment:
    return Assignment(
        doc["_id"], doc["tenant_id"], doc.get("track", ""), doc.get("board", ""), doc["pool_id"]
    )


def _order_text(order: tuple[int, ...]) -> str:
    return ",".join(map(str, order))


def _order(text: str) -> tuple[int, ...]:
    return tuple(map(int, text.split(","))) if text else ()


def canary_doc(c: Canary) -> dict[str, Any]:
    """One canary as the sealed variant keeps it: its alteration, never its texts (what it
    shows follows from its pool item: an order canary's order, a detail canary's moved age, a
    list canary's orders of the question's enumerations),
    which the scorers read too (medbench_storage.variants; a list canary is scored as its pool
    item is, its key unchanged)."""
    doc: dict[str, Any] = {
        "item_id": c.item_id,
        "ordinal": c.ordinal,
        "dataset": c.dataset,
        "kind": c.kind,
        "fingerprint": c.fingerprint,
        "chance": c.chance,
        "originals": list(c.originals),
    }
    if c.kind == ORDER:
        doc["order"] = _order_text(c.order)
    elif c.kind == LIST:
        # Each enumeration reordered: its span in the pool item's question and its order.
        doc["lists"] = _lists_doc(c.lists)
        if c.order:
            doc["order"] = _order_text(c.order)
    else:
        doc |= {"moved": [c.age, c.moved], "moves_key": c.moves_key}
        if c.lists:  # a label item's candidates in the tenant's plain order
            doc["lists"] = _lists_doc(c.lists)
    return doc


def _lists_doc(lists: Lists) -> list[list[Any]]:
    return [[start, end, _order_text(order)] for start, end, order in lists]


def _lists(doc: Sequence[Sequence[Any]]) -> Lists:
    return tuple((start, end, _order(order)) for start, end, order in doc)


def variant_doc(variant: Variant) -> dict[str, Any]:
    """The sealed `variants` document (the scorers read its orders and canaries too)."""
    return {
        "_id": variant.submission_id,
        "tenant_id": variant.tenant_id,
        "pool_id": variant.pool_id,
        "orders": [[item_id, _order_text(order)] for item_id, order in variant.orders],
        # A label item's candidate lists in the tenant's orders: [item_id, [[start, end, order]]].
        "lists": [[item_id, _lists_doc(lists)] for item_id, lists in variant.lists],
        "canaries": [canary_doc(c) for c in variant.canaries]
        + [
            {
                "item_id": c.item_id,
                "dataset": c.dataset,
                "question": c.question,
                "fingerprint": c.fingerprint,
                "ordinal": c.ordinal,
                "after": c.after,
            }
            for c in variant.legacy
        ],
    }


def variant_from_doc(doc: Mapping[str, Any]) -> Variant:
    """A stored variant; canaries without a kind are an older download's extra items."""
    orders = tuple((item_id, _order(order)) for item_id, order in doc["orders"])
    canaries, legacy = [], []
    for c in doc["canaries"]:
        if "kind" not in c:
            legacy.append(
                LegacyCanary(
                    c["item_id"],
                    c["dataset"],
                    c["question"],
                    c["fingerprint"],
                    c["ordinal"],
                    c["after"],
                )  # fmt: skip
            )
            continue
        age, moved = c.get("moved", ("", ""))
        canaries.append(
            Canary(
                item_id=c["item_id"],
                ordinal=c["ordinal"],
                dataset=c["dataset"],
                kind=c["kind"],
                fingerprint=c["fingerprint"],
                chance=c["chance"],
                originals=tuple(c["originals"]),
                order=_order(c.get("order", "")),
                age=age,
                moved=moved,
                moves_key=c.get("moves_key", False),
                lists=_lists(c.get("lists", ())),
            )
        )
    return Variant(
        submission_id=doc["_id"],
        tenant_id=doc["tenant_id"],
        pool_id=doc["pool_id"],
        orders=orders,
        canaries=tuple(canaries),
        legacy=tuple(legacy),
        # Downloads made before candidate lists had per-item orders showed the bank's.
        lists=tuple((item_id, _lists(lists)) for item_id, lists in doc.get("lists", ())),
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
        """Idempotent: the variant is a pure function of secret, tenant and pool. Each canary
        is indexed by its question's fingerprint, once per download (`canaries`)."""
        for canary in variant.canaries:
            await self._sealed.canaries.replace_one(
                {"_id": f"{canary.fingerprint}:{variant.submission_id}"},
                {
                    "fingerprint": canary.fingerprint,
                    "tenant_id": variant.tenant_id,
                    "submission_id": variant.submission_id,
                    "pool_id": variant.pool_id,
                    "item_id": canary.item_id,
                    "chance": canary.chance,
                },
                upsert=True,
            )
        await self._sealed.variants.replace_one(
            {"_id": variant.submission_id}, variant_doc(variant), upsert=True
        )

    async def canary_hits(self, fingerprints: Sequence[str]) -> list[CanaryHit]:
        hits: list[CanaryHit] = []
        for ids in in_chunks(sorted(set(fingerprints))):
            async for doc in self._sealed.canaries.find({"fingerprint": {"$in": ids}}):
                hits.append(
                    CanaryHit(
                        doc["tenant_id"],
                        doc["submission_id"],
                        doc["pool_id"],
                        doc["item_id"],
                        doc["chance"],
                        doc["fingerprint"],
                    )
                )
            # An older download's fictitious canaries, indexed by fingerprint alone.
            async for doc in self._sealed.canaries.find({"_id": {"$in": ids}}):
                hits.append(
                    CanaryHit(
                        doc["tenant_id"],
                        doc["submission_id"],
                        doc["pool_id"],
                        doc["item_id"],
                        fingerprint=doc["_id"],
                    )
                )
        return hits

    async def variants(self) -> AsyncIterator[Variant]:
        async for doc in self._sealed.variants.find({}):
            yield variant_from_doc(doc)
