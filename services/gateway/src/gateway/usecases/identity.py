"""Identity: tenants and API keys (maintainers), usage and the audit log (readers). Keys are
verified by every service through medbench_runtime.auth over the same collections."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.core.identity import (
    check_name,
    check_quotas,
    check_subjects,
    check_tenant_id,
    check_ttl_days,
)
from gateway.core.ports import ApiKeys, AuditLog, QuotaLedger, Rotator, Tenants
from gateway.core.quotas import BoardPool, Quotas, UsageNow
from gateway.core.submission import TRACKS, Record
from medbench.identity.v1 import access_pb2
from medbench_runtime.auth import PLATFORM_TENANT, mint_key
from medbench_runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from medbench_runtime.timestamps import utc

log = logging.getLogger(__name__)

PLATFORM_ROLES = (access_pb2.ROLE_MAINTAINER, access_pb2.ROLE_OPS)
PARTNER_ROLES = (access_pb2.ROLE_PARTNER_SUBMITTER, access_pb2.ROLE_PARTNER_VIEWER)


class Identity:
    """Tenants and keys (maintainers), usage and the audit log (readers)."""

    def __init__(
        self,
        tenants: Tenants,
        keys: ApiKeys,
        quotas: QuotaLedger,
        audit: AuditLog,
        rotator: Rotator | None = None,
    ) -> None:
        """rotator: names the boards' current pools, whose runs usage shows (None: none)."""
        self._tenants = tenants
        self._keys = keys
        self._quotas = quotas
        self._audit = audit
        self._rotator = rotator

    async def create_tenant(
        self,
        tenant_id: str,
        display_name: str,
        quotas: dict[str, int],
        subjects: list[str],
    ) -> Record:
        doc = {
            "_id": check_tenant_id(tenant_id),
            "display_name": check_name("display_name", display_name),
            "quotas": check_quotas(quotas),
            "disabled": False,
            "certificate_subjects": check_subjects(subjects),
            "created_at": datetime.now(UTC),
        }
        await self._tenants.insert(doc)
        return doc

    async def tenant(self, tenant_id: str) -> Record:
        doc = await self._tenants.find(check_tenant_id(tenant_id))
        if doc is None:
            raise NotFound(f"tenant {tenant_id} not found")
        return doc

    async def quotas(self, tenant_id: str) -> Quotas:
        """The tenant's quotas in effect (the platform defaults with its overrides)."""
        return await self._quotas.quotas(tenant_id)

    async def update_tenant(
        self,
        tenant_id: str,
        display_name: str | None,
        quotas: dict[str, int],
        disabled: bool | None,
        subjects: list[str] | None,
    ) -> Record:
        fields: dict[str, Any] = {f"quotas.{k}": v for k, v in check_quotas(quotas).items() if v}
        if display_name is not None:
            fields["display_name"] = check_name("display_name", display_name)
        if disabled is not None:
            if disabled and tenant_id == PLATFORM_TENANT:
                raise FailedPrecondition("the platform tenant cannot be disabled")
            fields["disabled"] = disabled
        if subjects is not None:
            fields["certificate_subjects"] = check_subjects(subjects)
        await self.tenant(tenant_id)
        if fields:
            await self._tenants.update(tenant_id, fields)
        return await self.tenant(tenant_id)

    async def tenants(self, after: str, limit: int) -> list[Record]:
        if after:
            check_tenant_id(after)
        return await self._tenants.page(after, limit)

    async def create_key(
        self, tenant_id: str, role: int, name: str, ttl_days: int, created_by: str
    ) -> tuple[Record, str]:
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
        days = check_ttl_days(ttl_days)
        now = datetime.now(UTC)
        minted = mint_key()
        doc = {
            "_id": minted.key_id,
            "tenant_id": tenant_id,
            "role": role,
            "name": check_name("name", name),
            "secret_hash": minted.secret_hash,
            "created_at": now,
            "expires_at": now + timedelta(days=days),
            "revoked_at": None,
            "created_by": created_by,
        }
        await self._keys.insert(doc)
        log.info("created key %s (%s) for tenant %s", minted.key_id, role, tenant_id)
        return doc, minted.secret

    async def key(self, key_id: str) -> Record:
        doc = await self._keys.find(key_id) if key_id else None
        if doc is None:
            raise NotFound(f"API key {key_id[:40]!r} not found")
        return doc

    async def keys(self, tenant_id: str, include_inactive: bool) -> list[Record]:
        await self.tenant(tenant_id)
        now = datetime.now(UTC)
        out = []
        for doc in await self._keys.of_tenant(tenant_id):
            expires = doc.get("expires_at")
            expired = expires is not None and utc(expires) <= now
            if include_inactive or (doc.get("revoked_at") is None and not expired):
                out.append(doc)
        return out

    async def rotate_key(self, key_id: str, ttl_days: int, created_by: str) -> tuple[Record, str]:
        old = await self.key(key_id)
        if old.get("revoked_at") is not None:
            raise FailedPrecondition(f"API key {key_id} is revoked; create a new one instead")
        new, secret = await self.create_key(
            old["tenant_id"], old["role"], old["name"], ttl_days, created_by
        )
        await self.revoke_key(key_id)
        return new, secret

    async def revoke_key(self, key_id: str) -> Record:
        await self.key(key_id)
        await self._keys.revoke(key_id, datetime.now(UTC))
        self._keys.forget(key_id)
        return await self.key(key_id)

    async def usage(self, tenant_id: str, caller_tenant: str, caller_is_partner: bool) -> UsageNow:
        """A tenant's usage, with its runs on the current pool of every board; a partner asking
        about another tenant learns nothing, not even that it exists."""
        tenant_id = tenant_id or caller_tenant
        if caller_is_partner and tenant_id != caller_tenant:
            raise NotFound(f"tenant {tenant_id[:70]} not found")
        await self.tenant(tenant_id)
        return await self._quotas.usage(tenant_id, pools=await self._current_pools())

    async def _current_pools(self) -> list[BoardPool]:
        """The current pool of every board that has one: by track, the API board first."""
        if self._rotator is None:
            return []
        boards = [(track, api) for track in sorted(TRACKS) for api in (True, False)]
        rotator = self._rotator
        try:
            found = await asyncio.gather(*(rotator.current_pool(t, api) for t, api in boards))
        except Unavailable as exc:
            # The runs per pool are informative; a rotator outage must not fail the call.
            log.warning("usage without the runs per pool: %s", exc)
            return []
        return [BoardPool(p, t, api) for (t, api), p in zip(boards, found, strict=True) if p]

    async def audit_events(
        self, tenant_id: str, since: datetime | None, after: Any, limit: int
    ) -> list[Record]:
        if tenant_id:
            check_tenant_id(tenant_id)
        return await self._audit.read(tenant_id, since, after, limit)
