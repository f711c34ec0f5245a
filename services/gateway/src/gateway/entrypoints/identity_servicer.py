"""IdentityServicer: tenants, keys, usage and the audit log; proto <-> use cases."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from bson import ObjectId
from bson.errors import InvalidId

from gateway.identity import QUOTA_FIELDS, Identity, check_tenant_id
from gateway.quotas import QuotaLedger
from medbench.identity.v1 import identity_pb2, identity_service_pb2, identity_service_pb2_grpc
from medbench_runtime.auth import current_principal
from medbench_runtime.errors import InvalidArgument, NotFound
from medbench_runtime.timestamps import timestamp
from medbench_storage.identity import MongoAuditLog


def _page_size(value: int, default: int, most: int) -> int:
    if value < 0 or value > most:
        raise InvalidArgument(f"page_size must be between 0 and {most}")
    return value or default


def _audit_token(doc: dict[str, Any]) -> str:
    at = doc["at"] if doc["at"].tzinfo else doc["at"].replace(tzinfo=UTC)
    return f"{round(at.timestamp() * 1000)}.{doc['_id']}"


def _audit_cursor(token: str) -> tuple[datetime, ObjectId]:
    """The (time, id) a page token names; INVALID_ARGUMENT for anything this API did not
    return."""
    millis, _, oid = token.partition(".")
    try:
        at = datetime.fromtimestamp(int(millis) / 1000, tz=UTC)
        return at, ObjectId(oid)
    except (InvalidId, TypeError, ValueError, OverflowError, OSError):
        raise InvalidArgument("page_token is not one this API returned") from None


def key_to_proto(doc: dict[str, Any]) -> identity_pb2.ApiKey:
    return identity_pb2.ApiKey(
        key_id=doc["_id"],
        tenant_id=doc["tenant_id"],
        role=doc["role"],
        name=doc.get("name", ""),
        created_at=timestamp(doc.get("created_at")),
        expires_at=timestamp(doc.get("expires_at")),
        revoked_at=timestamp(doc.get("revoked_at")),
        created_by=doc.get("created_by", ""),
    )


class IdentityServicer(identity_service_pb2_grpc.IdentityServiceServicer):
    def __init__(self, identity: Identity, quotas: QuotaLedger, audit: MongoAuditLog) -> None:
        self._identity = identity
        self._quotas = quotas
        self._audit = audit

    async def _tenant_proto(self, doc: dict[str, Any]) -> identity_pb2.Tenant:
        q = await self._quotas.quotas(doc["_id"])
        return identity_pb2.Tenant(
            tenant_id=doc["_id"],
            display_name=doc.get("display_name", ""),
            quotas=identity_pb2.Quotas(
                submissions_per_day=q.submissions_per_day,
                concurrent_submissions=q.concurrent_submissions,
                items_per_month=q.items_per_month,
            ),
            disabled=doc.get("disabled", False),
            certificate_subjects=doc.get("certificate_subjects", []),
            created_at=timestamp(doc.get("created_at")),
        )

    async def WhoAmI(
        self, request: identity_service_pb2.WhoAmIRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.WhoAmIResponse:
        me = current_principal()
        return identity_service_pb2.WhoAmIResponse(
            key_id=me.key_id, tenant_id=me.tenant_id, role=me.role
        )

    async def CreateTenant(
        self, request: identity_service_pb2.CreateTenantRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Tenant:
        doc = await self._identity.create_tenant(
            request.tenant_id,
            request.display_name,
            {f: getattr(request.quotas, f) for f in QUOTA_FIELDS},
            list(request.certificate_subjects),
        )
        return await self._tenant_proto(doc)

    async def UpdateTenant(
        self, request: identity_service_pb2.UpdateTenantRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Tenant:
        doc = await self._identity.update_tenant(
            check_tenant_id(request.tenant_id),
            request.display_name if request.HasField("display_name") else None,
            {f: getattr(request.quotas, f) for f in QUOTA_FIELDS},
            request.disabled if request.HasField("disabled") else None,
            list(request.certificate_subjects) if request.replace_certificate_subjects else None,
        )
        return await self._tenant_proto(doc)

    async def GetTenant(
        self, request: identity_service_pb2.GetTenantRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Tenant:
        return await self._tenant_proto(await self._identity.tenant(request.tenant_id))

    async def ListTenants(
        self, request: identity_service_pb2.ListTenantsRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.ListTenantsResponse:
        size = _page_size(request.page_size, 100, 500)
        if request.page_token:
            check_tenant_id(request.page_token)
        docs = await self._identity.tenants(request.page_token, size + 1)
        more = len(docs) > size
        docs = docs[:size]
        return identity_service_pb2.ListTenantsResponse(
            tenants=[await self._tenant_proto(d) for d in docs],
            next_page_token=docs[-1]["_id"] if more else "",
        )

    async def CreateApiKey(
        self, request: identity_service_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.CreateApiKeyResponse:
        doc, secret = await self._identity.create_key(
            check_tenant_id(request.tenant_id),
            request.role,
            request.name,
            request.ttl_days,
            current_principal().key_id,
        )
        return identity_service_pb2.CreateApiKeyResponse(key=key_to_proto(doc), secret=secret)

    async def ListApiKeys(
        self, request: identity_service_pb2.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.ListApiKeysResponse:
        docs = await self._identity.keys(
            check_tenant_id(request.tenant_id), request.include_inactive
        )
        return identity_service_pb2.ListApiKeysResponse(keys=[key_to_proto(d) for d in docs])

    async def RotateApiKey(
        self, request: identity_service_pb2.RotateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.CreateApiKeyResponse:
        doc, secret = await self._identity.rotate_key(
            request.key_id, request.ttl_days, current_principal().key_id
        )
        return identity_service_pb2.CreateApiKeyResponse(key=key_to_proto(doc), secret=secret)

    async def RevokeApiKey(
        self, request: identity_service_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.ApiKey:
        return key_to_proto(await self._identity.revoke_key(request.key_id))

    async def GetUsage(
        self, request: identity_service_pb2.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Usage:
        me = current_principal()
        tenant_id = request.tenant_id or me.tenant_id
        if me.is_partner and tenant_id != me.tenant_id:
            # A partner asking about another tenant learns nothing, not even that it exists.
            raise NotFound(f"tenant {tenant_id[:70]} not found")
        await self._identity.tenant(tenant_id)
        usage = await self._quotas.usage(tenant_id)
        q = usage.quotas
        return identity_pb2.Usage(
            tenant_id=tenant_id,
            quotas=identity_pb2.Quotas(
                submissions_per_day=q.submissions_per_day,
                concurrent_submissions=q.concurrent_submissions,
                items_per_month=q.items_per_month,
            ),
            submissions_today=usage.submissions_today,
            active_submissions=usage.active_submissions,
            items_this_month=usage.items_this_month,
        )

    async def ListAuditEvents(
        self,
        request: identity_service_pb2.ListAuditEventsRequest,
        context: grpc.aio.ServicerContext,
    ) -> identity_service_pb2.ListAuditEventsResponse:
        size = _page_size(request.page_size, 100, 1000)
        if request.tenant_id:
            check_tenant_id(request.tenant_id)
        since = request.since.ToDatetime(tzinfo=UTC) if request.HasField("since") else None
        after = _audit_cursor(request.page_token) if request.page_token else None
        docs = await self._audit.read(request.tenant_id, since, after, size + 1)
        more = len(docs) > size
        docs = docs[:size]
        return identity_service_pb2.ListAuditEventsResponse(
            events=[
                identity_pb2.AuditEvent(
                    event_id=str(d["_id"]),
                    at=timestamp(d["at"]),
                    service=d.get("service", ""),
                    method=d.get("method", ""),
                    key_id=d.get("key_id", ""),
                    tenant_id=d.get("tenant_id", ""),
                    role=d.get("role", 0),
                    peer=d.get("peer", ""),
                    code=d.get("code", ""),
                    target=d.get("target", ""),
                )
                for d in docs
            ],
            next_page_token=_audit_token(docs[-1]) if more else "",
        )
