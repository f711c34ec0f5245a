"""MongoTaskBank: tasks, sealed keys, frozen pools, exposures and assignments in MongoDB."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from medbench_runtime.errors import AlreadyExists, FailedPrecondition, NotFound
from medbench_storage.indexes import IndexSpec, asc
from rotator.core.bank import FrozenPool, KeyRecord, TaskRecord, chunks
from rotator.core.options import parse_options

INDEXES = (
    IndexSpec("tasks", asc("track", "dataset")),
    IndexSpec("tasks", asc("group_id")),
    IndexSpec("pool_items", asc("pool_id", "chunk")),
    IndexSpec("pools", asc("track", "board", "published_at")),
)
SEALED_INDEXES = (IndexSpec("pool_keys", asc("pool_id", "chunk")),)
# $in lists stay short: long ones are slow on some MongoDB-wire servers.
IN_CHUNK = 100


@dataclass(frozen=True)
class Incoming:
    """One validated item to store."""

    task: TaskRecord
    key: KeyRecord | None
    hash: str
    image_ids: tuple[str, ...] = ()
    primary_specialty: str = ""


@dataclass(frozen=True)
class ImportCounts:
    """What an import batch did."""

    imported: int
    unchanged: int
    new_versions: int


def task_from_doc(doc: Mapping[str, Any]) -> TaskRecord:
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
        source=doc.get("source", ""),
        messages=tuple((m["role"], m["content"]) for m in doc.get("messages", ())),
    )


def key_from_doc(doc: Mapping[str, Any]) -> KeyRecord:
    return KeyRecord(
        doc["_id"],
        tuple(doc.get("reference", ())),
        tuple(doc.get("key_points", ())),
        doc.get("rubric_id", ""),
    )


def _split(ids: Sequence[str]) -> Iterable[list[str]]:
    for i in range(0, len(ids), IN_CHUNK):
        yield list(ids[i : i + IN_CHUNK])


class MongoTaskBank:
    """The bank lives in the main database; references and pool keys in the sealed one."""

    def __init__(
        self, db: AsyncDatabase[dict[str, Any]], sealed: AsyncDatabase[dict[str, Any]]
    ) -> None:
        self._db = db
        self._sealed = sealed

    # -- import ---------------------------------------------------------------------------

    async def import_items(self, items: Sequence[Incoming]) -> ImportCounts:
        """Stores items. Keys are written before tasks, so a task never exists without the
        key of its version; a crash in between is repaired by importing again."""
        now = datetime.now(UTC)
        keyed = [i for i in items if i.key is not None]
        stale_keys = await self._insert_ignoring_duplicates(
            self._sealed.references, [_key_doc(i, 1) for i in keyed]
        )
        existing = await self._insert_ignoring_duplicates(
            self._db.tasks, [_task_doc(i, 1, now) for i in items]
        )
        by_id = {i.task.item_id: i for i in items}
        # A key left by an import that crashed before its task: the task is new, so the key
        # must be this content's, version 1.
        for item_id in sorted(stale_keys - existing):
            await self._sealed.references.replace_one(
                {"_id": item_id}, _key_doc(by_id[item_id], 1), upsert=True
            )
        unchanged = new_versions = 0
        for ids in _split(sorted(existing)):
            async for old in self._db.tasks.find(
                {"_id": {"$in": ids}}, {"hash": 1, "version": 1, "keyed": 1}
            ):
                item = by_id[old["_id"]]
                if old["hash"] == item.hash:
                    unchanged += 1
                    continue
                version = old["version"] + 1
                if item.key is not None:
                    await self._sealed.references.replace_one(
                        {"_id": old["_id"]}, _key_doc(item, version), upsert=True
                    )
                await self._db.tasks.replace_one({"_id": old["_id"]}, _task_doc(item, version, now))
                new_versions += 1
        return ImportCounts(len(items) - len(existing), unchanged, new_versions)

    @staticmethod
    async def _insert_ignoring_duplicates(collection: Any, docs: list[dict[str, Any]]) -> set[str]:
        """Inserts docs; returns the ids that already existed (fresh keys of fresh items
        that exist from a crashed import are overwritten below by the version logic)."""
        if not docs:
            return set()
        try:
            await collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details["writeErrors"]
            if any(e["code"] != 11000 for e in errors):
                raise
            return {e["op"]["_id"] for e in errors}
        return set()

    async def dataset_counts(self, track: str | None) -> dict[str, tuple[int, int]]:
        """dataset -> (items, keyed items) in the bank."""
        match: dict[str, Any] = {} if track is None else {"track": track}
        counts: dict[str, tuple[int, int]] = {}
        async for row in await self._db.tasks.aggregate(
            [
                {"$match": match},
                {
                    "$group": {
                        "_id": "$dataset",
                        "n": {"$sum": 1},
                        "keyed": {"$sum": {"$cond": ["$keyed", 1, 0]}},
                    }
                },
            ]
        ):
            counts[row["_id"]] = (row["n"], row["keyed"])
        return counts

    # -- reading the bank -----------------------------------------------------------------

    async def stream_candidates(
        self, track: str, datasets: Sequence[str]
    ) -> AsyncIterator[tuple[str, str, str]]:
        """(dataset, group_id, primary specialty) of every keyed task; prompts are not read.

        One unfiltered scan, filtered here: a collection scan with a projection is about twice
        as fast on the development Mongo-wire server as an index-driven filter."""
        wanted = set(datasets)
        cursor = self._db.tasks.find(
            {},
            {"track": 1, "keyed": 1, "dataset": 1, "group_id": 1, "primary_specialty": 1, "_id": 0},
        ).batch_size(10_000)
        async for doc in cursor:
            if doc["track"] != track or not doc["keyed"]:
                continue
            if wanted and doc["dataset"] not in wanted:
                continue
            yield doc["dataset"], doc["group_id"], doc.get("primary_specialty", "")

    async def group_entries(
        self, group_ids: Sequence[str]
    ) -> list[tuple[TaskRecord, int, KeyRecord, tuple[str, ...]]]:
        """Every task of the groups, with its key and image ids."""
        docs: list[dict[str, Any]] = []
        for ids in _split(list(group_ids)):
            docs += await self._db.tasks.find({"group_id": {"$in": ids}, "keyed": True}).to_list()
        return await self._with_keys(docs)

    async def bank_entries(
        self, track: str, datasets: Sequence[str]
    ) -> list[tuple[TaskRecord, int, KeyRecord, tuple[str, ...]]]:
        """Every keyed task of a track (whole-bank pools: small banks only)."""
        query: dict[str, Any] = {"track": track, "keyed": True}
        if datasets:
            query["dataset"] = {"$in": list(datasets)}
        docs = await self._db.tasks.find(query).batch_size(5000).to_list()
        return await self._with_keys(docs)

    async def _with_keys(
        self, docs: list[dict[str, Any]]
    ) -> list[tuple[TaskRecord, int, KeyRecord, tuple[str, ...]]]:
        keys: dict[str, dict[str, Any]] = {}
        if len(docs) > 20 * IN_CHUNK:
            async for key in self._sealed.references.find({}).batch_size(5000):
                keys[key["_id"]] = key
        else:
            for ids in _split([d["_id"] for d in docs]):
                async for key in self._sealed.references.find({"_id": {"$in": ids}}):
                    keys[key["_id"]] = key
        out = []
        for doc in docs:
            key = keys.get(doc["_id"])
            if key is None or key["version"] != doc["version"]:
                raise FailedPrecondition(
                    f"item {doc['_id']} has no sealed key of version {doc['version']}; "
                    f"import it again"
                )
            out.append(
                (
                    task_from_doc(doc),
                    doc["version"],
                    key_from_doc(key),
                    tuple(doc.get("image_ids", ())),
                )
            )
        return out

    # -- pools ----------------------------------------------------------------------------

    async def find_pool(self, pool_id: str) -> dict[str, Any] | None:
        return await self._db.pools.find_one({"_id": pool_id})

    async def previous_pool(self, track: str, board: str) -> dict[str, Any] | None:
        pointer = await self._db.current_pools.find_one({"_id": f"{track}:{board}"})
        return None if pointer is None else await self.find_pool(pointer["pool_id"])

    async def pool_groups(self, pool_id: str) -> dict[str, list[str]]:
        """dataset -> group ids of a stored pool, in pool order."""
        groups: dict[str, list[str]] = {}
        async for chunk in self._sealed.pool_keys.find({"pool_id": pool_id}).sort("chunk", 1):
            for key in chunk["keys"]:
                listed = groups.setdefault(key["dataset"], [])
                if key["group_id"] not in listed:
                    listed.append(key["group_id"])
        return groups

    async def exposures(self) -> dict[str, int]:
        """group_id -> number of rotated pools it was served in (only served groups stored)."""
        return {d["_id"]: len(d["pools"]) async for d in self._db.exposures.find({})}

    async def store_pool(
        self, pool: FrozenPool, meta: Mapping[str, Any], image_ids: Mapping[str, tuple[str, ...]]
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
                            "n_options": _option_count(p.task),
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
                            **(
                                {"prompt": _judge_prompt(p.task)}
                                if "judge" in p.dataset.metric
                                else {}
                            ),
                        }
                        for p in part
                    ],
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
                    **meta,
                }
            )
        except DuplicateKeyError as exc:
            raise AlreadyExists(f"pool {pool.pool_id} was published concurrently") from exc

    async def make_current(
        self, session: AsyncClientSession, track: str, board: str, pool_id: str
    ) -> None:
        """Points the board at the pool."""
        await self._db.current_pools.update_one(
            {"_id": f"{track}:{board}"},
            {"$set": {"pool_id": pool_id, "since": datetime.now(UTC)}},
            upsert=True,
            session=session,
        )

    async def count_exposures(self, pool_id: str, group_ids: Iterable[str]) -> None:
        """Idempotent: a group's exposure record lists each pool once."""
        for group_id in group_ids:
            await self._db.exposures.update_one(
                {"_id": group_id}, {"$addToSet": {"pools": pool_id}}, upsert=True
            )

    async def is_current(self, pool: Mapping[str, Any]) -> bool:
        pointer = await self._db.current_pools.find_one(
            {"_id": f"{pool['track']}:{pool.get('board', 'upload')}"}
        )
        return pointer is not None and pointer["pool_id"] == pool["_id"]

    async def current_pool(self, track: str, board: str) -> dict[str, Any]:
        pointer = await self._db.current_pools.find_one({"_id": f"{track}:{board}"})
        if pointer is None:
            raise FailedPrecondition(f"no pool is published for track {track}, board {board}")
        pool = await self._db.pools.find_one({"_id": pointer["pool_id"]})
        if pool is None:
            raise FailedPrecondition(f"current pool {pointer['pool_id']} of {track} is missing")
        return pool

    # -- assignments ----------------------------------------------------------------------

    async def assign(
        self, submission_id: str, tenant_id: str, track: str, board: str
    ) -> dict[str, Any]:
        """The submission's assignment, created on first call (idempotent)."""
        found = await self._db.assignments.find_one({"_id": submission_id})
        if found is not None:
            return found
        pool = await self.current_pool(track, board)
        doc = {
            "_id": submission_id,
            "tenant_id": tenant_id,
            "track": track,
            "board": board,
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

    async def variant(self, submission_id: str) -> dict[str, Any] | None:
        """The sealed per-download variant (option orders, canaries) of a submission."""
        return await self._sealed.variants.find_one({"_id": submission_id})

    async def store_variant(self, doc: dict[str, Any]) -> None:
        """Idempotent: the variant is a pure function of secret, tenant and pool."""
        for canary in doc["canaries"]:
            await self._sealed.canaries.replace_one(
                {"_id": canary["fingerprint"]},
                {
                    "tenant_id": doc["tenant_id"],
                    "submission_id": doc["_id"],
                    "pool_id": doc["pool_id"],
                    "item_id": canary["item_id"],
                },
                upsert=True,
            )
        await self._sealed.variants.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    async def canary_hits(self, fingerprints: Sequence[str]) -> list[dict[str, Any]]:
        hits: list[dict[str, Any]] = []
        for ids in _split(list(fingerprints)):
            hits += await self._sealed.canaries.find({"_id": {"$in": ids}}).to_list()
        return hits

    async def all_variants(self) -> AsyncIterator[dict[str, Any]]:
        """Every stored variant (one per submission); the caller matches items."""
        async for doc in self._sealed.variants.find({}):
            yield doc

    async def tasks_by_id(self, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for ids in _split(list(item_ids)):
            async for doc in self._db.tasks.find(
                {"_id": {"$in": ids}}, {"question": 1, "answer_format": 1}
            ):
                found[doc["_id"]] = doc
        return found

    async def assignment(self, submission_id: str) -> dict[str, Any]:
        found = await self._db.assignments.find_one({"_id": submission_id})
        if found is None:
            raise NotFound(f"submission {submission_id} has no assignment")
        return found

    async def pool_chunks(self, pool_id: str) -> AsyncIterator[dict[str, Any]]:
        async for doc in self._db.pool_items.find({"pool_id": pool_id}).sort("chunk", 1):
            yield doc


def _option_count(task: TaskRecord) -> int:
    """Options a choice item shows (0 when it has none to reorder)."""
    if not task.answer_format.startswith("choice"):
        return 0
    block = parse_options(task.question)
    return 0 if block is None else len(block.texts)


def _task_doc(item: Incoming, version: int, now: datetime) -> dict[str, Any]:
    t = item.task
    return {
        "_id": t.item_id,
        "dataset": t.dataset,
        "track": t.track,
        "question": t.question,
        "answer_format": t.answer_format,
        "group_id": t.group_id,
        "specialties": list(t.specialties),
        "primary_specialty": item.primary_specialty,
        "image_paths": list(t.image_paths),
        "image_ids": list(item.image_ids),
        "messages": [{"role": r, "content": c} for r, c in t.messages],
        "source": t.source,
        "provenance": t.provenance,
        "licence": t.licence,
        "version": version,
        "hash": item.hash,
        "keyed": item.key is not None,
        "imported_at": now,
    }


def _key_doc(item: Incoming, version: int) -> dict[str, Any]:
    assert item.key is not None
    return {
        "_id": item.key.item_id,
        "reference": list(item.key.reference),
        "key_points": list(item.key.key_points),
        "rubric_id": item.key.rubric_id,
        "version": version,
        "hash": item.hash,
    }


def _judge_prompt(task: TaskRecord) -> str:
    """What the judge is shown as the question: the prompt text, or a multi-turn item's
    dialogue with its roles."""
    if not task.messages:
        return task.question
    turns = "\n".join(f"{role}: {content}" for role, content in task.messages)
    return f"{task.question}\n{turns}" if task.question else turns
