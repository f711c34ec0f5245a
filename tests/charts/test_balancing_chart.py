"""Balancing in the chart (README "Balancing and replicas"): the services call each other through
headless Services (one DNS record per ready pod) that their round_robin channels resolve, next to
the ClusterIP Services partners, the site, the review app and Prometheus keep using."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from tests.charts.test_chart import (
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    _component,
    _deployments,
    _env,
    _main_container,
    _of_kind,
    _template,
    helm,
    rendered,
    yaml,
)

__all__ = ["helm", "rendered", "yaml"]  # fixtures, imported for pytest
# Whom each service calls over gRPC (the chart's medbench.components `calls`, services only).
CALLS = {
    "gateway": ["rotator", "dispatcher", "aggregator"],
    "dispatcher": ["rotator"],
    "judge-scorer": ["rotator"],
    "rotator": [],
    "metric-scorer": [],
    "aggregator": [],
}
CALLED = {"rotator", "dispatcher", "aggregator"}
PORT = 50051


def _services(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["metadata"]["name"]: s for s in _of_kind(docs, "Service")}


def _target(name: str) -> str:
    return f"dns:///{RELEASE}-{name}-headless.{NAMESPACE}.svc:{PORT}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_peers_are_called_through_headless_services_of_their_pods(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    docs = rendered[scenario]
    deployments = _deployments(docs)
    services = _services(docs)
    for caller, peers in CALLS.items():
        if caller not in deployments:
            continue
        env = _env(_main_container(deployments[caller]))
        given = {k: v["value"] for k, v in env.items() if k.startswith("MEDBENCH_PEERS__")}
        assert given == {
            f"MEDBENCH_PEERS__{p.upper().replace('-', '_')}": _target(p) for p in peers
        }, caller
    headless = {n: s for n, s in services.items() if s["spec"].get("clusterIP") == "None"}
    assert set(headless) == {f"{RELEASE}-{c}-headless" for c in CALLED if c in deployments}
    for component in CALLED & set(deployments):
        service = headless[f"{RELEASE}-{component}-headless"]
        spec = service["spec"]
        # The pods of the component, ready ones only, on the gRPC port only.
        pods = deployments[component]["spec"]["selector"]["matchLabels"]
        assert spec["selector"] == pods
        assert spec["publishNotReadyAddresses"] is False
        assert spec["ports"] == [
            {
                "name": "grpc",
                "port": PORT,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "grpc",
            }
        ]
        assert _component(service) == f"{component}-headless"
        # The ClusterIP Service stays, with the metrics port, for everyone else.
        plain = services[f"{RELEASE}-{component}"]
        assert plain["spec"].get("clusterIP") != "None"
        assert {p["name"] for p in plain["spec"]["ports"]} == {"grpc", "metrics"}


def test_no_service_monitor_selects_a_headless_service(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["production-values.yaml"]
    monitors = _of_kind(docs, "ServiceMonitor")
    assert monitors
    for service in _of_kind(docs, "Service"):
        labels = service["metadata"]["labels"]
        chosen_by = [
            m["metadata"]["name"]
            for m in monitors
            if m["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        if service["spec"].get("clusterIP") == "None":
            assert chosen_by == [], service["metadata"]["name"]


def test_site_and_partners_keep_the_cluster_ip_services(helm: str, yaml: ModuleType) -> None:
    docs = _template(helm, yaml, "--set", "site.enabled=true")
    site = _env(_main_container(_deployments(docs)["site"]))
    # The site's own channels are not balanced: it keeps the ClusterIP Services.
    assert site["MEDBENCH_PEERS__AGGREGATOR"]["value"] == f"{RELEASE}-aggregator:{PORT}"
    assert f"{RELEASE}-gateway-headless" not in _services(docs)
    assert f"{RELEASE}-gateway" in _services(docs)


def test_long_release_names_keep_headless_names_within_63_characters(
    helm: str, yaml: ModuleType
) -> None:
    # 50 characters: the longest at which the chart's other Service names still differ.
    docs = _template(helm, yaml, "--set", "fullnameOverride=" + "m" * 50)
    names = [s["metadata"]["name"] for s in _of_kind(docs, "Service")]
    assert all(len(n) <= 63 for n in names), names
    assert len(set(names)) == len(names), names
    gateway = _env(_main_container(_deployments(docs)["gateway"]))
    for peer in CALLS["gateway"]:
        target = gateway[f"MEDBENCH_PEERS__{peer.upper()}"]["value"]
        host = target.removeprefix("dns:///").split(".")[0]
        assert host in names and host.endswith("-headless"), target
