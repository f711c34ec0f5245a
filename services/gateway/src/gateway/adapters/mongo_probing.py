"""MongoProbing: the ProbingStore port over `uploads` (read), `answer_digests` and
`probing_findings` (the rules: core/probing.py).

  answer_digests    {_id: submission id, tenant_id, pool_id, track, created_at, vector}
                    vector: 4 bytes per pool item, in pool order
  probing_findings  {_id: "<earlier>:<later>", tenant_id, pool_id, track, earlier, later,
                     differing, items, threshold, datasets: [{dataset, differing, items}],
                     found_at}
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from bson import Binary
from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from gateway.core.probing import DatasetDifference, Finding, StoredDigest
from medbench_storage.indexes import IndexSpec, asc

DIGESTS = "answer_digests"
FINDINGS = "probing_findings"

INDEXES = (
    # A tenant's digests on a pool, newest first (the comparisons of a new one).
    IndexSpec(DIGESTS, (*asc("tenant_id", "pool_id"), ("created_at", DESCENDING))),
    # Findings newest first, of everyone, of a tenant, of a tenant's pool.
    IndexSpec(FINDINGS, (("found_at", DESCENDING), ("_id", DESCENDING))),
    IndexSpec(FINDINGS, (*asc("tenant_id"), ("found_at", DESCENDING), ("_id", DESCENDING))),
    IndexSpec(
        FINDINGS, (*asc("tenant_id", "pool_id"), ("found_at", DESCENDING), ("_id", DESCENDING))
    ),
)


class MongoProbing:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._db = db

    async def answers(self, tenant_id: str, submission_id: str) -> AsyncIterator[tuple[str, str]]:
        """The answers of the submission's accepted batches (index `uploads.submission_id`)."""
        cursor = self._db.uploads.find(
            {"submission_id": submission_id, "tenant_id": tenant_id}, {"answers": 1}
        )
        async for batch in cursor:
            for a in batch.get("answers", ()):
                yield str(a["item_id"]), str(a["answer"])

    async def save_digest(self, digest: StoredDigest) -> None:
        await self._db[DIGESTS].replace_one(
            {"_id": digest.submission_id},
            {
                "tenant_id": digest.tenant_id,
                "pool_id": digest.pool_id,
                "track": digest.track,
                "created_at": digest.created_at,
                "vector": Binary(digest.vector),
            },
            upsert=True,
        )

    async def digests(self, tenant_id: str, pool_id: str, limit: int) -> list[StoredDigest]:
        cursor = (
            self._db[DIGESTS]
            .find({"tenant_id": tenant_id, "pool_id": pool_id})
            .sort("created_at", DESCENDING)
            .limit(limit)
        )
        return [
            StoredDigest(
                d["_id"],
                d["tenant_id"],
                d["pool_id"],
                d["track"],
                d["created_at"],
                bytes(d["vector"]),
            )
            async for d in cursor
        ]

    async def add_finding(self, finding: Finding) -> bool:
        try:
            await self._db[FINDINGS].insert_one(
                {
                    "_id": finding.finding_id,
                    "tenant_id": finding.tenant_id,
                    "pool_id": finding.pool_id,
                    "track": finding.track,
                    "earlier": finding.earlier_submission_id,
                    "later": finding.later_submission_id,
                    "differing": finding.differing,
                    "items": finding.items,
                    "threshold": finding.threshold,
                    "datasets": [
                        {"dataset": d.dataset, "differing": d.differing, "items": d.items}
                        for d in finding.datasets
                    ],
                    "found_at": finding.found_at,
                }
            )
        except DuplicateKeyError:
            return False
        return True

    async def findings(
        self, tenant_id: str, pool_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Finding]:
        clauses: list[dict[str, Any]] = []
        if tenant_id:
            clauses.append({"tenant_id": tenant_id})
        if pool_id:
            clauses.append({"pool_id": pool_id})
        if after is not None:
            at, last = after
            clauses.append(
                {"$or": [{"found_at": {"$lt": at}}, {"found_at": at, "_id": {"$lt": last}}]}
            )
        cursor = (
            self._db[FINDINGS]
            .find({"$and": clauses} if clauses else {})
            .sort([("found_at", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
        )
        return [_finding(d) async for d in cursor]


def _finding(d: dict[str, Any]) -> Finding:
    return Finding(
        finding_id=d["_id"],
        tenant_id=d["tenant_id"],
        pool_id=d["pool_id"],
        track=d["track"],
        earlier_submission_id=d["earlier"],
        later_submission_id=d["later"],
        differing=d["differing"],
        items=d["items"],
        threshold=d["threshold"],
        datasets=tuple(
            DatasetDifference(x["dataset"], x["differing"], x["items"]) for x in d["datasets"]
        ),
        found_at=d["found_at"],
    )
