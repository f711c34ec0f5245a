"""MongoSubmissions: submissions, accepted upload batches and the answered-items bitmap."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from gateway.core.listing import ListQuery
from gateway.core.ports import DuplicateSubmission, Expect
from medbench_runtime.errors import NotFound
from medbench_storage.endpoint_keys import EndpointKeys
from medbench_storage.indexes import IndexSpec, asc

log = logging.getLogger(__name__)

INDEXES = (
    IndexSpec("submissions", asc("tenant_id", "request_id"), unique=True),
    IndexSpec("submissions", asc("state", "updated_at")),
    IndexSpec("uploads", asc("submission_id")),
    # ListSubmissions: one tenant's submissions, newest first, a page after (created_at, _id).
    IndexSpec(
        "submissions",
        (*asc("tenant_id"), ("created_at", DESCENDING), ("_id", DESCENDING)),
    ),
)


# What no view shows: the answered-items bitmap (one bit per pool item, the largest field).
VIEW_PROJECTION = {"answered_bits": 0}


def _expected(expect: Expect | None) -> dict[str, Any]:
    """The filter of an update's condition."""
    if expect is None:
        return {}
    found: dict[str, Any] = {}
    if expect.state is not None:
        found["state"] = expect.state
    if expect.state_not_in is not None:
        found["state"] = {"$nin": list(expect.state_not_in)}
    if expect.answered is not None:
        found["answered"] = expect.answered
    return found


class MongoSubmissions:
    """Gateway-owned collections. Every method takes the tenant and puts it in every filter and
    every document: no call reads or writes across tenants (the cross-tenant views, the stuck
    sweeper's counts and the quota ledger, are their own classes)."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], keys: EndpointKeys | None = None) -> None:
        self._db = db
        # Endpoint API keys: sealed, in the sealed database (None: API mode is not offered).
        self._keys = keys

    async def get(
        self, tenant_id: str, submission_id: str, session: AsyncClientSession | None = None
    ) -> dict[str, Any]:
        """The submission, or NOT_FOUND (also when it belongs to another tenant)."""
        doc = await self.find(tenant_id, submission_id, session)
        if doc is None:
            raise NotFound(f"submission {submission_id} not found")
        return doc

    async def find(
        self, tenant_id: str, submission_id: str, session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        return await self._db.submissions.find_one(
            {"_id": submission_id, "tenant_id": _tenant(tenant_id)}, session=session
        )

    async def view(self, tenant_id: str, submission_id: str) -> dict[str, Any]:
        """The submission as views show it (one read by _id, no bitmap), or NOT_FOUND."""
        doc = await self._db.submissions.find_one(
            {"_id": submission_id, "tenant_id": _tenant(tenant_id)}, VIEW_PROJECTION
        )
        if doc is None:
            raise NotFound(f"submission {submission_id} not found")
        return doc

    async def page(self, query: ListQuery, limit: int) -> list[dict[str, Any]]:
        """At most limit of the tenant's submissions query selects, newest first (created_at,
        then _id), without the bitmap; served by the (tenant_id, created_at, _id) index."""
        clauses: list[dict[str, Any]] = [{"tenant_id": _tenant(query.tenant_id)}]
        if query.states:
            clauses.append({"state": {"$in": list(query.states)}})
        if query.track:
            clauses.append({"track": query.track})
        if query.mode:
            clauses.append({"mode": query.mode})
        if query.created_after is not None:
            clauses.append({"created_at": {"$gte": query.created_after}})
        if query.created_before is not None:
            clauses.append({"created_at": {"$lt": query.created_before}})
        if query.after is not None:
            at, sid = query.after.created_at, query.after.submission_id
            clauses.append(
                {"$or": [{"created_at": {"$lt": at}}, {"created_at": at, "_id": {"$lt": sid}}]}
            )
        cursor = (
            self._db.submissions.find({"$and": clauses}, VIEW_PROJECTION)
            .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
        )
        return [doc async for doc in cursor]

    async def insert(
        self, tenant_id: str, doc: dict[str, Any], session: AsyncClientSession
    ) -> None:
        try:
            await self._db.submissions.insert_one(
                {**doc, "tenant_id": _tenant(tenant_id)}, session=session
            )
        except DuplicateKeyError as exc:
            raise DuplicateSubmission(str(doc["_id"])) from exc

    async def store_key(
        self, tenant_id: str, submission_id: str, api_key: str, session: AsyncClientSession
    ) -> None:
        """The endpoint's API key, kept out of the submission document: sealed under the
        deployment's key-encryption key, bound to this tenant and submission."""
        if self._keys is None:
            raise RuntimeError("no endpoint key store is configured: API mode is not offered")
        await self._keys.put(_tenant(tenant_id), submission_id, api_key, session)

    async def forget_key(self, submission_id: str) -> None:
        """Deletes the endpoint's API key of an ended submission (idempotent)."""
        if self._keys is not None and await self._keys.delete(submission_id):
            log.info("deleted the endpoint key of %s", submission_id)

    async def find_upload(
        self, tenant_id: str, submission_id: str, batch_id: str
    ) -> dict[str, Any] | None:
        return await self._db.uploads.find_one(
            {"_id": f"{submission_id}:{batch_id}", "tenant_id": _tenant(tenant_id)},
            {"digest": 1, "count": 1},
        )

    async def record_upload(
        self, tenant_id: str, doc: dict[str, Any], session: AsyncClientSession
    ) -> None:
        await self._db.uploads.insert_one({**doc, "tenant_id": _tenant(tenant_id)}, session=session)

    async def update(
        self,
        tenant_id: str,
        submission_id: str,
        fields: dict[str, Any],
        session: AsyncClientSession | None = None,
        expect: Expect | None = None,
    ) -> bool:
        """Sets fields (and updated_at); False when expect did not hold."""
        result = await self._db.submissions.update_one(
            {"_id": submission_id, "tenant_id": _tenant(tenant_id), **_expected(expect)},
            {"$set": {**fields, "updated_at": datetime.now(UTC)}},
            session=session,
        )
        return result.matched_count == 1

    async def apply_dispatch(
        self, tenant_id: str, submission_id: str, fields: dict[str, Any], state: str
    ) -> bool:
        """Sets fields unless the stored dispatch_sequence is already at or past theirs or the
        submission left state meanwhile (a completion is never overwritten)."""
        sequence = fields["dispatch_sequence"]
        result = await self._db.submissions.update_one(
            {
                "_id": submission_id,
                "tenant_id": _tenant(tenant_id),
                "state": state,
                "$or": [
                    {"dispatch_sequence": {"$exists": False}},
                    {"dispatch_sequence": {"$lt": sequence}},
                ],
            },
            {"$set": {**fields, "updated_at": datetime.now(UTC)}},
        )
        return result.matched_count == 1


def _tenant(tenant_id: str) -> str:
    """A tenant id is required: an empty one would be a query across no tenant by accident."""
    if not tenant_id:
        raise ValueError("a tenant id is required for every submission read and write")
    return tenant_id
