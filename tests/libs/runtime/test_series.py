"""Series per pod, counted from the metrics' real definitions: every medbench_* metric the
services register is declared again in a fresh registry with the same type, labels and buckets,
filled with synthetic label values (the assumptions below), and its samples counted. The chart
README ("Series per pod") states the result at 1,000 tenants; this test keeps it true.

`python -m tests.libs.runtime.test_series` prints the table.
"""

from __future__ import annotations

import importlib
import itertools
import re
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from medbench_runtime import metrics

ROOT = Path(__file__).resolve().parents[3]
TENANTS = 1000
# Pods per component: the chart's defaults (values.yaml: autoscaling off, gateway 2, others 1)
# and production-values.yaml at the autoscalers' maximum (12; the rotator 2).
DEFAULT_REPLICAS = {
    "gateway": 2,
    "rotator": 1,
    "dispatcher": 1,
    "metric_scorer": 1,
    "judge_scorer": 1,
    "aggregator": 1,
}
PRODUCTION_MAX_REPLICAS = {c: 12 for c in DEFAULT_REPLICAS} | {"rotator": 2}
# The gRPC services each component serves (plus grpc.health.v1.Health: 2 methods; reflection: 1).
SERVED = {
    "gateway": [
        "medbench.submission.v1.SubmissionService",
        "medbench.identity.v1.IdentityService",
        "medbench.leaderboard.v1.LeaderboardService",
        "medbench.ops.v1.ProbingService",
        "medbench.ops.v1.QuarantineService",
    ],
    "rotator": ["medbench.taskpool.v1.TaskPoolService"],
    "dispatcher": ["medbench.dispatch.v1.DispatcherService"],
    "metric_scorer": [],
    "judge_scorer": ["medbench.judge.v1.JudgeService"],
    "aggregator": [
        "medbench.report.v1.ReportService",
        "medbench.leaderboard.v1.LeaderboardService",
    ],
}
PROTO_MODULES = [
    "medbench.submission.v1.submission_service_pb2",
    "medbench.identity.v1.identity_service_pb2",
    "medbench.leaderboard.v1.leaderboard_service_pb2",
    "medbench.ops.v1.probing_service_pb2",
    "medbench.ops.v1.quarantine_service_pb2",
    "medbench.taskpool.v1.taskpool_service_pb2",
    "medbench.dispatch.v1.dispatch_service_pb2",
    "medbench.judge.v1.judge_service_pb2",
    "medbench.report.v1.report_service_pb2",
]
# Values per label on one pod (assumptions, stated in the README): a method ends in 4 status
# codes (OK and 3 errors), a tenant's calls in 4; 7 topics, one group and 3 partitions per
# consumer; 10 datasets, 10 rubric versions, 1 judge model.
PER_LABEL = {
    "tenant": TENANTS,
    "code": 4,
    "track": 3,
    "mode": 2,
    "state": 7,
    "stage": 1,  # answered on the gateway, scored on the metric scorer, judged on the judge
    "topic": 7,
    "group": 1,
    "partition": 3,
    "outcome": 4,
    "source": 2,
    "collection": 1,
    "worker": 3,
    "model": 1,
    "judge": 1,
    "rubric": 10,
    "dataset": 10,
    "result": 2,
    "reading": 3,
    "kind": 2,
}
# Gauges cleared at every sweep hold only what is wrong now: stuck submissions of at most 10
# tenants, in the two states that can be stuck.
# Findings counters (canary originals seen, probing flags) count rare events: 10 tenants each.
# Submissions finish in 3 terminal states. Everything else: every tenant uses every track and mode.
OVERRIDES = {
    "medbench_submissions_stuck": {"tenant": 10, "state": 2},
    "medbench_submissions_finished_total": {"state": 3},
    "medbench_canary_original_answers_total": {"tenant": 10},
    "medbench_gateway_probing_flags_total": {"tenant": 10},
}
# Shared metrics only some components ever count (a series exists once counted).
# Partners' calls reach only the gateway (its RPCs are the only ones partner roles may call).
USED_BY = {
    "medbench_items_total": {"gateway", "metric_scorer", "judge_scorer"},
    "medbench_grpc_tenant_calls_total": {"gateway"},
}
DEFINITION = re.compile(r"\b(?:Counter|Gauge|Histogram)\(\s*\"(medbench_\w+)\"")


def _owner(path: Path) -> str:
    """The component a module's metrics live in ("" for the shared libraries: every pod)."""
    parts = path.relative_to(ROOT).parts
    return parts[1] if parts[0] == "services" else ""


def _module(path: Path) -> str:
    src = path.parts.index("src")
    return ".".join(path.parts[src + 1 :]).removesuffix(".py")


def definitions() -> dict[str, tuple[str, Any]]:
    """Every medbench_* metric the code defines: name -> (owner component, collector)."""
    owners: dict[str, str] = {}
    for base in ("libs", "services"):
        for path in (ROOT / base).rglob("*.py"):
            if "src" not in path.parts:
                continue
            names = DEFINITION.findall(path.read_text(encoding="utf-8"))
            if names:
                importlib.import_module(_module(path))
                owners |= {n: _owner(path) for n in names}
    collectors: dict[str, Any] = {}
    for c in list(REGISTRY._collector_to_names):  # noqa: SLF001 - the definitions are counted
        name = getattr(c, "_name", "")
        if name.startswith("medbench_"):
            collectors[name] = collectors[f"{name}_total"] = c
    return {name: (owners[name], collectors[name]) for name in owners if name in collectors}


def methods(component: str) -> int:
    served = 0
    for module in PROTO_MODULES:
        for service in importlib.import_module(module).DESCRIPTOR.services_by_name.values():
            if service.full_name in SERVED[component]:
                served += len(service.methods)
    return served + 3  # health Check and Watch, reflection


def series_per_pod(component: str, tenants: int = TENANTS) -> dict[str, int]:
    """Series one pod of component exports, by metric, with synthetic label values."""
    values = PER_LABEL | {"tenant": tenants, "method": methods(component), "medbench_service": 1}
    registry = CollectorRegistry()
    counts: dict[str, int] = {}
    for name, (owner, original) in definitions().items():
        if owner not in ("", component) or component not in USED_BY.get(name, {component}):
            continue
        labels = list(original._labelnames)  # noqa: SLF001
        kind = type(original)
        extra: dict[str, Any] = {}
        if kind is Histogram:
            extra["buckets"] = original._upper_bounds  # noqa: SLF001
        short = name.removesuffix("_total") if kind is Counter else name
        clone = kind(short, "synthetic", labels, registry=registry, **extra)
        domain = values | OVERRIDES.get(name, {})
        domains = [[f"{label}{i}" for i in range(domain[label])] for label in labels]
        for combo in itertools.product(*domains):
            child = clone.labels(*combo) if labels else clone
            if kind is Histogram:
                child.observe(0.0)
            elif kind is Gauge:
                child.set(1)
            else:
                child.inc()
        counts[name] = sum(
            len(family.samples) for family in registry.collect() if family.name in (short, name)
        )
        registry.unregister(clone)
    return counts


def total(replicas: dict[str, int], tenants: int = TENANTS) -> int:
    return sum(sum(series_per_pod(c, tenants).values()) * n for c, n in replicas.items())


def test_no_created_series_and_no_tenant_on_the_per_method_counter() -> None:
    assert "tenant" not in metrics.RPC_HANDLED._labelnames  # noqa: SLF001
    metrics.RPC_HANDLED.labels("series-test", "/m", "OK").inc()
    text = metrics.metrics_app()  # the exposition every pod serves
    body = b"".join(text({"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics"}, lambda *a: None))
    assert b'medbench_grpc_server_handled_total{code="OK",medbench_service="series-test"' in body
    assert not re.search(rb"^\w+_created[{ ]", body, re.M)


def test_series_grow_with_tenants_only_on_the_gateway_and_the_readme_states_them() -> None:
    per_pod_small = {c: sum(series_per_pod(c, 10).values()) for c in DEFAULT_REPLICAS}
    per_pod = {c: sum(series_per_pod(c).values()) for c in DEFAULT_REPLICAS}
    # RPC counters grow with tenants only where partners call (the gateway); the rotator and
    # the aggregator have no tenant label at all.
    assert per_pod["rotator"] == per_pod_small["rotator"]
    assert per_pod["aggregator"] == per_pod_small["aggregator"]
    gateway_rpc = series_per_pod("gateway")
    assert gateway_rpc["medbench_grpc_tenant_calls_total"] == TENANTS * PER_LABEL["code"]
    assert gateway_rpc["medbench_grpc_server_handled_total"] == methods("gateway") * 4
    defaults = sum(per_pod[c] * n for c, n in DEFAULT_REPLICAS.items())
    production = sum(per_pod[c] * n for c, n in PRODUCTION_MAX_REPLICAS.items())
    # The issue measured about 0.7M at 1,000 tenants and 12 gateway pods (tenant on every
    # pod's per-method counters, `_created` series).
    assert production < 400_000
    readme = (ROOT / "charts" / "medbench" / "README.md").read_text(encoding="utf-8")
    for figure in (defaults, production, per_pod["gateway"]):
        assert f"{figure:,}" in readme, f"the chart README should state {figure:,}"


def _table() -> str:
    rows = []
    for c in DEFAULT_REPLICAS:
        per = sum(series_per_pod(c).values())
        rows.append(
            f"| {c} | {per:,} | {DEFAULT_REPLICAS[c]} | {per * DEFAULT_REPLICAS[c]:,} | "
            f"{PRODUCTION_MAX_REPLICAS[c]} | {per * PRODUCTION_MAX_REPLICAS[c]:,} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(_table())
    defaults, production = total(DEFAULT_REPLICAS), total(PRODUCTION_MAX_REPLICAS)
    print(f"defaults {defaults:,}, production max {production:,}")
    for name, n in sorted(series_per_pod("gateway").items(), key=lambda kv: -kv[1])[:8]:
        print(name, n)
