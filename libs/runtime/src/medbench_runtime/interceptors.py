"""The server interceptor: authenticates and authorises every call, maps domain errors to gRPC
status codes, records RPC metrics and appends audited calls to the audit log."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError
from opentelemetry import trace

from medbench.identity.v1 import access_pb2
from medbench_runtime import errors
from medbench_runtime.auth import Authenticator, Principal, authorize, set_principal
from medbench_runtime.metrics import (
    PROBES_UNAUDITED,
    REFUSALS_UNAUDITED,
    RPC_HANDLED,
    RPC_LATENCY,
    TENANT_CALLS,
)
from medbench_runtime.tracing import context_from, span

log = logging.getLogger(__name__)

# Request fields that name what a call acts on (recorded in the audit log).
TARGET_FIELDS = (
    "submission_id",
    "tenant_id",
    "key_id",
    "pool_id",
    "rubric_id",
    "review_id",
    "entry_id",
    "request_id",
    "board_id",
)
REFLECTION = "/grpc.reflection."
HEALTH = "/grpc.health."
# Who may read an internal service's reflection: the platform's services and its staff, never a
# partner key (partners have the gateway, whose reflection is open).
STAFF_ROLES = frozenset(
    {
        access_pb2.ROLE_SERVICE,
        access_pb2.ROLE_MAINTAINER,
        access_pb2.ROLE_OPS,
        access_pb2.ROLE_REVIEWER,
    }
)


class AuditSink(Protocol):
    """The append-only audit log."""

    async def append(self, event: dict[str, Any]) -> None: ...


def server_span(method: str, context: grpc.aio.ServicerContext) -> Any:
    """The call's SERVER span, a child of the caller's context when its metadata carries one."""
    service, _, name = method.lstrip("/").rpartition("/")
    return span(
        method,
        trace.SpanKind.SERVER,
        parent=context_from(context.invocation_metadata()),
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
    )


def _tenant(principal: Principal | None) -> str:
    return principal.tenant_id if principal is not None else ""


def count_call(service: str, method: str, code: str, principal: Principal | None) -> None:
    """Counts a completed call: by method and code, and for a partner by tenant and code
    (staff, services and unauthenticated callers are not counted per tenant)."""
    RPC_HANDLED.labels(service, method, code).inc()
    if principal is not None and principal.is_partner:
        TENANT_CALLS.labels(service, principal.tenant_id, code).inc()


def certificate_subject(context: grpc.aio.ServicerContext) -> str | None:
    """The common name of the client certificate (mutual TLS), if the call presented one."""
    names = (context.auth_context() or {}).get("x509_common_name") or []
    return names[0].decode() if names else None


def audit_target(request: Any) -> str:
    """ "field=value" pairs of the request's identifying fields (unary requests only)."""
    parts = []
    for name in TARGET_FIELDS:
        value = getattr(request, name, None)
        if isinstance(value, str) and value:
            parts.append(f"{name}={value[:128]}")
    return " ".join(parts)


def peer_host(peer: str) -> str:
    """The address part of a gRPC peer ("ipv4:10.0.0.7:51234" -> "ipv4:10.0.0.7")."""
    host, _, port = peer.rpartition(":")
    return host if host and port.isdigit() else peer


class RefusalBudget:
    """How many refused (UNAUTHENTICATED) calls per peer address go to the audit log: a token
    bucket of `burst` refusals, refilled at `per_s`. Beyond it refusals are only counted
    (medbench_grpc_refusals_unaudited_total), so a flood of bad credentials costs no write per
    call. It never refuses a call: peers behind one NAT or proxy share an address, and a
    partner's valid key must keep working while someone else floods from there. A second
    budget of the same kind meters the audited NOT_FOUND answers to partners (probes).
    """

    def __init__(
        self,
        burst: int = 100,
        per_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        max_peers: int = 10_000,
        what: str = "refused calls",
    ) -> None:
        self._what = what
        self._burst = float(burst)
        self._per_s = per_s
        self._clock = clock
        self._max_peers = max_peers
        # peer -> (tokens, when they were counted, refusals not audited since the last audited)
        self._peers: dict[str, tuple[float, float, int]] = {}

    def audit(self, peer: str) -> bool:
        """Whether this refused call from peer is written to the audit log."""
        host, now = peer_host(peer), self._clock()
        tokens, then, unaudited = self._peers.get(host, (self._burst, now, 0))
        tokens = min(self._burst, tokens + (now - then) * self._per_s)
        if tokens >= 1:
            if unaudited:
                log.warning("%s: %d %s were counted, not audited", host, unaudited, self._what)
            self._remember(host, (tokens - 1, now, 0))
            return True
        if not unaudited:
            log.warning(
                "%s: more than %d %s; further ones are counted, not audited",
                host,
                int(self._burst),
                self._what,
            )
        self._remember(host, (tokens, now, unaudited + 1))
        return False

    def _remember(self, host: str, state: tuple[float, float, int]) -> None:
        if host not in self._peers and len(self._peers) >= self._max_peers:
            self._peers.clear()
        self._peers[host] = state


class Malformed:
    """A request body that is not a valid message of the method's request type; the call is
    refused with INVALID_ARGUMENT once the caller is authenticated."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """deserializer, returning a Malformed for a body that does not parse: gRPC itself would
    answer UNKNOWN and log a traceback for what is the caller's mistake."""
    if deserializer is None:
        return None

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError as exc:
            return Malformed(str(exc))

    return parse


def well_formed(request: Any) -> Any:
    """request, or INVALID_ARGUMENT saying why its body does not parse."""
    if isinstance(request, Malformed):
        raise errors.InvalidArgument(
            f"the request is not a valid protobuf message: {request.reason}"
        )
    return request


async def well_formed_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The messages of a client stream, ending in INVALID_ARGUMENT at the first malformed one."""
    async for request in requests:
        yield well_formed(request)


def _parsed(behavior: Callable[..., Any], streamed: bool, responses: bool) -> Callable[..., Any]:
    """behavior, refusing a malformed body with INVALID_ARGUMENT and nothing else."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(
                well_formed_stream(request) if streamed else well_formed(request), context
            )
        except errors.InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            checked = well_formed_stream(request) if streamed else well_formed(request)
            async for response in behavior(checked, context):
                yield response
        except errors.InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    return stream if responses else unary


STATUS_BY_ERROR: dict[type[errors.MedbenchError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_for(exc: errors.MedbenchError) -> grpc.StatusCode:
    """The status code of a domain error (its nearest mapped base class)."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return grpc.StatusCode.UNKNOWN


class RpcInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler once, so servicers stay free of try/except."""

    def __init__(
        self,
        service: str,
        auth: Authenticator | None = None,
        audit: AuditSink | None = None,
        refusals: RefusalBudget | None = None,
        reflection_roles: Collection[int] | None = None,
        probes: RefusalBudget | None = None,
    ) -> None:
        self._service = service
        # None only for tests of the interceptor itself; run_service always passes one.
        self._auth = auth
        self._audit = audit
        self._refusals = refusals or RefusalBudget()
        # NOT_FOUND answers to partners written to the audit log, per peer address.
        self._probes = probes or RefusalBudget(what="NOT_FOUND answers to partners")
        # Roles that may call reflection; None: anyone (the gateway's public API).
        self._reflection_roles = (
            frozenset(reflection_roles) if reflection_roles is not None else None
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        # Health answers anyone (Kubernetes probes), and so does reflection where it is open
        # (the gateway): bodies are checked, callers not. Elsewhere reflection needs a caller
        # of reflection_roles (see _authorize).
        open_to_all = method.startswith(HEALTH) or (
            method.startswith(REFLECTION) and self._reflection_roles is None
        )

        def wrap(behavior: Callable[..., Any], streamed: bool, responses: bool) -> Any:
            if open_to_all:
                return _parsed(behavior, streamed, responses)
            if responses:
                return self._streaming(method, behavior, streamed)
            return self._unary(method, behavior, streamed)

        kwargs: dict[str, Any] = {
            "request_deserializer": tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                wrap(handler.unary_unary, False, False), **kwargs
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                wrap(handler.stream_unary, True, False), **kwargs
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                wrap(handler.unary_stream, False, True), **kwargs
            )
        return grpc.stream_stream_rpc_method_handler(
            wrap(handler.stream_stream, True, True), **kwargs
        )

    def _unary(
        self, method: str, behavior: Callable[..., Any], streamed: bool = False
    ) -> Callable[..., Any]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            principal: Principal | None = None
            audited = False
            with server_span(method, context) as current:
                try:
                    principal = await self._authenticate(context)
                    audited = self._authorize(method, principal)
                    current.set_attribute("medbench.tenant", _tenant(principal))
                    checked = well_formed_stream(request) if streamed else well_formed(request)
                    response = await behavior(checked, context)
                except BaseException as exc:
                    await self._fail(method, exc, context, started, principal, request, audited)
                    raise
                await self._done(method, context, started, principal, request, audited)
                return response

        return wrapped

    def _streaming(
        self, method: str, behavior: Callable[..., Any], streamed: bool = False
    ) -> Callable[..., Any]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            principal: Principal | None = None
            audited = False
            with server_span(method, context) as current:
                try:
                    principal = await self._authenticate(context)
                    audited = self._authorize(method, principal)
                    current.set_attribute("medbench.tenant", _tenant(principal))
                    checked = well_formed_stream(request) if streamed else well_formed(request)
                    async for response in behavior(checked, context):
                        yield response
                except BaseException as exc:
                    await self._fail(method, exc, context, started, principal, request, audited)
                    raise
                await self._done(method, context, started, principal, request, audited)

        return wrapped

    async def _authenticate(self, context: grpc.aio.ServicerContext) -> Principal | None:
        """The caller, bound to this call's task (None only without an authenticator)."""
        if self._auth is None:
            return None
        principal = await self._auth.authenticate(
            context.invocation_metadata(), context.peer(), certificate_subject(context)
        )
        set_principal(principal)
        return principal

    def _authorize(self, method: str, principal: Principal | None) -> bool:
        """PERMISSION_DENIED unless the method's policy admits the caller; True when the
        method is audited."""
        if principal is None:
            return False
        if method.startswith(REFLECTION) and self._reflection_roles is not None:
            if principal.role not in self._reflection_roles:
                raise errors.PermissionDenied(
                    f"reflection on {self._service} needs the service token or a staff key "
                    f"(maintainer, ops, reviewer); role {principal.role_name} may not call it"
                )
            return False
        return authorize(method, principal).audit

    async def _done(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        started: float,
        principal: Principal | None,
        request: Any,
        audited: bool,
    ) -> None:
        code = context.code() or grpc.StatusCode.OK
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        count_call(self._service, method, name, principal)
        RPC_LATENCY.labels(self._service, method).observe(time.perf_counter() - started)
        if audited:
            await self._record(method, context, principal, request, name)

    async def _record(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        principal: Principal | None,
        request: Any,
        code: str,
    ) -> None:
        """Appends the call to the audit log; a failing log write fails loudly in the log but
        cannot undo the call it records."""
        if self._audit is None:
            return
        event = {
            "at": datetime.now(UTC),
            "service": self._service,
            "method": method,
            "key_id": principal.key_id if principal else "",
            "tenant_id": principal.tenant_id if principal else "",
            "role": principal.role if principal else 0,
            "peer": context.peer() or "",
            "code": code,
            "target": audit_target(request),
        }
        try:
            await self._audit.append(event)
        except Exception:
            log.exception("audit log write failed for %s", method)

    async def _fail(
        self,
        method: str,
        exc: BaseException,
        context: grpc.aio.ServicerContext,
        started: float,
        principal: Principal | None = None,
        request: Any = None,
        audited: bool = False,
    ) -> None:
        """Turns exc into an abort; re-raising afterwards lets grpc finish the call."""
        RPC_LATENCY.labels(self._service, method).observe(time.perf_counter() - started)
        if isinstance(exc, errors.MedbenchError):
            code = status_for(exc)
            count_call(self._service, method, code.name, principal)
            log.info("%s -> %s: %s", method, code.name, exc)
            refused = isinstance(exc, errors.Unauthenticated | errors.PermissionDenied)
            anonymous = isinstance(exc, errors.Unauthenticated)
            # A partner's NOT_FOUND may be a probe of another tenant's id: audited (within the
            # peer's budget) whether or not the id exists elsewhere, so the answer takes as long
            # either way and says nothing more than NOT_FOUND.
            probe = (
                isinstance(exc, errors.NotFound) and principal is not None and principal.is_partner
            )
            if anonymous and not audited and not self._refusals.audit(context.peer() or ""):
                REFUSALS_UNAUDITED.labels(self._service).inc()
            elif probe and not audited and not self._probes.audit(context.peer() or ""):
                PROBES_UNAUDITED.labels(self._service).inc()
            elif audited or refused or probe:
                await self._record(method, context, principal, request, code.name)
            retry_after = getattr(exc, "retry_after_s", None)
            if retry_after is not None:
                context.set_trailing_metadata((("retry-after", str(int(retry_after))),))
            await context.abort(code, str(exc))
        if isinstance(exc, grpc.aio.AbortError | GeneratorExit) or context.code() is not None:
            code = context.code()
            name = code.name if isinstance(code, grpc.StatusCode) else "ABORTED"
            count_call(self._service, method, name, principal)
            return
        if isinstance(exc, Exception):
            count_call(self._service, method, "INTERNAL", principal)
            if audited:
                await self._record(method, context, principal, request, "INTERNAL")
            log.exception("%s failed", method)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}")
