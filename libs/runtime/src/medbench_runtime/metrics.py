"""Prometheus metrics shared by every service, and the /metrics endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

RPC_HANDLED = Counter(
    "medbench_grpc_server_handled_total",
    "gRPC calls completed, by method, status code and the caller's tenant (bounded: tenants are "
    "created by maintainers; 'platform' for services and staff, '' when unauthenticated).",
    ["service", "method", "code", "tenant"],
)
RPC_LATENCY = Histogram(
    "medbench_grpc_server_handling_seconds",
    "Time to complete a gRPC call (streams: the whole stream).",
    ["service", "method"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

REFUSALS_UNAUDITED = Counter(
    "medbench_grpc_refusals_unaudited_total",
    "UNAUTHENTICATED calls beyond a peer address's audit budget: counted here, not written to "
    "the audit log (MEDBENCH_AUTH__REFUSALS_AUDIT_BURST, _REFUSALS_AUDIT_PER_S).",
    ["service"],
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


def serve_metrics(host: str, port: int) -> None:
    """Starts the /metrics HTTP endpoint in a daemon thread."""
    start_http_server(port, addr=host)
