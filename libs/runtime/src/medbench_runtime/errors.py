"""Domain errors: plain exceptions the core may raise; the gRPC layer maps them to status codes."""

from __future__ import annotations


class MedbenchError(Exception):
    """Base class; the message is shown to the caller, so it must name the problem."""


class InvalidArgument(MedbenchError):
    """The request is malformed or names something that does not fit."""


class NotFound(MedbenchError):
    """The named thing does not exist (or belongs to another tenant)."""


class AlreadyExists(MedbenchError):
    """The thing to create exists with different content."""


class FailedPrecondition(MedbenchError):
    """The request is valid but the target is not in a state that allows it."""


class Aborted(MedbenchError):
    """A concurrent change got in the way; retrying the same request is safe."""


class Unauthenticated(MedbenchError):
    """The caller did not say who it is."""


class PermissionDenied(MedbenchError):
    """The caller may not do this."""


class Unimplemented(MedbenchError):
    """The platform does not offer this yet."""


class Unavailable(MedbenchError):
    """A dependency is down; retrying later may succeed."""


class DeadlineExceeded(MedbenchError):
    """The server stopped waiting for the caller (e.g. a client stream that fell silent)."""


class ResourceExhausted(MedbenchError):
    """A quota or size limit was hit; retry_after_s (when known) goes out as the `retry-after`
    trailing metadata, in seconds."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
