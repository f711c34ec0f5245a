"""MongoLeaderboard: published entries (one per submission), owned by the aggregator."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from medbench_storage.indexes import IndexSpec, asc

INDEXES = (IndexSpec("leaderboard", asc("track", "board", "published", "cycle")),)


class MongoLeaderboard:
    """An entry copies the report's numbers when published; withdrawing keeps the record."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._db = db

    async def put(self, doc: dict[str, Any]) -> None:
        await self._db.leaderboard.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    async def withdraw(self, submission_id: str) -> None:
        await self._db.leaderboard.update_one(
            {"_id": submission_id}, {"$set": {"published": False}}
        )

    async def entry(self, submission_id: str) -> dict[str, Any] | None:
        return await self._db.leaderboard.find_one({"_id": submission_id})

    async def set_equated(self, scores: dict[str, float], reference_pool: str) -> None:
        for submission_id, score in scores.items():
            await self._db.leaderboard.update_one(
                {"_id": submission_id},
                {"$set": {"equated": score, "equated_on": reference_pool}},
            )

    async def names_of_others(self, tenant_id: str) -> list[dict[str, Any]]:
        """Shown names (model_name, organisation) of other tenants' published entries, on
        every board, oldest first."""
        cursor = self._db.leaderboard.find(
            {"published": True, "tenant_id": {"$ne": tenant_id}},
            {"model_name": 1, "organisation": 1, "tenant_id": 1, "published_at": 1},
        )
        entries = await cursor.to_list()
        return sorted(entries, key=lambda e: (e["published_at"], e["_id"]))

    async def published(self, track: int, board: int, cycle: str) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"track": track, "board": board, "published": True}
        if cycle:
            query["cycle"] = cycle
        return await self._db.leaderboard.find(query).to_list()
