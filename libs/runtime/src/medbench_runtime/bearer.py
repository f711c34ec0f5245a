"""Client side of authentication: every call on a channel carries `authorization: Bearer <key>`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from medbench_runtime.tracing import trace_headers


class _Bearer:
    """Adds the bearer token to every call's metadata (over TLS or loopback: the token is a
    password)."""

    def __init__(self, token: str) -> None:
        self._entry = ("authorization", f"Bearer {token}")
        self.channel: grpc.aio.Channel | None = None

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        # The caller's trace context travels too (nothing when no span is being recorded).
        metadata = grpc.aio.Metadata(
            *[(k, v) for k, v in (details.metadata or ()) if k != "authorization"],
            self._entry,
            *trace_headers(),
        )
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files an interceptor under the first call type it implements only, so each call type
# gets its own class.
class _UnaryUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnary(_Bearer, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(details), request_iterator)


class _StreamStream(_Bearer, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(details), request_iterator)


def bearer_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that make every call of a channel carry `authorization: Bearer <token>`."""
    return [_UnaryUnary(token), _UnaryStream(token), _StreamUnary(token), _StreamStream(token)]


def authorized_channel(
    address: str,
    token: str | None,
    options: Sequence[tuple[str, Any]] = (),
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.aio.Channel:
    """A channel whose calls carry token (none when token is empty); TLS with credentials."""
    interceptors = bearer_interceptors(token) if token else None
    if credentials is not None:
        chan = grpc.aio.secure_channel(
            address, credentials, options=list(options), interceptors=interceptors
        )
    else:
        chan = grpc.aio.insecure_channel(address, options=list(options), interceptors=interceptors)
    # A collected channel closes itself, and an intercepted call reaches the channel only after
    # the stub call returned: a stub made from a temporary channel must keep it alive, so the
    # interceptors (which the stub holds) hold it.
    for interceptor in interceptors or ():
        interceptor.channel = chan
    return chan
