"""MongoTenants and MongoApiKeys: the Tenants and ApiKeys ports over the identity collections
(medbench_storage.identity), which every service reads to verify keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from medbench_runtime.auth import Authenticator
from medbench_runtime.errors import AlreadyExists
from medbench_storage.identity import API_KEYS, TENANTS


class MongoTenants:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._db = db

    async def insert(self, tenant: dict[str, Any]) -> None:
        try:
            await self._db[TENANTS].insert_one(tenant)
        except DuplicateKeyError:
            raise AlreadyExists(f"tenant {tenant['_id']} already exists") from None

    async def find(self, tenant_id: str) -> dict[str, Any] | None:
        return await self._db[TENANTS].find_one({"_id": tenant_id})

    async def update(self, tenant_id: str, fields: dict[str, Any]) -> None:
        await self._db[TENANTS].update_one({"_id": tenant_id}, {"$set": fields})

    async def page(self, after: str, limit: int) -> list[dict[str, Any]]:
        query = {"_id": {"$gt": after}} if after else {}
        cursor = self._db[TENANTS].find(query).sort("_id", 1).limit(limit)
        return [doc async for doc in cursor]


class MongoApiKeys:
    def __init__(self, db: AsyncDatabase[dict[str, Any]], auth: Authenticator) -> None:
        self._db = db
        self._auth = auth

    async def insert(self, key: dict[str, Any]) -> None:
        await self._db[API_KEYS].insert_one(key)

    async def find(self, key_id: str) -> dict[str, Any] | None:
        return await self._db[API_KEYS].find_one({"_id": key_id})

    async def of_tenant(self, tenant_id: str) -> list[dict[str, Any]]:
        cursor = self._db[API_KEYS].find({"tenant_id": tenant_id}).sort("created_at", 1)
        return [doc async for doc in cursor]

    async def revoke(self, key_id: str, at: datetime) -> None:
        await self._db[API_KEYS].update_one(
            {"_id": key_id, "revoked_at": None}, {"$set": {"revoked_at": at}}
        )

    def forget(self, key_id: str) -> None:
        self._auth.forget(key_id)
