"""MongoScores: item-score batches, per-submission progress and reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from medbench_storage.indexes import IndexSpec, asc

INDEXES = (
    IndexSpec("score_batches", asc("submission_id")),
    IndexSpec("reports", asc("tenant_id", "created_at")),
)


class MongoScores:
    """Item scores are stored one document per scored batch (hundreds of items), keyed
    (submission_id, batch_id, component): a redelivered batch hits the same key."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._db = db

    async def add_batch(
        self,
        session: AsyncClientSession,
        doc: dict[str, Any],
        progress: dict[str, Any],
        rules: dict[str, str],
    ) -> dict[str, Any]:
        """Stores a batch and counts it; returns the progress record as counted (one round
        trip, not a write and a read); DuplicateKeyError when it was stored before."""
        await self._db.score_batches.insert_one(doc, session=session)
        counted: dict[str, Any] = await self._db.progress.find_one_and_update(
            {"_id": doc["submission_id"]},
            {
                "$setOnInsert": {**progress, "completed": False},
                "$inc": {"scored": doc["n"]},
                "$addToSet": {"rules": {"$each": sorted(f"{d}={r}" for d, r in rules.items())}},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        return counted

    async def progress(self, submission_id: str) -> dict[str, Any] | None:
        return await self._db.progress.find_one({"_id": submission_id})

    async def batches(self, submission_id: str) -> list[dict[str, Any]]:
        return await self._db.score_batches.find({"submission_id": submission_id}).to_list()

    async def store_report(self, session: AsyncClientSession, report: dict[str, Any]) -> None:
        """Inserts the report and closes the progress record (DuplicateKeyError if done)."""
        await self._db.reports.insert_one(report, session=session)
        await self._db.progress.update_one(
            {"_id": report["_id"]}, {"$set": {"completed": True}}, session=session
        )

    async def report(self, submission_id: str) -> dict[str, Any] | None:
        return await self._db.reports.find_one({"_id": submission_id})


def rules_from_progress(entries: Sequence[str]) -> dict[str, str]:
    """The dataset -> rule map stored as "dataset=rule" strings."""
    return dict(e.split("=", 1) for e in entries)
