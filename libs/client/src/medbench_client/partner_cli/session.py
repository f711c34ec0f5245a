"""The connection to the gateway (opened on first use) and retries of calls safe to repeat."""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from medbench.identity.v1 import identity_service_pb2_grpc
from medbench.leaderboard.v1 import leaderboard_service_pb2_grpc
from medbench.submission.v1 import submission_service_pb2_grpc
from medbench_client.api import PartnerClient, channel, service_stub, tls_credentials
from medbench_client.cli_config import Settings
from medbench_client.partner_cli.errors import usage_error
from medbench_client.partner_cli.output import note

T = TypeVar("T")

# Worth another try after a pause: the gateway (or the way to it) was down, or slow.
# ABORTED: a concurrent change got in the way (every call the CLI repeats is idempotent).
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED}
)
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0


def backoff_s(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Pause before retry number attempt (1, 2, ...): exponential, capped, half jittered."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** (attempt - 1))
    return ceiling / 2 + rng() * ceiling / 2


async def with_retries(
    call: Callable[[], Awaitable[T]],
    attempts: int,
    what: str,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    rng: Callable[[], float] = random.random,
) -> T:
    """call(), again after a backoff while it fails with UNAVAILABLE or DEADLINE_EXCEEDED, at
    most attempts times in all. Only for calls that are safe to repeat."""
    attempt = 1
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE or attempt >= attempts:
                raise
            pause = backoff_s(attempt, rng)
            note(f"{what}: {exc.code().name}, retrying in {pause:.1f} s ({attempt}/{attempts - 1})")
            await sleep(pause)
            attempt += 1


def _is_loopback(address: str) -> bool:
    host = address.split("///")[-1]
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Session:
    """The gateway as the resolved settings name it; the channel opens on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._chan: grpc.aio.Channel | None = None

    @property
    def chan(self) -> grpc.aio.Channel:
        if self._chan is None:
            s = self.settings
            try:
                credentials = tls_credentials(s.tls, s.ca_file)
            except OSError as exc:
                raise usage_error(f"cannot read --ca-file {s.ca_file}: {exc}") from None
            if credentials is None and not _is_loopback(s.gateway):
                note(
                    f"warning: the API key goes to {s.gateway} without TLS (use --tls unless a "
                    "trusted network or proxy protects it)"
                )
            self._chan = channel(s.gateway, s.api_key, credentials)
        return self._chan

    @property
    def partner(self) -> PartnerClient:
        return PartnerClient(self.chan)

    @property
    def submissions(self) -> submission_service_pb2_grpc.SubmissionServiceStub:
        return service_stub(submission_service_pb2_grpc.SubmissionServiceStub, self.chan)

    @property
    def identity(self) -> identity_service_pb2_grpc.IdentityServiceStub:
        return service_stub(identity_service_pb2_grpc.IdentityServiceStub, self.chan)

    @property
    def leaderboard(self) -> leaderboard_service_pb2_grpc.LeaderboardServiceStub:
        return service_stub(leaderboard_service_pb2_grpc.LeaderboardServiceStub, self.chan)

    async def close(self) -> None:
        if self._chan is not None:
            await self._chan.close()
