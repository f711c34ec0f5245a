"""MongoJobs: the JobStore port over the dispatcher's collections (dispatch jobs, recorded
responses) and the sealed endpoint keys the gateway stores."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from dispatcher.core.jobs import (
    INFRA_FAILED,
    RUNNING,
    STALLED,
    ItemOutcome,
    JobSpec,
    JobStatus,
    Recorded,
)
from dispatcher.core.policy import DecodingSettings
from medbench_storage.endpoint_keys import EndpointKeys, KeyNotHeld
from medbench_storage.group_commit import GroupCommit
from medbench_storage.indexes import IndexSpec, asc

DUPLICATE_KEY = 11000
INDEXES = (
    IndexSpec("dispatch_jobs", asc("state")),
    IndexSpec("responses", asc("submission_id", "batched")),
)


def job_document(job: JobSpec, now: datetime) -> dict[str, Any]:
    """The stored form of a new job."""
    d = job.decoding
    return {
        "_id": job.submission_id,
        "tenant_id": job.tenant_id,
        "pool_id": job.pool_id,
        "track": job.track,
        "expected": job.expected,
        "state": RUNNING,
        "reason": "",
        "endpoint": {
            "base_url": job.base_url,
            "model": job.model,
            "max_concurrency": job.max_concurrency,
        },
        "self_test": job.self_test,
        "decoding": {
            "temperature": d.temperature,
            "max_tokens": d.max_tokens,
            "context_window": d.context_window,
            "top_p": d.top_p,
        },
        "calls": 0,
        "batches": 0,
        "created_at": now,
    }


def job_spec(doc: dict[str, Any]) -> JobSpec:
    d, e = doc["decoding"], doc["endpoint"]
    return JobSpec(
        submission_id=str(doc["_id"]),
        tenant_id=doc["tenant_id"],
        pool_id=doc["pool_id"],
        track=int(doc.get("track", 0)),
        expected=int(doc["expected"]),
        base_url=e["base_url"],
        model=e["model"],
        max_concurrency=int(e["max_concurrency"]),
        decoding=DecodingSettings(
            d["temperature"], d["max_tokens"], d["context_window"], d.get("top_p")
        ),
        self_test=bool(doc.get("self_test", False)),
    )


def job_status(doc: dict[str, Any]) -> JobStatus:
    return JobStatus(
        submission_id=str(doc["_id"]),
        tenant_id=doc.get("tenant_id", ""),
        state=doc.get("state", ""),
        reason=doc.get("reason", ""),
        answered=doc.get("answered"),
        infra_failed=doc.get("infra_failed"),
        calls=int(doc.get("calls", 0)),
        updated_at=doc.get("updated_at"),
    )


def outcome_document(outcome: ItemOutcome) -> dict[str, Any]:
    return {
        "_id": outcome.record_id,
        "submission_id": outcome.submission_id,
        "item_id": outcome.item_id,
        "ordinal": outcome.ordinal,
        "dataset": outcome.dataset,
        "prompt_hash": outcome.prompt_hash,
        "status": outcome.status,
        "text": outcome.text,
        "clipped": outcome.clipped,
        "finish_reason": outcome.finish_reason,
        "usage": outcome.usage,
        "latency_ms": outcome.latency_ms,
        "attempts": outcome.attempts,
        "error": outcome.error,
        "truncated": outcome.truncated,
        "digest": outcome.digest,
        "batched": "",
        "recorded_at": outcome.recorded_at,
    }


class MongoJobs:
    """Dispatcher-owned collections (and the sealed endpoint keys the gateway stores)."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], keys: EndpointKeys | None = None) -> None:
        self._db = db
        self._keys = keys
        # Concurrent calls finish together: their records share writes.
        self._records: GroupCommit[dict[str, Any], bool] = GroupCommit(self.record_many)

    async def add(self, job: JobSpec, now: datetime) -> None:
        await self.upsert_job(job_document(job, now))

    async def upsert_job(self, doc: dict[str, Any]) -> None:
        """Idempotent: a redelivered submission.created changes nothing."""
        await self._db.dispatch_jobs.update_one(
            {"_id": doc["_id"]}, {"$setOnInsert": doc}, upsert=True
        )

    async def job(self, submission_id: str) -> JobStatus | None:
        doc = await self._db.dispatch_jobs.find_one({"_id": submission_id})
        return None if doc is None else job_status(doc)

    async def state(self, submission_id: str) -> str | None:
        doc = await self._db.dispatch_jobs.find_one({"_id": submission_id}, {"state": 1})
        return None if doc is None else str(doc["state"])

    async def running(self) -> list[JobSpec]:
        return [
            job_spec(d) for d in await self._db.dispatch_jobs.find({"state": RUNNING}).to_list()
        ]

    async def set_state(
        self,
        tx: AsyncClientSession | None,
        submission_id: str,
        state: str,
        reason: str = "",
        now: datetime | None = None,
    ) -> None:
        await self._db.dispatch_jobs.update_one(
            {"_id": submission_id},
            {"$set": {"state": state, "reason": reason, "updated_at": now or datetime.now(UTC)}},
            session=tx,
        )

    async def finish(
        self,
        tx: AsyncClientSession | None,
        submission_id: str,
        state: str,
        reason: str,
        answered: int,
        infra_failed: int,
        calls: int,
    ) -> None:
        """The outcome of a finished run, so status reads need not count responses."""
        await self._db.dispatch_jobs.update_one(
            {"_id": submission_id},
            {
                "$set": {
                    "state": state,
                    "reason": reason,
                    "answered": answered,
                    "infra_failed": infra_failed,
                    "updated_at": datetime.now(UTC),
                },
                "$inc": {"calls": calls},
            },
            session=tx,
        )

    async def next_sequence(self, tx: AsyncClientSession | None, submission_id: str) -> int:
        job = await self._db.dispatch_jobs.find_one_and_update(
            {"_id": submission_id}, {"$inc": {"events": 1}}, {"events": 1}, session=tx
        )
        assert job is not None
        return int(job.get("events", 0)) + 1

    async def resume(self, submission_id: str) -> int:
        """Forgets the infrastructure failures of a STALLED job and runs it again; returns how
        many items will be sent again (0 when the job was not STALLED).

        Failures are deleted before the state changes: a crash in between leaves a STALLED
        job without failures, which the next resume runs (and which then sends what is left).
        """
        stalled = await self._db.dispatch_jobs.find_one(
            {"_id": submission_id, "state": STALLED}, {"_id": 1}
        )
        if stalled is None:
            return 0
        deleted = await self._db.responses.delete_many(
            {"submission_id": submission_id, "status": INFRA_FAILED}
        )
        changed = await self._db.dispatch_jobs.update_one(
            {"_id": submission_id, "state": STALLED},
            {
                "$set": {"state": RUNNING, "reason": "", "updated_at": datetime.now(UTC)},
                "$unset": {"answered": "", "infra_failed": ""},
            },
        )
        return deleted.deleted_count if changed.modified_count else 0

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

    async def stalled_before(self, cutoff: datetime) -> list[JobStatus]:
        """STALLED jobs unchanged since before cutoff."""
        found = await self._db.dispatch_jobs.find(
            {"state": STALLED, "updated_at": {"$lt": cutoff}},
            {"tenant_id": 1, "state": 1, "reason": 1, "answered": 1, "infra_failed": 1,
             "updated_at": 1},
        ).to_list()  # fmt: skip
        return [job_status(d) for d in found]

    async def fail_stalled(
        self, tx: AsyncClientSession | None, job: JobStatus, reason: str
    ) -> bool:
        """FAILED with reason, unless the job was resumed or changed meanwhile."""
        result = await self._db.dispatch_jobs.update_one(
            {"_id": job.submission_id, "state": STALLED, "updated_at": job.updated_at},
            {"$set": {"state": "FAILED", "reason": reason, "updated_at": datetime.now(UTC)}},
            session=tx,
        )
        return result.modified_count == 1

    async def states(self, submission_ids: Sequence[str]) -> dict[str, str]:
        """The states of these jobs (those that exist)."""
        found = self._db.dispatch_jobs.find({"_id": {"$in": list(submission_ids)}}, {"state": 1})
        return {str(d["_id"]): str(d["state"]) async for d in found}

    async def record(self, outcome: ItemOutcome) -> bool:
        return await self._records.submit(outcome_document(outcome))

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

    async def recorded(self, submission_id: str) -> list[Recorded]:
        found = await self._db.responses.find(
            {"submission_id": submission_id},
            {"item_id": 1, "status": 1, "batched": 1, "ordinal": 1, "dataset": 1, "text": 1,
             "prompt_hash": 1, "digest": 1},
        ).to_list()  # fmt: skip
        return [
            Recorded(
                item_id=d["item_id"],
                status=d["status"],
                ordinal=int(d.get("ordinal", 0)),
                dataset=d.get("dataset", ""),
                text=d.get("text", ""),
                prompt_hash=d.get("prompt_hash", ""),
                batched=d.get("batched", ""),
                digest=bytes(d.get("digest") or b""),
            )
            for d in found
        ]

    async def claim(
        self, tx: AsyncClientSession | None, submission_id: str, record_ids: Sequence[str]
    ) -> str:
        """A fresh batch id of the submission (its batch counter moved inside tx), the
        responses marked as published in it."""
        job = await self._db.dispatch_jobs.find_one_and_update(
            {"_id": submission_id}, {"$inc": {"batches": 1}}, session=tx
        )
        assert job is not None
        batch_id = f"api-{int(job.get('batches', 0)):06d}"
        for i in range(0, len(record_ids), 100):
            await self._db.responses.update_many(
                {"_id": {"$in": list(record_ids[i : i + 100])}, "batched": ""},
                {"$set": {"batched": batch_id}},
                session=tx,
            )
        return batch_id

    async def counts(self, submission_id: str) -> tuple[int, int]:
        answered = await self._db.responses.count_documents(
            {"submission_id": submission_id, "status": "answered"}
        )
        failed = await self._db.responses.count_documents(
            {"submission_id": submission_id, "status": INFRA_FAILED}
        )
        return answered, failed
