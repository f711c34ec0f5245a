"""Tenants and API keys: the maintainer's side of identity (keys are verified by every service
through medbench_runtime.auth over the same collections)."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from gateway.quotas import MAX_QUOTA
from medbench.identity.v1 import access_pb2
from medbench_runtime.auth import (
    PLATFORM_TENANT,
    Authenticator,
    mint_key,
)
from medbench_runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from medbench_storage.identity import API_KEYS, TENANTS

log = logging.getLogger(__name__)

TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
CERT_SUBJECT = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,254}$")
MAX_NAME = 200
MAX_SUBJECTS = 20
DEFAULT_TTL_DAYS = 365
MAX_TTL_DAYS = 730
PLATFORM_ROLES = (access_pb2.ROLE_MAINTAINER, access_pb2.ROLE_OPS)
PARTNER_ROLES = (access_pb2.ROLE_PARTNER_SUBMITTER, access_pb2.ROLE_PARTNER_VIEWER)
QUOTA_FIELDS = ("submissions_per_day", "concurrent_submissions", "items_per_month")


def check_tenant_id(tenant_id: str) -> str:
    if not TENANT_ID.fullmatch(tenant_id):
        raise InvalidArgument(
            f"tenant_id {tenant_id[:70]!r} is malformed: 1-63 of [a-z0-9-], starting with a "
            f"letter or digit"
        )
    return tenant_id


def _name(field: str, value: str) -> str:
    if len(value) > MAX_NAME:
        raise InvalidArgument(f"{field} is longer than {MAX_NAME} characters")
    if any(ord(c) < 32 for c in value):
        raise InvalidArgument(f"{field} contains control characters")
    return value


def _quotas(values: dict[str, int]) -> dict[str, int]:
    for field, value in values.items():
        if value < 0 or value > MAX_QUOTA:
            raise InvalidArgument(f"quotas.{field} must be between 0 and {MAX_QUOTA}")
    return values


def _subjects(subjects: list[str]) -> list[str]:
    if len(subjects) > MAX_SUBJECTS:
        raise InvalidArgument(f"certificate_subjects holds at most {MAX_SUBJECTS} entries")
    for subject in subjects:
        if not CERT_SUBJECT.fullmatch(subject):
            raise InvalidArgument(
                "certificate_subjects entries are 1-255 printable ASCII characters"
            )
    return sorted(set(subjects))


class Identity:
    """Tenants and keys (maintainers), usage and the audit log (readers)."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], auth: Authenticator) -> None:
        self._db = db
        self._auth = auth

    async def create_tenant(
        self,
        tenant_id: str,
        display_name: str,
        quotas: dict[str, int],
        subjects: list[str],
    ) -> dict[str, Any]:
        doc = {
            "_id": check_tenant_id(tenant_id),
            "display_name": _name("display_name", display_name),
            "quotas": _quotas(quotas),
            "disabled": False,
            "certificate_subjects": _subjects(subjects),
            "created_at": datetime.now(UTC),
        }
        try:
            await self._db[TENANTS].insert_one(doc)
        except DuplicateKeyError:
            raise AlreadyExists(f"tenant {tenant_id} already exists") from None
        return doc

    async def tenant(self, tenant_id: str) -> dict[str, Any]:
        doc = await self._db[TENANTS].find_one({"_id": check_tenant_id(tenant_id)})
        if doc is None:
            raise NotFound(f"tenant {tenant_id} not found")
        return doc

    async def update_tenant(
        self,
        tenant_id: str,
        display_name: str | None,
        quotas: dict[str, int],
        disabled: bool | None,
        subjects: list[str] | None,
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {f"quotas.{k}": v for k, v in _quotas(quotas).items() if v}
        if display_name is not None:
            fields["display_name"] = _name("display_name", display_name)
        if disabled is not None:
            if disabled and tenant_id == PLATFORM_TENANT:
                raise FailedPrecondition("the platform tenant cannot be disabled")
            fields["disabled"] = disabled
        if subjects is not None:
            fields["certificate_subjects"] = _subjects(subjects)
        await self.tenant(tenant_id)
        if fields:
            await self._db[TENANTS].update_one({"_id": tenant_id}, {"$set": fields})
        return await self.tenant(tenant_id)

    async def tenants(self, after: str, limit: int) -> list[dict[str, Any]]:
        query = {"_id": {"$gt": after}} if after else {}
        cursor = self._db[TENANTS].find(query).sort("_id", 1).limit(limit)
        return [doc async for doc in cursor]

    async def create_key(
        self, tenant_id: str, role: int, name: str, ttl_days: int, created_by: str
    ) -> tuple[dict[str, Any], str]:
        tenant = await self.tenant(tenant_id)
        if role not in access_pb2.Role.values() or role in (
            access_pb2.ROLE_UNSPECIFIED,
            access_pb2.ROLE_SERVICE,
        ):
            raise InvalidArgument(
                "role must be one of ROLE_PARTNER_SUBMITTER, ROLE_PARTNER_VIEWER, "
                "ROLE_MAINTAINER, ROLE_OPS, ROLE_REVIEWER (services use the service token)"
            )
        platform = tenant["_id"] == PLATFORM_TENANT
        if role in PLATFORM_ROLES and not platform:
            raise InvalidArgument(
                f"role {access_pb2.Role.Name(role)} belongs to the platform tenant only"
            )
        if role in PARTNER_ROLES and platform:
            raise InvalidArgument("partner roles belong to partner tenants, not the platform")
        if tenant.get("disabled"):
            raise FailedPrecondition(f"tenant {tenant_id} is disabled")
        if ttl_days < 0 or ttl_days > MAX_TTL_DAYS:
            raise InvalidArgument(f"ttl_days must be between 1 and {MAX_TTL_DAYS} (0: 365)")
        now = datetime.now(UTC)
        minted = mint_key()
        doc = {
            "_id": minted.key_id,
            "tenant_id": tenant_id,
            "role": role,
            "name": _name("name", name),
            "secret_hash": minted.secret_hash,
            "created_at": now,
            "expires_at": now + timedelta(days=ttl_days or DEFAULT_TTL_DAYS),
            "revoked_at": None,
            "created_by": created_by,
        }
        await self._db[API_KEYS].insert_one(doc)
        log.info("created key %s (%s) for tenant %s", minted.key_id, role, tenant_id)
        return doc, minted.secret

    async def key(self, key_id: str) -> dict[str, Any]:
        doc = await self._db[API_KEYS].find_one({"_id": key_id}) if key_id else None
        if doc is None:
            raise NotFound(f"API key {key_id[:40]!r} not found")
        return doc

    async def keys(self, tenant_id: str, include_inactive: bool) -> list[dict[str, Any]]:
        await self.tenant(tenant_id)
        now = datetime.now(UTC)
        out = []
        async for doc in self._db[API_KEYS].find({"tenant_id": tenant_id}).sort("created_at", 1):
            expires = doc.get("expires_at")
            expired = expires is not None and expires.replace(tzinfo=UTC) <= now
            if include_inactive or (doc.get("revoked_at") is None and not expired):
                out.append(doc)
        return out

    async def rotate_key(
        self, key_id: str, ttl_days: int, created_by: str
    ) -> tuple[dict[str, Any], str]:
        old = await self.key(key_id)
        if old.get("revoked_at") is not None:
            raise FailedPrecondition(f"API key {key_id} is revoked; create a new one instead")
        new, secret = await self.create_key(
            old["tenant_id"], old["role"], old["name"], ttl_days, created_by
        )
        await self.revoke_key(key_id)
        return new, secret

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        await self.key(key_id)
        await self._db[API_KEYS].update_one(
            {"_id": key_id, "revoked_at": None}, {"$set": {"revoked_at": datetime.now(UTC)}}
        )
        self._auth.forget(key_id)
        return await self.key(key_id)
