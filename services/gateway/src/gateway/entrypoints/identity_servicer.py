"""IdentityServicer: tenants, keys, usage and the audit log; proto <-> use cases."""

from __future__ import annotations

import grpc

from gateway.core.identity import check_tenant_id
from gateway.core.quotas import QUOTA_FIELDS
from gateway.core.submission import Record
from gateway.entrypoints import convert
from gateway.usecases.identity import Identity
from medbench.identity.v1 import identity_pb2, identity_service_pb2, identity_service_pb2_grpc
from medbench_runtime.auth import current_principal
from medbench_runtime.errors import InvalidArgument
from medbench_runtime.timestamps import from_timestamp


def _page_size(value: int, default: int, most: int) -> int:
    if value < 0 or value > most:
        raise InvalidArgument(f"page_size must be between 0 and {most}")
    return value or default


class IdentityServicer(identity_service_pb2_grpc.IdentityServiceServicer):
    def __init__(self, identity: Identity) -> None:
        self._identity = identity

    async def _tenant_proto(self, doc: Record) -> identity_pb2.Tenant:
        return convert.tenant_to_proto(doc, await self._identity.quotas(doc["_id"]))

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
        return identity_service_pb2.CreateApiKeyResponse(
            key=convert.key_to_proto(doc), secret=secret
        )

    async def ListApiKeys(
        self, request: identity_service_pb2.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.ListApiKeysResponse:
        docs = await self._identity.keys(
            check_tenant_id(request.tenant_id), request.include_inactive
        )
        return identity_service_pb2.ListApiKeysResponse(
            keys=[convert.key_to_proto(d) for d in docs]
        )

    async def RotateApiKey(
        self, request: identity_service_pb2.RotateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> identity_service_pb2.CreateApiKeyResponse:
        doc, secret = await self._identity.rotate_key(
            request.key_id, request.ttl_days, current_principal().key_id
        )
        return identity_service_pb2.CreateApiKeyResponse(
            key=convert.key_to_proto(doc), secret=secret
        )

    async def RevokeApiKey(
        self, request: identity_service_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.ApiKey:
        return convert.key_to_proto(await self._identity.revoke_key(request.key_id))

    async def GetUsage(
        self, request: identity_service_pb2.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Usage:
        me = current_principal()
        tenant_id = request.tenant_id or me.tenant_id
        usage = await self._identity.usage(tenant_id, me.tenant_id, me.is_partner)
        return convert.usage_to_proto(tenant_id, usage)

    async def ListAuditEvents(
        self,
        request: identity_service_pb2.ListAuditEventsRequest,
        context: grpc.aio.ServicerContext,
    ) -> identity_service_pb2.ListAuditEventsResponse:
        size = _page_size(request.page_size, 100, 1000)
        since = from_timestamp(request.since) if request.HasField("since") else None
        after = convert.audit_cursor(request.page_token) if request.page_token else None
        docs = await self._identity.audit_events(request.tenant_id, since, after, size + 1)
        more = len(docs) > size
        docs = docs[:size]
        return identity_service_pb2.ListAuditEventsResponse(
            events=[convert.audit_event_to_proto(d) for d in docs],
            next_page_token=convert.audit_token(docs[-1]) if more else "",
        )
