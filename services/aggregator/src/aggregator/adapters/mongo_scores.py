"""MongoScores: item-score batches, per-submission progress and reports."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from aggregator.adapters.score_codec import entries, pack, record, unpack
from aggregator.core.parts import Entry, ScoredBatch
from medbench_storage.client import in_transaction
from medbench_storage.indexes import IndexSpec, asc
from medbench_storage.infra import Infrastructure
from medbench_storage.outbox import Outbox, OutboxRelay

DIGEST_KEY_ID = "item_scores_digest"

INDEXES = (
    IndexSpec("score_batches", asc("submission_id")),
    IndexSpec("reports", asc("tenant_id", "created_at")),
)


class MongoScores:
    """Item scores are stored one document per scored batch (hundreds of items), keyed
    (submission_id, batch_id, component): a redelivered batch hits the same key. Reports and
    the events announcing them are written in one transaction (with the outbox)."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        client: AsyncMongoClient[dict[str, Any]] | None = None,
        outbox: Outbox | None = None,
        relay: OutboxRelay | None = None,
    ) -> None:
        """Reads need only db; writes need the client (transactions), outbox and relay."""
        self._db = db
        self._client = client
        self._outbox = outbox
        self._relay = relay
        self._digest_key: bytes | None = None

    @classmethod
    def of(cls, infra: Infrastructure) -> MongoScores:
        return cls(infra.db, infra.client, infra.outbox, infra.relay)

    async def digest_key(self) -> bytes:
        """Made on first use (32 random bytes) and kept in `secrets`; replicas racing to make
        it all read back the one stored."""
        if self._digest_key is None:
            # Another replica's upsert may win the race: its key is read below.
            with contextlib.suppress(DuplicateKeyError):
                await self._db.secrets.update_one(
                    {"_id": DIGEST_KEY_ID},
                    {"$setOnInsert": {"key": secrets.token_bytes(32)}},
                    upsert=True,
                )
            doc = await self._db.secrets.find_one({"_id": DIGEST_KEY_ID})
            assert doc is not None
            self._digest_key = bytes(doc["key"])
        return self._digest_key

    def _writer(self) -> tuple[AsyncMongoClient[dict[str, Any]], Outbox, OutboxRelay]:
        if self._client is None or self._outbox is None or self._relay is None:
            raise RuntimeError("a read-only MongoScores: build it with MongoScores.of(infra)")
        return self._client, self._outbox, self._relay

    async def add_batch(
        self, batch: ScoredBatch, progress: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        doc = {
            "_id": batch.key,
            "submission_id": batch.submission_id,
            "batch_id": batch.batch_id,
            "n": len(batch.parts),
            "scorer_version": batch.scorer_version,
            **pack([record(p) for p in batch.parts]),
        }
        rules = sorted(f"{d}={r}" for d, r in batch.dataset_rules.items())

        async def commit(session: AsyncClientSession) -> dict[str, Any]:
            # One round trip for the count, not a write and a read.
            await self._db.score_batches.insert_one(doc, session=session)
            counted: dict[str, Any] = await self._db.progress.find_one_and_update(
                {"_id": batch.submission_id},
                {
                    "$setOnInsert": {**progress, "completed": False},
                    "$inc": {"scored": doc["n"]},
                    "$addToSet": {"rules": {"$each": rules}},
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
                session=session,
            )
            return counted

        client, _, _ = self._writer()
        try:
            return await in_transaction(client, commit)
        except DuplicateKeyError:
            return None

    async def progress(self, submission_id: str) -> dict[str, Any] | None:
        return await self._db.progress.find_one({"_id": submission_id})

    async def batches(self, submission_id: str) -> list[dict[str, Any]]:
        return await self._db.score_batches.find({"submission_id": submission_id}).to_list()

    async def scored(self, submission_id: str) -> list[tuple[str, list[Entry]]]:
        return [
            (b.get("scorer_version", ""), list(entries(b)))
            for b in await self.batches(submission_id)
        ]

    async def records(self, submission_id: str) -> list[dict[str, Any]]:
        return [s for b in await self.batches(submission_id) for s in unpack(b)]

    async def complete(self, report: dict[str, Any], events: Sequence[tuple[str, Any]]) -> bool:
        client, outbox, relay = self._writer()

        async def commit(session: AsyncClientSession) -> None:
            # Inserting the report fails (DuplicateKeyError) when it was built before.
            await self._db.reports.insert_one(report, session=session)
            await self._db.progress.update_one(
                {"_id": report["_id"]}, {"$set": {"completed": True}}, session=session
            )
            await outbox.add(session, list(events))

        try:
            await in_transaction(client, commit)
        except DuplicateKeyError:
            return False
        relay.notify()
        return True

    async def report(self, submission_id: str) -> dict[str, Any] | None:
        return await self._db.reports.find_one({"_id": submission_id})
