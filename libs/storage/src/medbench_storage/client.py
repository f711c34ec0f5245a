"""Connecting to MongoDB and running transactions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from kafka.errors import KafkaConnectionError, RetriableError
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import ConnectionFailure

from medbench_runtime.settings import MongoSettings
from medbench_runtime.tracing import tracing_enabled
from medbench_storage.tracing import MongoCommandSpans

T = TypeVar("T")

# Failures of the infrastructure, not of the message: consumers retry these forever
# instead of dead-lettering, so an outage never turns into a lost or wrong score.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionFailure,
    RetriableError,
    KafkaConnectionError,
)


def tls_options(settings: MongoSettings) -> dict[str, Any]:
    """The client's TLS files (MEDBENCH_MONGO__TLS_*): either turns TLS on, whatever the URI
    says; without them the URI alone decides (`tls=true`, the system's CAs)."""
    options: dict[str, Any] = {}
    if settings.tls_ca_file:
        options["tlsCAFile"] = settings.tls_ca_file
    if settings.tls_certificate_key_file:
        options["tlsCertificateKeyFile"] = settings.tls_certificate_key_file
    if options:
        options["tls"] = True
    return options


@asynccontextmanager
async def connect(settings: MongoSettings) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    """An AsyncMongoClient for the settings, closed on exit. The URI carries the user
    (authSource, authMechanism=SCRAM-SHA-256) and may carry `tls=true`."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.uri.get_secret_value(),
        **tls_options(settings),
        serverSelectionTimeoutMS=int(settings.server_selection_timeout_s * 1000),
        tz_aware=True,
        retryWrites=True,
        # Command spans only when tracing is on: a command listener makes the driver build an
        # event (with the command and reply documents) for every command.
        event_listeners=[MongoCommandSpans()] if tracing_enabled() else [],
    )
    try:
        yield client
    finally:
        await client.close()


async def ping(client: AsyncMongoClient[dict[str, Any]]) -> None:
    """Raises unless the server answers."""
    await client.admin.command("ping")


async def in_transaction(
    client: AsyncMongoClient[dict[str, Any]],
    work: Callable[[AsyncClientSession], Awaitable[T]],
) -> T:
    """Runs work in a multi-document transaction, retrying transient transaction errors."""
    async with client.start_session() as session:
        return await session.with_transaction(work)
