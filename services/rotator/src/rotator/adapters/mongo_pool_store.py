"""MongoPoolStore: frozen pools (items in chunks, keys sealed) and exposures in MongoDB."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from medbench_runtime.errors import AlreadyExists, FailedPrecondition
from medbench_storage.indexes import IndexSpec, asc
from rotator.core.bank import FrozenPool, TaskRecord, chunks
from rotator.core.download import option_count
from rotator.core.pools import (
    DEFAULT_BOARD,
    PoolEntry,
    PoolKeyEntry,
    PoolMeta,
    PoolParams,
    PoolRecord,
)

INDEXES = (
    IndexSpec("pool_items", asc("pool_id", "chunk")),
    IndexSpec("pools", asc("track", "board", "published_at")),
)
SEALED_INDEXES = (IndexSpec("pool_keys", asc("pool_id", "chunk")),)


def pool_from_doc(doc: Mapping[str, Any]) -> PoolRecord:
    """A pool document (fields after "digest" may be absent: whole-bank pools, older pools)."""
    params = doc.get("params")
    return PoolRecord(
        pool_id=doc["_id"],
        track=doc["track"],
        item_count=doc["item_count"],
        datasets=tuple((d["dataset"], d["items"]) for d in doc["datasets"]),
        published_at=doc["published_at"],
        digest=doc["digest"],
        board=doc.get("board", DEFAULT_BOARD),
        registry_version=doc.get("registry_version", ""),
        method=doc.get("method", ""),
        cycle=doc.get("cycle", ""),
        seed=doc.get("seed", 0),
        anchor_groups=doc.get("anchor_groups", 0),
        group_count=doc.get("group_count", 0),
        params=None
        if params is None
        else PoolParams(
            params["seed"],
            params["groups_per_dataset"],
            params["exposure_cap"],
            params["anchors_per_dataset"],
            tuple(params["datasets"]),
        ),
        shortfalls=tuple(doc.get("shortfalls", ())),
        disclosed_at=doc.get("disclosed_at"),
    )


def _meta_doc(meta: PoolMeta) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "board": meta.board,
        "method": meta.method,
        "registry_version": meta.registry_version,
    }
    r = meta.rotation
    if r is not None:
        doc |= {
            "cycle": r.cycle,
            "seed": r.seed,
            "anchor_groups": r.anchor_groups,
            "params": {
                "seed": r.params.seed,
                "groups_per_dataset": r.params.groups_per_dataset,
                "exposure_cap": r.params.exposure_cap,
                "anchors_per_dataset": r.params.anchors_per_dataset,
                "datasets": list(r.params.datasets),
            },
            "shortfalls": list(r.shortfalls),
            "previous_pool": r.previous_pool,
        }
    return doc


class MongoPoolStore:
    """PoolStore: pools, their item chunks and exposures in the main database, the chunks'
    keys in the sealed one."""

    def __init__(
        self, db: AsyncDatabase[dict[str, Any]], sealed: AsyncDatabase[dict[str, Any]]
    ) -> None:
        self._db = db
        self._sealed = sealed

    async def find_pool(self, pool_id: str) -> PoolRecord | None:
        doc = await self._db.pools.find_one({"_id": pool_id})
        return None if doc is None else pool_from_doc(doc)

    async def previous_pool(self, track: str, board: str) -> PoolRecord | None:
        pointer = await self._db.current_pools.find_one({"_id": f"{track}:{board}"})
        return None if pointer is None else await self.find_pool(pointer["pool_id"])

    async def current_pool(self, track: str, board: str) -> PoolRecord:
        pointer = await self._db.current_pools.find_one({"_id": f"{track}:{board}"})
        if pointer is None:
            raise FailedPrecondition(f"no pool is published for track {track}, board {board}")
        pool = await self.find_pool(pointer["pool_id"])
        if pool is None:
            raise FailedPrecondition(f"current pool {pointer['pool_id']} of {track} is missing")
        return pool

    async def is_current(self, pool: PoolRecord) -> bool:
        pointer = await self._db.current_pools.find_one({"_id": f"{pool.track}:{pool.board}"})
        return pointer is not None and pointer["pool_id"] == pool.pool_id

    async def current_pools(self) -> list[PoolRecord]:
        found = []
        async for pointer in self._db.current_pools.find({}).sort("_id", 1):
            pool = await self.find_pool(pointer["pool_id"])
            if pool is None:
                raise FailedPrecondition(f"current pool {pointer['pool_id']} is missing")
            found.append(pool)
        return found

    async def retired_groups(self) -> set[str]:
        """The `retired_groups` collection (written by MongoCurrentPools.disclose)."""
        return {d["_id"] async for d in self._db.retired_groups.find({}, {"_id": 1})}

    async def pool_groups(self, pool_id: str) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        async for chunk in self._sealed.pool_keys.find({"pool_id": pool_id}).sort("chunk", 1):
            for key in chunk["keys"]:
                listed = groups.setdefault(key["dataset"], [])
                if key["group_id"] not in listed:
                    listed.append(key["group_id"])
        return groups

    async def exposures(self) -> dict[str, int]:
        return {d["_id"]: len(d["pools"]) async for d in self._db.exposures.find({})}

    async def store_pool(
        self, pool: FrozenPool, meta: PoolMeta, image_ids: Mapping[str, tuple[str, ...]]
    ) -> None:
        """Writes the chunks (idempotent ids), then the pool document: the commit point."""
        parts = chunks(pool.items)
        for n, part in enumerate(parts):
            chunk_id = f"{pool.pool_id}:{n:06d}"
            await self._db.pool_items.replace_one(
                {"_id": chunk_id},
                {
                    "pool_id": pool.pool_id,
                    "chunk": n,
                    "items": [
                        {
                            "item_id": p.task.item_id,
                            "ordinal": p.ordinal,
                            "version": p.version,
                            "dataset": p.task.dataset,
                            "question": p.task.question,
                            "image_paths": list(p.task.image_paths),
                            "image_ids": list(image_ids.get(p.task.item_id, ())),
                            "messages": [{"role": r, "content": c} for r, c in p.task.messages],
                            "n_options": option_count(p.task),
                            "answer_format": p.task.answer_format,
                        }
                        for p in part
                    ],
                },
                upsert=True,
            )
            await self._sealed.pool_keys.replace_one(
                {"_id": chunk_id},
                {
                    "pool_id": pool.pool_id,
                    "chunk": n,
                    "keys": [
                        {
                            "item_id": p.task.item_id,
                            "ordinal": p.ordinal,
                            "version": p.version,
                            "dataset": p.task.dataset,
                            "dimension": p.dataset.dimension,
                            "group_id": p.task.group_id or p.task.item_id,
                            "metric": p.dataset.metric,
                            "rule": p.dataset.rule,
                            "reference": list(p.key.reference),
                            "key_points": list(p.key.key_points),
                            "rubric_id": p.key.rubric_id,
                            # The judge needs the prompt the answer responds to; objective
                            # metrics do not, so MCQ-heavy pools stay small.
                            # ... and sees the item's images (their bank content ids).
                            **(
                                {
                                    "prompt": _judge_prompt(p.task),
                                    "image_ids": list(image_ids.get(p.task.item_id, ())),
                                }
                                if "judge" in p.dataset.metric
                                else {}
                            ),
                        }
                        for p in part
                    ],
                    # The first chunk carries what a report on the pool must cover.
                    **({"coverage": [list(c) for c in meta.coverage]} if n == 0 else {}),
                },
                upsert=True,
            )
        groups = {p.task.group_id or p.task.item_id for p in pool.items}
        try:
            await self._db.pools.insert_one(
                {
                    "_id": pool.pool_id,
                    "track": pool.track,
                    "item_count": len(pool.items),
                    "group_count": len(groups),
                    "datasets": [{"dataset": d, "items": n} for d, n in pool.dataset_counts],
                    "digest": pool.digest,
                    "chunk_count": len(parts),
                    "published_at": datetime.now(UTC),
                    **_meta_doc(meta),
                }
            )
        except DuplicateKeyError as exc:
            raise AlreadyExists(f"pool {pool.pool_id} was published concurrently") from exc

    async def count_exposures(self, pool_id: str, group_ids: Iterable[str]) -> None:
        """Idempotent: a group's exposure record lists each pool once."""
        for group_id in group_ids:
            await self._db.exposures.update_one(
                {"_id": group_id}, {"$addToSet": {"pools": pool_id}}, upsert=True
            )

    async def pool_entries(self, pool_id: str) -> AsyncIterator[PoolEntry]:
        async for chunk in self._db.pool_items.find({"pool_id": pool_id}).sort("chunk", 1):
            for it in chunk["items"]:
                yield PoolEntry(
                    item_id=it["item_id"],
                    ordinal=it["ordinal"],
                    dataset=it["dataset"],
                    question=it["question"],
                    answer_format=it["answer_format"],
                    image_paths=tuple(it["image_paths"]),
                    image_ids=tuple(it.get("image_ids", ())),
                    messages=tuple((m["role"], m["content"]) for m in it.get("messages", ())),
                    n_options=it.get("n_options", 0),
                )

    async def pool_keys(self, pool_id: str) -> AsyncIterator[PoolKeyEntry]:
        async for chunk in self._sealed.pool_keys.find({"pool_id": pool_id}).sort("chunk", 1):
            for k in chunk["keys"]:
                yield PoolKeyEntry(
                    item_id=k["item_id"],
                    ordinal=k["ordinal"],
                    dataset=k["dataset"],
                    group_id=k.get("group_id") or k["item_id"],
                    metric=k["metric"],
                    reference=tuple(k.get("reference", ())),
                    key_points=tuple(k.get("key_points", ())),
                    prompt=k.get("prompt", ""),
                )


def _judge_prompt(task: TaskRecord) -> str:
    """What the judge is shown as the question: the prompt text, or a multi-turn item's
    dialogue with its roles."""
    if not task.messages:
        return task.question
    turns = "\n".join(f"{role}: {content}" for role, content in task.messages)
    return f"{task.question}\n{turns}" if task.question else turns
