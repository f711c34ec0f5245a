"""The server interceptor: maps domain errors to gRPC status codes and records RPC metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from medbench_runtime import errors
from medbench_runtime.metrics import RPC_HANDLED, RPC_LATENCY

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[errors.MedbenchError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
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

    def __init__(self, service: str) -> None:
        self._service = service

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
            try:
                response = await behavior(request, context)
            except BaseException as exc:
                await self._fail(method, exc, context, started)
                raise
            self._done(method, context, started)
            return response

        return wrapped

    def _streaming(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                await self._fail(method, exc, context, started)
                raise
            self._done(method, context, started)

        return wrapped

    def _done(self, method: str, context: grpc.aio.ServicerContext, started: float) -> None:
        code = context.code() or grpc.StatusCode.OK
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        RPC_HANDLED.labels(self._service, method, name).inc()
        RPC_LATENCY.labels(self._service, method).observe(time.perf_counter() - started)

    async def _fail(
        self, method: str, exc: BaseException, context: grpc.aio.ServicerContext, started: float
    ) -> None:
        """Turns exc into an abort; re-raising afterwards lets grpc finish the call."""
        RPC_LATENCY.labels(self._service, method).observe(time.perf_counter() - started)
        if isinstance(exc, errors.MedbenchError):
            code = status_for(exc)
            RPC_HANDLED.labels(self._service, method, code.name).inc()
            log.info("%s -> %s: %s", method, code.name, exc)
            await context.abort(code, str(exc))
        if isinstance(exc, grpc.aio.AbortError | GeneratorExit) or context.code() is not None:
            code = context.code()
            RPC_HANDLED.labels(
                self._service, method, code.name if isinstance(code, grpc.StatusCode) else "ABORTED"
            ).inc()
            return
        if isinstance(exc, Exception):
            RPC_HANDLED.labels(self._service, method, "INTERNAL").inc()
            log.exception("%s failed", method)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}")
