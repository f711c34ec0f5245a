"""MongoTaskStore: the task bank in MongoDB (tasks in the main database, keys sealed)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from medbench_runtime.errors import FailedPrecondition
from medbench_storage.indexes import IndexSpec, asc
from rotator.core.bank import BankEntry, ImportCounts, Incoming, KeyRecord, TaskRecord

INDEXES = (
    IndexSpec("tasks", asc("track", "dataset")),
    IndexSpec("tasks", asc("group_id")),
)
# $in lists stay short: long ones are slow on some MongoDB-wire servers.
IN_CHUNK = 100


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


def in_chunks(ids: Sequence[str]) -> Iterable[list[str]]:
    for i in range(0, len(ids), IN_CHUNK):
        yield list(ids[i : i + IN_CHUNK])


class MongoTaskStore:
    """TaskStore: tasks in the main database, their references in the sealed one."""

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
        for ids in in_chunks(sorted(existing)):
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

    async def group_entries(self, group_ids: Sequence[str]) -> list[BankEntry]:
        """Every task of the groups, with its key and image ids."""
        docs: list[dict[str, Any]] = []
        for ids in in_chunks(list(group_ids)):
            docs += await self._db.tasks.find({"group_id": {"$in": ids}, "keyed": True}).to_list()
        return await self._with_keys(docs)

    async def bank_entries(self, track: str, datasets: Sequence[str]) -> list[BankEntry]:
        """Every keyed task of a track (whole-bank pools: small banks only)."""
        query: dict[str, Any] = {"track": track, "keyed": True}
        if datasets:
            query["dataset"] = {"$in": list(datasets)}
        docs = await self._db.tasks.find(query).batch_size(5000).to_list()
        return await self._with_keys(docs)

    async def _with_keys(self, docs: list[dict[str, Any]]) -> list[BankEntry]:
        keys: dict[str, dict[str, Any]] = {}
        if len(docs) > 20 * IN_CHUNK:
            async for key in self._sealed.references.find({}).batch_size(5000):
                keys[key["_id"]] = key
        else:
            for ids in in_chunks([d["_id"] for d in docs]):
                async for key in self._sealed.references.find({"_id": {"$in": ids}}):
                    keys[key["_id"]] = key
        out: list[BankEntry] = []
        for doc in docs:
            sealed = keys.get(doc["_id"])
            if sealed is None or sealed["version"] != doc["version"]:
                raise FailedPrecondition(
                    f"item {doc['_id']} has no sealed key of version {doc['version']}; "
                    f"import it again"
                )
            out.append(
                (
                    task_from_doc(doc),
                    doc["version"],
                    key_from_doc(sealed),
                    tuple(doc.get("image_ids", ())),
                )
            )
        return out

    async def questions(self, item_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for ids in in_chunks(list(item_ids)):
            async for doc in self._db.tasks.find({"_id": {"$in": ids}}, {"question": 1}):
                found[doc["_id"]] = doc["question"]
        return found


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
