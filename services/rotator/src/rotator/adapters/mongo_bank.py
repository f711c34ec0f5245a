"""MongoTaskBank: tasks, sealed keys, frozen pools and assignments in MongoDB."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from medbench_runtime.errors import AlreadyExists, FailedPrecondition, NotFound
from medbench_storage.indexes import IndexSpec, asc
from rotator.core.bank import FrozenPool, KeyRecord, TaskRecord, chunks, content_hash

INDEXES = (
    IndexSpec("tasks", asc("track", "dataset")),
    IndexSpec("pool_items", asc("pool_id", "chunk")),
)
SEALED_INDEXES = (IndexSpec("pool_keys", asc("pool_id", "chunk")),)


def task_from_doc(doc: dict[str, Any]) -> TaskRecord:
    return TaskRecord(
        item_id=doc["_id"],
        dataset=doc["dataset"],
        track=doc["track"],
        question=doc["question"],
        answer_format=doc["answer_format"],
        group_id=doc["group_id"],
        specialties=tuple(doc.get("specialties", ())),
        image_paths=tuple(doc.get("image_paths", ())),
        provenance=doc.get("provenance", ""),
        licence=doc.get("licence", ""),
    )


class MongoTaskBank:
    """The bank lives in the main database; references and pool keys in the sealed one."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], sealed: AsyncDatabase[dict[str, Any]]):
        self._db = db
        self._sealed = sealed

    async def import_items(self, items: Sequence[tuple[TaskRecord, KeyRecord]]) -> tuple[int, int]:
        """Stores items; returns (imported, unchanged). A changed item gets version + 1."""
        now = datetime.now(UTC)
        hashes = {t.item_id: content_hash(t, k) for t, k in items}
        task_docs = [
            {
                "_id": t.item_id,
                **_task_fields(t),
                "version": 1,
                "hash": hashes[t.item_id],
                "imported_at": now,
            }
            for t, _ in items
        ]
        key_docs = [
            {
                "_id": k.item_id,
                "reference": list(k.reference),
                "version": 1,
                "hash": hashes[k.item_id],
            }
            for _, k in items
        ]
        existing: set[str] = set()
        try:
            await self._db.tasks.insert_many(task_docs, ordered=False)
        except BulkWriteError as exc:
            existing = {e["op"]["_id"] for e in exc.details["writeErrors"] if e["code"] == 11000}
            if len(existing) != len(exc.details["writeErrors"]):
                raise
        fresh_keys = [d for d in key_docs if d["_id"] not in existing]
        if fresh_keys:
            try:
                await self._sealed.references.insert_many(fresh_keys, ordered=False)
            except BulkWriteError as exc:
                # A key can exist without its task after a crash between the two inserts.
                if any(e["code"] != 11000 for e in exc.details["writeErrors"]):
                    raise
                for e in exc.details["writeErrors"]:
                    doc = e["op"]
                    await self._sealed.references.replace_one({"_id": doc["_id"]}, doc)
        unchanged = 0
        by_id = {t.item_id: (t, k) for t, k in items}
        for item_id in existing:
            old = await self._db.tasks.find_one({"_id": item_id}, {"hash": 1, "version": 1})
            if old is None:
                continue
            if old["hash"] == hashes[item_id]:
                unchanged += 1
                continue
            task, key = by_id[item_id]
            version = old["version"] + 1
            await self._sealed.references.replace_one(
                {"_id": item_id},
                {"reference": list(key.reference), "version": version, "hash": hashes[item_id]},
                upsert=True,
            )
            await self._db.tasks.update_one(
                {"_id": item_id},
                {
                    "$set": {
                        **_task_fields(task),
                        "version": version,
                        "hash": hashes[item_id],
                        "imported_at": now,
                    }
                },
            )
        return len(items) - unchanged, unchanged

    async def bank_entries(
        self, track: str, datasets: Sequence[str]
    ) -> AsyncIterator[tuple[TaskRecord, int, KeyRecord]]:
        """Every current task of a track (optionally some datasets) with its sealed key."""
        query: dict[str, Any] = {"track": track}
        if datasets:
            query["dataset"] = {"$in": list(datasets)}
        keys: dict[str, dict[str, Any]] = {}
        async for doc in self._sealed.references.find({}).batch_size(5000):
            keys[doc["_id"]] = doc
        async for doc in self._db.tasks.find(query).batch_size(5000):
            key = keys.get(doc["_id"])
            if key is None or key["version"] != doc["version"]:
                raise FailedPrecondition(f"item {doc['_id']} has no sealed key of its version")
            yield task_from_doc(doc), doc["version"], KeyRecord(doc["_id"], tuple(key["reference"]))

    async def find_pool(self, pool_id: str) -> dict[str, Any] | None:
        return await self._db.pools.find_one({"_id": pool_id})

    async def store_pool(self, pool: FrozenPool, registry_version: str) -> None:
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
                        }
                        for p in part
                    ],
                },
                upsert=True,
            )
        try:
            await self._db.pools.insert_one(
                {
                    "_id": pool.pool_id,
                    "track": pool.track,
                    "item_count": len(pool.items),
                    "datasets": [{"dataset": d, "items": n} for d, n in pool.dataset_counts],
                    "digest": pool.digest,
                    "chunk_count": len(parts),
                    "registry_version": registry_version,
                    "published_at": datetime.now(UTC),
                }
            )
        except DuplicateKeyError as exc:
            raise AlreadyExists(f"pool {pool.pool_id} was published concurrently") from exc

    async def make_current(self, session: AsyncClientSession, track: str, pool_id: str) -> None:
        await self._db.current_pools.update_one(
            {"_id": track},
            {"$set": {"pool_id": pool_id, "since": datetime.now(UTC)}},
            upsert=True,
            session=session,
        )

    async def current_pool(self, track: str) -> dict[str, Any]:
        pointer = await self._db.current_pools.find_one({"_id": track})
        if pointer is None:
            raise FailedPrecondition(f"no pool is published for track {track}")
        pool = await self._db.pools.find_one({"_id": pointer["pool_id"]})
        if pool is None:
            raise FailedPrecondition(f"current pool {pointer['pool_id']} of {track} is missing")
        return pool

    async def assign(self, submission_id: str, tenant_id: str, track: str) -> dict[str, Any]:
        """The submission's assignment, created on first call (idempotent)."""
        found = await self._db.assignments.find_one({"_id": submission_id})
        if found is not None:
            return found
        pool = await self.current_pool(track)
        doc = {
            "_id": submission_id,
            "tenant_id": tenant_id,
            "track": track,
            "pool_id": pool["_id"],
            "assigned_at": datetime.now(UTC),
        }
        try:
            await self._db.assignments.insert_one(doc)
        except DuplicateKeyError:
            found = await self._db.assignments.find_one({"_id": submission_id})
            assert found is not None
            return found
        return doc

    async def assignment(self, submission_id: str) -> dict[str, Any]:
        found = await self._db.assignments.find_one({"_id": submission_id})
        if found is None:
            raise NotFound(f"submission {submission_id} has no assignment")
        return found

    async def pool_chunks(self, pool_id: str) -> AsyncIterator[dict[str, Any]]:
        async for doc in self._db.pool_items.find({"pool_id": pool_id}).sort("chunk", 1):
            yield doc


def _task_fields(t: TaskRecord) -> dict[str, Any]:
    fields = asdict(t)
    fields.pop("item_id")
    fields["specialties"] = list(t.specialties)
    fields["image_paths"] = list(t.image_paths)
    return fields
