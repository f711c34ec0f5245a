"""Exit codes of the partner CLI and how a failed call maps to one (and to its stderr line)."""

from __future__ import annotations

import grpc

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_NOT_READY = 4
EXIT_UNREACHABLE = 5
EXIT_DENIED = 6
EXIT_QUOTA = 7

EXIT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_USAGE,
    grpc.StatusCode.OUT_OF_RANGE: EXIT_USAGE,
    # A request id reused for another model, track or mode.
    grpc.StatusCode.ALREADY_EXISTS: EXIT_USAGE,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION: EXIT_NOT_READY,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNREACHABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNREACHABLE,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_DENIED,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: EXIT_QUOTA,
}


class CliError(Exception):
    """A failure the CLI reports as `medbench: <code>: <message>` with an exit code."""

    def __init__(self, code: str, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code


def usage_error(message: str) -> CliError:
    return CliError("INVALID_ARGUMENT", message, EXIT_USAGE)


def exit_code_for(code: grpc.StatusCode | None) -> int:
    """The exit code of a failed call's status."""
    return EXIT_CODES.get(code, EXIT_OTHER) if code is not None else EXIT_OTHER


def retry_after(exc: grpc.aio.AioRpcError) -> int | None:
    """The `retry-after` trailing metadata (seconds) of a refused call, when present."""
    for key, value in exc.trailing_metadata() or ():
        if key.lower() == "retry-after":
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            try:
                return max(0, int(float(text)))
            except ValueError:
                return None
    return None


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def rpc_error_message(exc: grpc.aio.AioRpcError) -> str:
    """`medbench: CODE: details` (with when to retry, for an exhausted quota)."""
    code = exc.code()
    name = code.name if code is not None else "UNKNOWN"
    details = exc.details() or "(no details)"
    wait = retry_after(exc)
    if wait is not None:
        details += f" (retry-after: {wait} s, about {_duration(wait)})"
    return f"medbench: {name}: {details}"
