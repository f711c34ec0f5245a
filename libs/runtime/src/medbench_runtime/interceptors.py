"""The server interceptor: authenticates and authorises every call, maps domain errors to gRPC
status codes, records RPC metrics and appends audited calls to the audit log."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc
from opentelemetry import trace

from medbench_runtime import errors
from medbench_runtime.auth import Authenticator, Principal, authorize, set_principal
from medbench_runtime.metrics import RPC_HANDLED, RPC_LATENCY
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
    "request_id",
    "board_id",
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
    ) -> None:
        self._service = service
        # None only for tests of the interceptor itself; run_service always passes one.
        self._auth = auth
        self._audit = audit

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if method.startswith(("/grpc.health.", "/grpc.reflection.")):
            return handler
        kwargs: dict[str, Any] = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary), **kwargs
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, handler.stream_unary), **kwargs
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, handler.unary_stream), **kwargs
            )
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(method, handler.stream_stream), **kwargs
        )

    def _unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            principal: Principal | None = None
            audited = False
            with server_span(method, context) as current:
                try:
                    principal = await self._authenticate(context)
                    audited = self._authorize(method, principal)
                    current.set_attribute("medbench.tenant", _tenant(principal))
                    response = await behavior(request, context)
                except BaseException as exc:
                    await self._fail(method, exc, context, started, principal, request, audited)
                    raise
                await self._done(method, context, started, principal, request, audited)
                return response

        return wrapped

    def _streaming(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            principal: Principal | None = None
            audited = False
            with server_span(method, context) as current:
                try:
                    principal = await self._authenticate(context)
                    audited = self._authorize(method, principal)
                    current.set_attribute("medbench.tenant", _tenant(principal))
                    async for response in behavior(request, context):
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
        RPC_HANDLED.labels(self._service, method, name, _tenant(principal)).inc()
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
            RPC_HANDLED.labels(self._service, method, code.name, _tenant(principal)).inc()
            log.info("%s -> %s: %s", method, code.name, exc)
            refused = isinstance(exc, errors.Unauthenticated | errors.PermissionDenied)
            if audited or refused:
                await self._record(method, context, principal, request, code.name)
            retry_after = getattr(exc, "retry_after_s", None)
            if retry_after is not None:
                context.set_trailing_metadata((("retry-after", str(int(retry_after))),))
            await context.abort(code, str(exc))
        if isinstance(exc, grpc.aio.AbortError | GeneratorExit) or context.code() is not None:
            code = context.code()
            RPC_HANDLED.labels(
                self._service,
                method,
                code.name if isinstance(code, grpc.StatusCode) else "ABORTED",
                _tenant(principal),
            ).inc()
            return
        if isinstance(exc, Exception):
            RPC_HANDLED.labels(self._service, method, "INTERNAL", _tenant(principal)).inc()
            if audited:
                await self._record(method, context, principal, request, "INTERNAL")
            log.exception("%s failed", method)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}")
