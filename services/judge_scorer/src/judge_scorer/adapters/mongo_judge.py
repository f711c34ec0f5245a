"""MongoJudge: the judge scorer's collections.

judge_cache   one judge reply per (judge model, prompt hash): nothing is judged twice; its
              parsed verdict (score, key points, `criteria`: [{name, score}], [] when none)
judgments     per (submission, item): verdicts (each with its `criteria`), the panel's
              `criteria`, raw outputs, lineage (owner: judge scorer)
ratings       physician ratings of answers (imported, or from reviews), with `criteria`
calibrations  agreement of a judge + rubric version with physicians (overall, per dimension,
              per criterion), append-only
reviews       items whose panel disagreed, for physicians
parked        judge requests of official runs held until their rubric is calibrated
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReplaceOne, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from medbench_storage.indexes import IndexSpec, asc

DUPLICATE_KEY = 11000
INDEXES = (
    IndexSpec("ratings", asc("rubric_id")),
    IndexSpec("calibrations", asc("judge", "rubric_id", "rubric_version", "measured_at")),
    IndexSpec("reviews", asc("state", "created_at")),
    IndexSpec("judgments", asc("submission_id")),
)


class MongoJudge:
    """Judge-scorer collections (in the main database; references stay in the sealed one)."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._db = db

    # -- cache -------------------------------------------------------------------------------

    async def cached(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Cache entries by key (missing keys are absent)."""
        found: dict[str, dict[str, Any]] = {}
        for i in range(0, len(keys), 500):
            async for doc in self._db.judge_cache.find({"_id": {"$in": list(keys[i : i + 500])}}):
                found[doc["_id"]] = doc
        return found

    async def cache(self, entries: Sequence[dict[str, Any]]) -> None:
        """Adds entries; an entry stored meanwhile by another replica is kept as it is."""
        if not entries:
            return
        try:
            await self._db.judge_cache.insert_many(list(entries), ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise

    # -- judgments ---------------------------------------------------------------------------

    async def record_judgments(self, docs: Sequence[dict[str, Any]]) -> None:
        """Upserts per (submission, item): a redelivered batch rewrites the same records."""
        if docs:
            await self._db.judgments.bulk_write(
                [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs], ordered=False
            )

    async def judgments(self, submission_id: str) -> list[dict[str, Any]]:
        return await self._db.judgments.find({"submission_id": submission_id}).to_list()

    async def judgment(self, submission_id: str, item_id: str) -> dict[str, Any] | None:
        return await self._db.judgments.find_one({"_id": f"{submission_id}:{item_id}"})

    # -- ratings -----------------------------------------------------------------------------

    async def put_rating(self, doc: dict[str, Any]) -> bool:
        """Stores a rating; True when new, False when it replaced the rater's earlier score."""
        result = await self._db.ratings.replace_one({"_id": doc["_id"]}, doc, upsert=True)
        return result.upserted_id is not None

    async def ratings(self, rubric_id: str) -> list[dict[str, Any]]:
        return await self._db.ratings.find({"rubric_id": rubric_id}).sort("_id", 1).to_list()

    # -- calibrations ------------------------------------------------------------------------

    async def add_calibration(self, doc: dict[str, Any]) -> None:
        await self._db.calibrations.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    async def latest_calibration(
        self, judge: str, rubric_id: str, rubric_version: int
    ) -> dict[str, Any] | None:
        return await self._db.calibrations.find_one(
            {"judge": judge, "rubric_id": rubric_id, "rubric_version": rubric_version},
            sort=[("measured_at", -1)],
        )

    # -- reviews -----------------------------------------------------------------------------

    async def open_review(self, doc: dict[str, Any]) -> None:
        """Queues a review once per (rubric, prompt): a redelivered batch adds nothing."""
        await self._db.reviews.update_one({"_id": doc["_id"]}, {"$setOnInsert": doc}, upsert=True)

    async def reviews(
        self, state: str, now: datetime, after: str, limit: int
    ) -> list[dict[str, Any]]:
        if state == "open":
            query: dict[str, Any] = {
                "$or": [{"state": "open"}, {"state": "claimed", "lease_until": {"$lt": now}}]
            }
        else:
            query = {"state": state}
        if after:
            query = {"$and": [query, {"_id": {"$gt": after}}]}
        return await self._db.reviews.find(query).sort("_id", 1).limit(limit).to_list()

    async def review(self, review_id: str) -> dict[str, Any] | None:
        return await self._db.reviews.find_one({"_id": review_id})

    async def claim_review(
        self, review_id: str, reviewer_id: str, now: datetime, lease: timedelta
    ) -> dict[str, Any] | None:
        """Claims an open review, an expired claim, or renews the reviewer's own claim."""
        return await self._db.reviews.find_one_and_update(
            {
                "_id": review_id,
                "$or": [
                    {"state": "open"},
                    {"state": "claimed", "lease_until": {"$lt": now}},
                    {"state": "claimed", "reviewer_id": reviewer_id},
                ],
            },
            {"$set": {"state": "claimed", "reviewer_id": reviewer_id, "lease_until": now + lease}},
            return_document=ReturnDocument.AFTER,
        )

    async def finish_review(
        self,
        review_id: str,
        reviewer_id: str,
        score: float,
        now: datetime,
        criteria: list[dict[str, Any]],
    ) -> dict[str, Any] | None:
        """Records the rating of the physician holding the claim (lease expired or not, as long
        as nobody else claimed it since)."""
        return await self._db.reviews.find_one_and_update(
            {"_id": review_id, "state": "claimed", "reviewer_id": reviewer_id},
            {"$set": {"state": "done", "score": score, "done_at": now, "criteria": criteria}},
            return_document=ReturnDocument.AFTER,
        )

    # -- parked requests ---------------------------------------------------------------------

    async def park(self, doc: dict[str, Any]) -> None:
        await self._db.parked.update_one({"_id": doc["_id"]}, {"$setOnInsert": doc}, upsert=True)

    async def parked(self) -> list[dict[str, Any]]:
        return await self._db.parked.find({}).sort("parked_at", 1).to_list()

    async def unpark(self, event_id: str) -> None:
        await self._db.parked.delete_one({"_id": event_id})

    async def parked_count(self) -> int:
        return await self._db.parked.count_documents({})


def utcnow() -> datetime:
    return datetime.now(UTC)
