"""MongoJobs: dispatch jobs, recorded responses, and the sealed endpoint keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from medbench_storage.endpoint_keys import EndpointKeys, KeyNotHeld
from medbench_storage.indexes import IndexSpec, asc

DUPLICATE_KEY = 11000
INDEXES = (
    IndexSpec("dispatch_jobs", asc("state")),
    IndexSpec("responses", asc("submission_id", "batched")),
)


class MongoJobs:
    """Dispatcher-owned collections (and the sealed endpoint keys the gateway stores)."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], keys: EndpointKeys | None = None) -> None:
        self._db = db
        self._keys = keys

    async def upsert_job(self, doc: dict[str, Any]) -> None:
        """Idempotent: a redelivered submission.created changes nothing."""
        await self._db.dispatch_jobs.update_one(
            {"_id": doc["_id"]}, {"$setOnInsert": doc}, upsert=True
        )

    async def job(self, submission_id: str) -> dict[str, Any] | None:
        return await self._db.dispatch_jobs.find_one({"_id": submission_id})

    async def state(self, submission_id: str) -> str | None:
        doc = await self._db.dispatch_jobs.find_one({"_id": submission_id}, {"state": 1})
        return None if doc is None else str(doc["state"])

    async def running(self) -> list[dict[str, Any]]:
        return await self._db.dispatch_jobs.find({"state": "RUNNING"}).to_list()

    async def set_state(self, submission_id: str, state: str, reason: str = "") -> None:
        await self._db.dispatch_jobs.update_one(
            {"_id": submission_id},
            {"$set": {"state": state, "reason": reason, "updated_at": datetime.now(UTC)}},
        )

    async def set_counts(self, submission_id: str, answered: int, infra_failed: int) -> None:
        """The outcome counts of a finished run, so status reads need not count responses."""
        await self._db.dispatch_jobs.update_one(
            {"_id": submission_id},
            {"$set": {"answered": answered, "infra_failed": infra_failed}},
        )

    async def resume(self, submission_id: str) -> int:
        """Forgets the infrastructure failures of a STALLED job and runs it again; returns how
        many items will be sent again (0 when the job was not STALLED).

        Failures are deleted before the state changes: a crash in between leaves a STALLED
        job without failures, which the next resume runs (and which then sends what is left).
        """
        stalled = await self._db.dispatch_jobs.find_one(
            {"_id": submission_id, "state": "STALLED"}, {"_id": 1}
        )
        if stalled is None:
            return 0
        deleted = await self._db.responses.delete_many(
            {"submission_id": submission_id, "status": "infra_failed"}
        )
        changed = await self._db.dispatch_jobs.update_one(
            {"_id": submission_id, "state": "STALLED"},
            {
                "$set": {"state": "RUNNING", "reason": "", "updated_at": datetime.now(UTC)},
                "$unset": {"answered": "", "infra_failed": ""},
            },
        )
        return deleted.deleted_count if changed.modified_count else 0

    async def add_calls(self, submission_id: str, calls: int) -> None:
        await self._db.dispatch_jobs.update_one({"_id": submission_id}, {"$inc": {"calls": calls}})

    async def api_key(self, submission_id: str, tenant_id: str) -> str:
        """The endpoint's API key in clear (kept in memory only); KeyNotHeld or CannotOpen
        (medbench_storage.secrets errors) when it cannot be had."""
        if self._keys is None:
            raise KeyNotHeld("no endpoint key store is configured")
        return await self._keys.get(tenant_id, submission_id)

    async def forget_key(self, submission_id: str) -> None:
        """Deletes the endpoint key of a run that is over (idempotent)."""
        if self._keys is not None:
            await self._keys.delete(submission_id)

    async def stalled_before(self, cutoff: datetime) -> list[dict[str, Any]]:
        """STALLED jobs unchanged since before cutoff."""
        return await self._db.dispatch_jobs.find(
            {"state": "STALLED", "updated_at": {"$lt": cutoff}}, {"tenant_id": 1, "updated_at": 1}
        ).to_list()

    async def fail_stalled(self, doc: dict[str, Any], reason: str) -> bool:
        """FAILED with reason, unless the job was resumed or changed meanwhile."""
        result = await self._db.dispatch_jobs.update_one(
            {"_id": doc["_id"], "state": "STALLED", "updated_at": doc["updated_at"]},
            {"$set": {"state": "FAILED", "reason": reason, "updated_at": datetime.now(UTC)}},
        )
        return result.modified_count == 1

    async def states(self, submission_ids: Sequence[str]) -> dict[str, str]:
        """The states of these jobs (those that exist)."""
        found = self._db.dispatch_jobs.find({"_id": {"$in": list(submission_ids)}}, {"state": 1})
        return {str(d["_id"]): str(d["state"]) async for d in found}

    async def record_many(self, docs: Sequence[dict[str, Any]]) -> list[bool]:
        """Stores item outcomes in one write; per doc, False when it was already recorded."""
        try:
            await self._db.responses.insert_many(list(docs), ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            duplicates = {int(e["index"]) for e in errors}
            return [i not in duplicates for i in range(len(docs))]
        return [True] * len(docs)

    async def recorded(self, submission_id: str) -> list[dict[str, Any]]:
        return await self._db.responses.find(
            {"submission_id": submission_id},
            {
                "item_id": 1,
                "status": 1,
                "batched": 1,
                "ordinal": 1,
                "dataset": 1,
                "text": 1,
                "prompt_hash": 1,
            },
        ).to_list()

    async def next_batch(self, session: AsyncClientSession, submission_id: str) -> int:
        """A fresh batch number for the submission (inside the flush transaction)."""
        job = await self._db.dispatch_jobs.find_one_and_update(
            {"_id": submission_id}, {"$inc": {"batches": 1}}, session=session
        )
        assert job is not None
        return int(job.get("batches", 0))

    async def claim(self, session: AsyncClientSession, ids: Sequence[str], batch_id: str) -> None:
        """Marks responses as published in batch_id."""
        for i in range(0, len(ids), 100):
            await self._db.responses.update_many(
                {"_id": {"$in": list(ids[i : i + 100])}, "batched": ""},
                {"$set": {"batched": batch_id}},
                session=session,
            )

    async def counts(self, submission_id: str) -> tuple[int, int]:
        answered = await self._db.responses.count_documents(
            {"submission_id": submission_id, "status": "answered"}
        )
        failed = await self._db.responses.count_documents(
            {"submission_id": submission_id, "status": "infra_failed"}
        )
        return answered, failed
