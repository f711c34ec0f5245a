"""The identity collections every service reads: tenants, API keys, and the audit log.

The gateway's IdentityService writes tenants and keys; every service reads them to verify keys
(medbench_runtime.auth) and appends its audited calls to `audit_log`, which nothing updates or
deletes (in production each service's MongoDB user has only find/insert on it).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from medbench.identity.v1 import access_pb2
from medbench_runtime.auth import PLATFORM_TENANT, hash_secret, parse_key
from medbench_storage.indexes import IndexSpec, asc

TENANTS = "tenants"
API_KEYS = "api_keys"
AUDIT_LOG = "audit_log"

INDEXES = (
    IndexSpec(API_KEYS, asc("tenant_id", "created_at")),
    IndexSpec(AUDIT_LOG, asc("tenant_id", "at")),
    IndexSpec(AUDIT_LOG, asc("at")),
)


class MongoKeyStore:
    """Reads keys and tenants for the authenticator (medbench_runtime.auth.KeyStore)."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._db = db

    async def find_key(self, key_id: str) -> Mapping[str, Any] | None:
        return await self._db[API_KEYS].find_one({"_id": key_id})

    async def find_tenant(self, tenant_id: str) -> Mapping[str, Any] | None:
        return await self._db[TENANTS].find_one({"_id": tenant_id})


class MongoAuditLog:
    """Append-only: append() and read(); there is no update or delete."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._db = db

    async def append(self, event: dict[str, Any]) -> None:
        await self._db[AUDIT_LOG].insert_one({"_id": ObjectId(), **event})

    async def read(
        self,
        tenant_id: str,
        since: datetime | None,
        after: tuple[datetime, ObjectId] | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Newest first (by time, then id: events come from several services' clocks); after
        is the (time, id) the previous page ended with."""
        clauses: list[dict[str, Any]] = []
        if tenant_id:
            clauses.append({"tenant_id": tenant_id})
        if since is not None:
            clauses.append({"at": {"$gte": since}})
        if after is not None:
            at, oid = after
            clauses.append({"$or": [{"at": {"$lt": at}}, {"at": at, "_id": {"$lt": oid}}]})
        query = {"$and": clauses} if clauses else {}
        cursor = self._db[AUDIT_LOG].find(query).sort([("at", -1), ("_id", -1)]).limit(limit)
        return [doc async for doc in cursor]


async def install_bootstrap_key(db: AsyncDatabase[dict[str, Any]], key: str) -> None:
    """Creates the platform tenant and the deployment's maintainer key (idempotent), so that a
    new deployment can be administered (the gateway, the one service given the key)."""
    key_id, secret_part = parse_key(key)
    now = datetime.now(UTC)
    await db[TENANTS].update_one(
        {"_id": PLATFORM_TENANT},
        {
            "$setOnInsert": {
                "display_name": "MedBench platform",
                "quotas": {},
                "disabled": False,
                "certificate_subjects": [],
                "created_at": now,
            }
        },
        upsert=True,
    )
    await db[API_KEYS].update_one(
        {"_id": key_id},
        {
            "$setOnInsert": {
                "tenant_id": PLATFORM_TENANT,
                "role": access_pb2.ROLE_MAINTAINER,
                "name": "bootstrap",
                "secret_hash": hash_secret(secret_part),
                "created_at": now,
                "expires_at": None,
                "revoked_at": None,
                "created_by": "",
            }
        },
        upsert=True,
    )
