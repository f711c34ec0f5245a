"""run_service(): grpc.aio server with health, reflection, metrics and a graceful SIGTERM drain."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Counter

from medbench_runtime.auth import MIN_SERVICE_TOKEN, Authenticator, KeyStore
from medbench_runtime.interceptors import STAFF_ROLES, AuditSink, RefusalBudget, RpcInterceptor
from medbench_runtime.introspection import HEALTH_SERVICE, HealthService, enable_reflection
from medbench_runtime.metrics import serve_metrics
from medbench_runtime.settings import ServiceSettings

log = logging.getLogger(__name__)


class Worker(Protocol):
    """A long-running background job (a Kafka consumer, an outbox relay, a sweeper)."""

    name: str

    async def run(self) -> None:
        """Runs until stop() is called. An exception restarts it after a backoff (see
        supervise); one bad message must never get that far."""

    def stop(self) -> None:
        """Asks run() to return after the work in hand."""


WORKER_RESTARTS = Counter(
    "medbench_worker_restarts_total",
    "Background workers (consumers, outbox relays, schedulers) that failed and were restarted.",
    ["worker"],
)
# Backoff before a failed worker runs again: doubles per failure in a row, up to the cap; a run
# that lasted longer than the cap starts the count again.
RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0


async def supervise(worker: Worker, stopping: asyncio.Event) -> None:
    """Runs a worker until it returns, restarting it after any failure until the service
    stops: a worker's failure never takes the process, and so the service's API, down."""
    failures = 0
    while not stopping.is_set():
        started = asyncio.get_running_loop().time()
        try:
            await worker.run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            if asyncio.get_running_loop().time() - started > RESTART_MAX_S:
                failures = 0
            failures += 1
            WORKER_RESTARTS.labels(worker.name).inc()
            delay = min(RESTART_FIRST_S * 2 ** (failures - 1), RESTART_MAX_S)
            log.exception("worker %s failed; restarting in %.1f s", worker.name, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=delay)


@dataclass
class Servicer:
    """A servicer and the generated function that registers it."""

    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    # Full service name for reflection and health, e.g. "medbench.report.v1.ReportService".
    full_name: str

    @classmethod
    def of(cls, grpc_module: ModuleType, servicer: Any) -> Servicer:
        """The Servicer for an implementation of a generated `<Name>Servicer` base class of
        grpc_module (a `*_pb2_grpc` module): the registering function and the full service
        name are read from the generated code, so app.py names each service once."""
        for base in type(servicer).__mro__:
            name = base.__name__.removesuffix("Servicer")
            if getattr(grpc_module, base.__name__, None) is base and name:
                break
        else:
            raise TypeError(
                f"{type(servicer).__name__} implements no servicer of {grpc_module.__name__}"
            )
        messages = importlib.import_module(grpc_module.__name__.removesuffix("_grpc"))
        return cls(
            getattr(grpc_module, f"add_{base.__name__}_to_server"),
            servicer,
            messages.DESCRIPTOR.services_by_name[name].full_name,
        )


@dataclass
class ServiceRuntime:
    """What run_service needs besides settings."""

    servicers: Sequence[Servicer] = ()
    workers: Sequence[Worker] = ()
    # Awaited before the health service turns SERVING (e.g. Mongo ping, topic creation).
    readiness: Sequence[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Where API keys are verified (the identity collections); without one only the service
    # token is accepted. auth, when given, replaces the authenticator built from settings.
    key_store: KeyStore | None = None
    auth: Authenticator | None = None
    # Where audited calls are appended.
    audit: AuditSink | None = None
    # Reflection open to every caller (the gateway: its API is public); otherwise it needs the
    # service token or a staff key (STAFF_ROLES). Health always answers anyone.
    open_reflection: bool = False


def grpc_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    """Channel/server options both sides use, so large batches fit."""
    return [
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
    ]


def server_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    """Server options: grpc_options, and a maximum connection age (with a limit on the time
    calls in flight may still take, when one is set) so that clients' connections end now and
    then and their round_robin channels resolve the name again: replicas started since get
    calls (README "Balancing and replicas"). gRPC adds +-10% jitter to the age, so a fleet's
    connections do not end at once."""
    options = grpc_options(settings)
    if settings.grpc_max_connection_age_s > 0:
        options.append(
            ("grpc.max_connection_age_ms", int(settings.grpc_max_connection_age_s * 1000))
        )
        if settings.grpc_max_connection_age_grace_s > 0:
            options.append(
                (
                    "grpc.max_connection_age_grace_ms",
                    int(settings.grpc_max_connection_age_grace_s * 1000),
                )
            )
    return options


def server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials:
    """TLS for the gRPC port; mutual TLS when a client CA is configured."""
    tls = settings.auth

    def read(path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    ca = read(tls.tls_client_ca_file) if tls.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(read(tls.tls_key_file), read(tls.tls_cert_file))],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


async def run_service(settings: ServiceSettings, runtime: ServiceRuntime) -> None:
    """Serves until SIGTERM/SIGINT, then drains and returns (failed workers are restarted)."""
    token = settings.auth.service_token.get_secret_value().strip()
    if 0 < len(token) < MIN_SERVICE_TOKEN:
        raise RuntimeError(
            f"MEDBENCH_AUTH__SERVICE_TOKEN is {len(token)} characters; at least "
            f"{MIN_SERVICE_TOKEN} are needed"
        )
    if not token:
        log.error("MEDBENCH_AUTH__SERVICE_TOKEN is not set: calls between services are refused")
    metrics = serve_metrics(
        settings.metrics_host,
        settings.metrics_port,
        settings.metrics_token.get_secret_value(),
    )
    try:
        await _serve(settings, runtime)
    finally:
        await asyncio.to_thread(metrics.shutdown)
        metrics.server_close()


async def _serve(settings: ServiceSettings, runtime: ServiceRuntime) -> None:
    auth = runtime.auth or Authenticator(
        settings.auth.service_token.get_secret_value(),
        runtime.key_store,
        settings.auth.cache_ttl_s,
        service_token_hashes=settings.auth.service_token_hashes,
    )
    refusals = RefusalBudget(settings.auth.refusals_audit_burst, settings.auth.refusals_audit_per_s)
    probes = RefusalBudget(
        settings.auth.refusals_audit_burst,
        settings.auth.refusals_audit_per_s,
        what="NOT_FOUND answers to partners",
    )
    interceptor = RpcInterceptor(
        settings.service_name,
        auth,
        runtime.audit,
        refusals,
        reflection_roles=None if runtime.open_reflection else STAFF_ROLES,
        probes=probes,
    )
    server = grpc.aio.server(interceptors=[interceptor], options=server_options(settings))
    health_servicer = HealthService()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [s.full_name for s in runtime.servicers]
    for s in runtime.servicers:
        s.add_to_server(s.servicer, server)
    enable_reflection([*names, HEALTH_SERVICE], server)
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    if settings.auth.tls_cert_file:
        bound = server.add_secure_port(address, server_credentials(settings))
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise RuntimeError(f"cannot bind gRPC port {address}")
    await server.start()
    log.info(
        "gRPC listening on %s, metrics on %s:%s",
        address,
        settings.metrics_host,
        settings.metrics_port,
    )

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    for check in runtime.readiness:
        await check()
    tasks = {asyncio.create_task(supervise(w, stopping), name=w.name): w for w in runtime.workers}
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving")

    await stopping.wait()

    # Drain: refuse new work first, then let in-flight work finish within the grace period.
    await health_servicer.enter_graceful_shutdown()
    for worker in tasks.values():
        worker.stop()
    pending = [t for t in tasks if not t.done()]
    if pending:
        _, still = await asyncio.wait(pending, timeout=settings.shutdown_grace_s)
        for task in still:
            task.cancel()
    await server.stop(settings.shutdown_grace_s)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    log.info("stopped")
