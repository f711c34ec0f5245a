"""Prometheus metrics shared by every service, and the /metrics endpoint.

/metrics names tenants and their traffic, so with a token set (MEDBENCH_METRICS_TOKEN) it answers
only requests carrying `Authorization: Bearer <token>` (compared in constant time); everything
else gets 401. It listens on its own address (metrics_host, metrics_port; loopback by default).

Series are bounded (charts/medbench/README.md, "Series per pod"): the service's own label is
`medbench_service` (a ServiceMonitor sets `service` itself and would rename ours to
`exported_service`); RPC counters carry no tenant, except the one counter of partners' calls
(partners reach the gateway only); no `_created` series (disabled when this module is imported,
which every service does through its interceptors).
"""

from __future__ import annotations

import hmac
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, Counter, Histogram, disable_created_metrics, make_wsgi_app
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# A shorter metrics token is refused at start (it is a password).
MIN_METRICS_TOKEN = 16

# One `<name>_created` series per counter and histogram child doubles the counters' series for
# a start time Prometheus does not use (process-wide; read at every scrape).
disable_created_metrics()  # type: ignore[no-untyped-call]

# The label naming the service that exports a series (`service` would clash with the label the
# ServiceMonitor sets from the Kubernetes Service).
SERVICE_LABEL = "medbench_service"

RPC_HANDLED = Counter(
    "medbench_grpc_server_handled_total",
    "gRPC calls completed, by method and status code (every caller; per tenant: "
    "medbench_grpc_tenant_calls_total).",
    [SERVICE_LABEL, "method", "code"],
)
TENANT_CALLS = Counter(
    "medbench_grpc_tenant_calls_total",
    "Partners' gRPC calls completed, by tenant and status code (not by method: tenants times "
    "methods times pods is what made series grow). Only partner keys are counted, so only the "
    "gateway, the one partner-facing service, exports it.",
    [SERVICE_LABEL, "tenant", "code"],
)
RPC_LATENCY = Histogram(
    "medbench_grpc_server_handling_seconds",
    "Time to complete a gRPC call (streams: the whole stream).",
    [SERVICE_LABEL, "method"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

REFUSALS_UNAUDITED = Counter(
    "medbench_grpc_refusals_unaudited_total",
    "UNAUTHENTICATED calls beyond a peer address's audit budget: counted here, not written to "
    "the audit log (MEDBENCH_AUTH__REFUSALS_AUDIT_BURST, _REFUSALS_AUDIT_PER_S).",
    [SERVICE_LABEL],
)
PROBES_UNAUDITED = Counter(
    "medbench_grpc_probes_unaudited_total",
    "NOT_FOUND answers to partners beyond a peer address's audit budget (possible probes of "
    "other tenants' ids): counted here, not written to the audit log.",
    [SERVICE_LABEL],
)


ITEMS = Counter(
    "medbench_items_total",
    "Items through a stage (answered, scored, judged) by tenant and track; messages handled "
    "again after a crash count again.",
    ["stage", "tenant", "track"],
)
TRACKS = {0: "unspecified", 1: "llm", 2: "multimodal", 3: "agent"}


def count_items(stage: str, tenant: str, track: int, n: int) -> None:
    """Adds n items to a stage's counter (nothing for n == 0)."""
    if n > 0:
        ITEMS.labels(stage, tenant, TRACKS.get(track, "unspecified")).inc(n)


StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
UNAUTHORIZED = b"401 Unauthorized: send 'Authorization: Bearer <metrics token>'\n"


def authorized(header: str, token: str) -> bool:
    """Whether an Authorization header value is `Bearer <token>` (constant time in the token)."""
    scheme, _, given = header.strip().partition(" ")
    # Both sides are compared whatever the scheme, so a wrong scheme costs what a wrong token does.
    same = hmac.compare_digest(given.strip().encode(), token.encode())
    return scheme.lower() == "bearer" and same


def metrics_app(token: str = "", registry: Collector = REGISTRY) -> WsgiApp:
    """prometheus_client's WSGI app, behind the bearer token when one is given."""
    inner = make_wsgi_app(registry)
    if not token:
        return inner

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not authorized(environ.get("HTTP_AUTHORIZATION", ""), token):
            start_response(
                "401 Unauthorized",
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(UNAUTHORIZED))),
                    ("WWW-Authenticate", 'Bearer realm="metrics"'),
                ],
            )
            return [UNAUTHORIZED]
        body: Iterable[bytes] = inner(environ, start_response)
        return body

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Scrapes are not logged."""


def serve_metrics(host: str, port: int, token: str = "") -> WSGIServer:
    """Starts the /metrics HTTP endpoint in a daemon thread; shutdown() and server_close() of
    the returned server stop it. token: the bearer token every request must carry ("" = none)."""
    token = token.strip()
    if 0 < len(token) < MIN_METRICS_TOKEN:
        raise RuntimeError(
            f"MEDBENCH_METRICS_TOKEN is {len(token)} characters; at least {MIN_METRICS_TOKEN} "
            "are needed"
        )
    if not token:
        log.warning(
            "MEDBENCH_METRICS_TOKEN is not set: /metrics on %s:%s answers whoever reaches it",
            host,
            port,
        )
    family, *_, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    class Server(_Server):
        address_family = family

    server = make_server(str(address[0]), port, metrics_app(token), Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
