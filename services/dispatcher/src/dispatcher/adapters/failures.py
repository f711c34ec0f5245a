"""Which errors the dispatcher waits out, and the reason a job that cannot be loaded fails with
(the use cases get both as plain functions: they know no gRPC, MongoDB or key store)."""

from __future__ import annotations

import grpc

from dispatcher.core.jobs import INTERNAL_FAILURE, KEY_NOT_HELD, KEY_UNREADABLE
from medbench_storage.client import TRANSIENT_ERRORS
from medbench_storage.endpoint_keys import KeyNotHeld
from medbench_storage.secrets import SecretsError


def is_outage(exc: BaseException) -> bool:
    """Whether exc is an outage that passes (a restarting peer, an unreachable database)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return isinstance(exc, TRANSIENT_ERRORS)


def load_failure(exc: BaseException) -> str:
    """The reason a job that cannot be loaded fails with (details in the log)."""
    if isinstance(exc, KeyNotHeld):
        return KEY_NOT_HELD
    if isinstance(exc, SecretsError):
        return KEY_UNREADABLE
    return INTERNAL_FAILURE
