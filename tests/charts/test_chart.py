"""The Helm chart: lint, render every scenario, validate offline against Kubernetes schemas, check
what the chart promises over the rendered objects, and run promtool on the alert rules.

Tools come from `make chart-tools` (.tools/bin: helm, promtool) and the dev dependencies
(kubernetes-validate, PyYAML). Missing tools fail these tests, unless MEDBENCH_SKIP_CHART_TOOLS=1
turns the failure into a skip.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "medbench"
TOOLS = ROOT / ".tools" / "bin"
KUBE_VERSION = "1.31.0"
RELEASE = "medbench"
NAMESPACE = "medbench"
SCENARIOS = ["chart-defaults"] + sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
WITH_NETWORK_POLICY = [
    "production-values.yaml",
    "judge-disabled-values.yaml",
    "external-judge-values.yaml",
]
SERVICES = ["gateway", "rotator", "dispatcher", "metric-scorer", "judge-scorer", "aggregator"]
SEALED_READERS = {"rotator", "metric-scorer", "judge-scorer"}
MODEL_SERVER = "judge-model"
SITE = "site"
GPU = "nvidia.com/gpu"
# Metrics the alerts and the dashboard use that the services do not export yet (see the chart
# README); everything else they name must exist in libs/ or services/.
PENDING_METRICS: set[str] = set()


def _missing(what: str) -> None:
    if os.environ.get("MEDBENCH_SKIP_CHART_TOOLS") == "1":
        pytest.skip(f"{what} is not installed (MEDBENCH_SKIP_CHART_TOOLS=1)")
    pytest.fail(
        f"{what} is not installed: run `make chart-tools` and `make setup`, "
        "or set MEDBENCH_SKIP_CHART_TOOLS=1 to skip the chart tests",
        pytrace=False,
    )


def _tool(name: str) -> str:
    local = TOOLS / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        _missing(f"{name} (.tools/bin/{name})")
    return str(found)


def _module(name: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"the Python package {package}")
        raise


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="session")
def helm() -> str:
    return _tool("helm")


@pytest.fixture(scope="session")
def promtool() -> str:
    return _tool("promtool")


@pytest.fixture(scope="session")
def yaml() -> ModuleType:
    return _module("yaml", "PyYAML")


def _values_args(scenario: str) -> list[str]:
    return [] if scenario == "chart-defaults" else ["-f", str(CHART / "ci" / scenario)]


def _template(helm: str, yaml: ModuleType, *args: str) -> list[dict[str, Any]]:
    result = _run(
        helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--kube-version", KUBE_VERSION, *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def rendered(helm: str, yaml: ModuleType) -> dict[str, list[dict[str, Any]]]:
    return {s: _template(helm, yaml, *_values_args(s)) for s in SCENARIOS}


def _of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _component(doc: dict[str, Any]) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


def _deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {_component(d): d for d in _of_kind(docs, "Deployment")}


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


# --- helm lint and offline schema validation -----------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint(helm: str, scenario: str) -> None:
    result = _run(helm, "lint", "--strict", str(CHART), *_values_args(scenario))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_manifests_validate_against_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    kv = _module("kubernetes_validate", "kubernetes-validate")
    errors = []
    for doc in rendered[scenario]:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # Prometheus Operator CRDs: checked below and by promtool
        try:
            kv.validate(doc, KUBE_VERSION, strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
        except kv.SchemaNotFoundError:
            errors.append(f"{doc['kind']} {doc['apiVersion']}: no Kubernetes {KUBE_VERSION} schema")
    assert not errors, "\n".join(errors)


def test_values_schema_rejects_unknown_keys_and_bad_values(helm: str) -> None:
    for bad in ("gateway.replicaCount=-1", "gateway.typo=1", "modelServer.tensorParallelSize=0"):
        result = _run(helm, "lint", str(CHART), "--set", bad)
        assert result.returncode != 0, f"{bad} was accepted"


# --- pods: probes, resources, security -------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_is_probed_bounded_and_unprivileged(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    deployments = _deployments(rendered[scenario])
    assert deployments
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        mounts = set()
        for container in pod["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container, name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["privileged"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in security["capabilities"], name
            mounts |= {m["mountPath"] for m in container.get("volumeMounts", [])}
        # A read-only root filesystem needs a writable /tmp.
        assert "/tmp" in mounts, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes["tmp"], name


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_services_use_native_grpc_probes_and_drain_before_kill(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    for name, deployment in _deployments(rendered[scenario]).items():
        if name in (MODEL_SERVER, SITE):
            continue
        container = _main_container(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": ports["grpc"]}, (name, probe)
        env = _env(container)
        assert env["MEDBENCH_GRPC_HOST"]["value"] == "0.0.0.0"
        assert env["MEDBENCH_METRICS_HOST"]["value"] == "0.0.0.0"
        assert env["MEDBENCH_INSTANCE_ID"]["valueFrom"] == {
            "fieldRef": {"fieldPath": "metadata.name"}
        }
        module = name.replace("-", "_")
        assert container["command"] == ["python", "-m", module]
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > float(env["MEDBENCH_SHUTDOWN_GRACE_S"]["value"]), name
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"]), name


# --- the judge's model server ----------------------------------------------------------------


def _gpu_scenarios() -> list[str]:
    return ["chart-defaults", "default-values.yaml", "production-values.yaml", "dev-values.yaml"]


@pytest.mark.parametrize("scenario", _gpu_scenarios())
def test_judge_model_pods_land_only_on_gpu_nodes(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    deployments = _deployments(rendered[scenario])
    model = deployments[MODEL_SERVER]
    pod = model["spec"]["template"]["spec"]
    container = _main_container(model)
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    gpus = int(args["tensor-parallel-size"])
    assert pod["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert any(t["key"] == GPU and t["effect"] == "NoSchedule" for t in pod["tolerations"])
    assert container["resources"]["limits"][GPU] == gpus
    assert {"model", "served-model-name", "tensor-parallel-size"} <= set(args)
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert any(m["mountPath"] == "/models" for m in container["volumeMounts"])
    assert model["spec"]["strategy"]["type"] == "Recreate"
    # No other pod tolerates the GPU taint or asks for a GPU: the pool stays the judge's.
    for name, other in deployments.items():
        if name == MODEL_SERVER:
            continue
        other_pod = other["spec"]["template"]["spec"]
        assert all(t.get("key") != GPU for t in other_pod.get("tolerations", [])), name
        for c in other_pod["containers"]:
            assert GPU not in c["resources"].get("limits", {}), name


def test_production_runs_the_judge_on_two_gpus(rendered: dict[str, list[dict[str, Any]]]) -> None:
    model = _deployments(rendered["production-values.yaml"])[MODEL_SERVER]
    container = _main_container(model)
    assert "--tensor-parallel-size=2" in container["args"]
    assert container["resources"]["limits"][GPU] == 2
    assert container["resources"]["requests"][GPU] == 2


def test_judge_scorer_points_at_the_model_server(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["chart-defaults"]
    deployments = _deployments(docs)
    env_list = _main_container(deployments["judge-scorer"])["env"]
    names = [e["name"] for e in env_list]
    env = {e["name"]: e for e in env_list}
    (judge,) = json.loads(env["MEDBENCH_JUDGE__MODELS"]["value"])
    service = next(
        s for s in _of_kind(docs, "Service") if _component(s) == MODEL_SERVER
    )  # fmt: skip
    port = service["spec"]["ports"][0]["port"]
    assert judge["base_url"] == f"http://{service['metadata']['name']}:{port}/v1"
    model_args = _main_container(deployments[MODEL_SERVER])["args"]
    assert f"--served-model-name={judge['model']}" in model_args
    # The key is a $(VAR) reference to a Secret, defined before the JSON that expands it.
    assert judge["api_key"] == "$(JUDGE_API_KEY_0)"
    assert names.index("JUDGE_API_KEY_0") < names.index("MEDBENCH_JUDGE__MODELS")
    key_ref = env["JUDGE_API_KEY_0"]["valueFrom"]["secretKeyRef"]
    server_ref = _env(_main_container(deployments[MODEL_SERVER]))["VLLM_API_KEY"]["valueFrom"]
    assert server_ref["secretKeyRef"] == key_ref


def test_external_judges_take_their_keys_from_secrets(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["external-judge-values.yaml"]
    deployments = _deployments(docs)
    assert MODEL_SERVER not in deployments
    env = _env(_main_container(deployments["judge-scorer"]))
    judges = json.loads(env["MEDBENCH_JUDGE__MODELS"]["value"])
    assert [j["base_url"] for j in judges] == [
        "https://judge.example.org/v1",
        "https://judge-2.example.org/v1",
    ]
    for judge in judges:
        var = re.fullmatch(r"\$\((\w+)\)", judge["api_key"]).group(1)
        assert "secretKeyRef" in env[var]["valueFrom"]
    assert env["MEDBENCH_JUDGE__PANEL_RULE"]["value"] == "mean"


def test_judge_disabled_renders_no_judge(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["judge-disabled-values.yaml"]
    labels = [d["metadata"].get("labels", {}) for d in docs]
    components = {
        lbl["app.kubernetes.io/component"] for lbl in labels if "app.kubernetes.io/component" in lbl
    }
    assert components.isdisjoint({"judge-scorer", MODEL_SERVER})
    assert "judge-scorer" not in json.dumps(docs)


# --- MongoDB: one user per service, sealed data for three -------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_service_has_its_own_mongo_credentials(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    deployments = _deployments(rendered[scenario])
    secrets = {}
    for name in SERVICES:
        if name not in deployments:
            continue
        env = _env(_main_container(deployments[name]))
        ref = env["MEDBENCH_MONGO__URI"]["valueFrom"]["secretKeyRef"]
        secrets[name] = ref["name"]
        sealed = env.get("MEDBENCH_MONGO__SEALED_DATABASE")
        if name in SEALED_READERS:
            assert sealed is not None and sealed["value"] == "medbench_sealed", name
        else:
            assert sealed is None, f"{name} must not be told the sealed database"
    assert len(set(secrets.values())) == len(secrets), secrets
    # The credentials are never plain values in the pod spec.
    for deployment in deployments.values():
        for e in _main_container(deployment).get("env", []):
            assert "URI" not in e["name"] or "valueFrom" in e, e


def test_production_names_every_secret_and_creates_none(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["production-values.yaml"]
    assert not _of_kind(docs, "Secret")
    deployments = _deployments(docs)
    for name in SERVICES:
        env = _env(_main_container(deployments[name]))
        ref = env["MEDBENCH_MONGO__URI"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": f"medbench-mongo-{name}", "key": "uri"}


def test_dev_scenario_creates_one_secret_per_service(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    names = {s["metadata"]["name"] for s in _of_kind(rendered["dev-values.yaml"], "Secret")}
    assert {f"medbench-{n}-mongo" for n in SERVICES} <= names


def test_a_shared_mongo_secret_is_refused(helm: str) -> None:
    result = _run(
        helm, "template", RELEASE, str(CHART),
        "--set", "gateway.mongoSecret=shared,aggregator.mongoSecret=shared",
    )  # fmt: skip
    assert result.returncode != 0
    assert "each service needs its own MongoDB user" in result.stderr


# --- NetworkPolicies ------------------------------------------------------------------------


def _policies(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _of_kind(docs, "NetworkPolicy")}


def _grpc_callers(policy: dict[str, Any]) -> set[str]:
    callers = set()
    for rule in policy["spec"].get("ingress", []):
        if {"port": "grpc", "protocol": "TCP"} not in rule["ports"]:
            continue
        for peer in rule.get("from", []):
            labels = peer.get("podSelector", {}).get("matchLabels", {})
            if "app.kubernetes.io/component" in labels:
                callers.add(labels["app.kubernetes.io/component"])
    return callers


def test_no_network_policies_by_default(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert not _of_kind(rendered["chart-defaults"], "NetworkPolicy")


@pytest.mark.parametrize("scenario", WITH_NETWORK_POLICY)
def test_network_policies_deny_by_default_and_allow_the_flow(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    docs = rendered[scenario]
    policies = _policies(docs)
    deny = policies["medbench-default-deny"]["spec"]
    assert deny["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "medbench",
        "app.kubernetes.io/instance": RELEASE,
    }
    assert sorted(deny["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny and "egress" not in deny
    deployments = _deployments(docs)
    for name in deployments:
        assert f"medbench-{name}" in policies, f"{name} has no NetworkPolicy"
    site = {SITE} if SITE in deployments else set()
    assert _grpc_callers(policies["medbench-rotator"]) == {"gateway", "dispatcher"} | site
    assert _grpc_callers(policies["medbench-dispatcher"]) == {"gateway"}
    assert _grpc_callers(policies["medbench-aggregator"]) == {"gateway"} | site
    assert _grpc_callers(policies["medbench-metric-scorer"]) == set()
    # Only the dispatcher reaches the internet (partners' endpoints), never cloud metadata.
    for name, policy in policies.items():
        blocks = [
            peer["ipBlock"]
            for rule in policy["spec"].get("egress", [])
            for peer in rule.get("to", [])
            if "ipBlock" in peer and peer["ipBlock"]["cidr"] == "0.0.0.0/0"
        ]
        if name == "medbench-dispatcher" or (name == f"medbench-{MODEL_SERVER}" and blocks):
            assert blocks and all("169.254.0.0/16" in b["except"] for b in blocks), name
        else:
            assert not blocks, f"{name} may reach the internet"
    if MODEL_SERVER in deployments:
        model_policy = policies[f"medbench-{MODEL_SERVER}"]
        callers = {
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for rule in model_policy["spec"]["ingress"]
            for peer in rule.get("from", [])
            if "podSelector" in peer
        }
        assert callers == {"judge-scorer"}


def test_the_website_is_off_by_default(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert SITE not in _deployments(rendered["chart-defaults"])


def test_production_serves_the_website_from_the_aggregator_only(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["production-values.yaml"]
    site = _deployments(docs)[SITE]
    container = _main_container(site)
    assert container["command"][:4] == ["python", "-m", "medbench_site", "serve"]
    env = _env(container)
    assert env["MEDBENCH_PEERS__AGGREGATOR"]["value"] == "medbench-aggregator:50051"
    assert env["MEDBENCH_PEERS__ROTATOR"]["value"] == "medbench-rotator:50051"
    assert env["MEDBENCH_AUTH__SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == (
        "service-token"
    )
    # No database: the site holds no MongoDB or Kafka settings at all.
    assert not [n for n in env if n.startswith(("MEDBENCH_MONGO", "MEDBENCH_KAFKA"))]
    assert "envFrom" not in container
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    (ingress,) = [d for d in _of_kind(docs, "Ingress") if _component(d) == SITE]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "medbench.example.org"
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "medbench-site"
    assert ingress["spec"]["tls"] == [
        {"hosts": ["medbench.example.org"], "secretName": "medbench-site-tls"}
    ]
    policy = _policies(docs)["medbench-site"]["spec"]
    (ingress_rule,) = policy["ingress"]
    assert ingress_rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress_rule["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }
    reached = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in policy["egress"]
        for peer in rule.get("to", [])
        if "podSelector" in peer
        and "app.kubernetes.io/component" in peer["podSelector"].get("matchLabels", {})
    }
    assert reached == {"aggregator", "rotator"}


def test_the_website_needs_the_aggregator(helm: str) -> None:
    result = _run(
        helm,
        "template",
        RELEASE,
        str(CHART),
        "--set",
        "site.enabled=true",
        "--set",
        "aggregator.enabled=false",
    )
    assert result.returncode != 0
    assert "the website reads the aggregator and the rotator" in result.stderr


def test_production_keeps_the_model_server_offline(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    policy = _policies(rendered["production-values.yaml"])[f"medbench-{MODEL_SERVER}"]
    assert all(
        "ipBlock" not in peer for rule in policy["spec"]["egress"] for peer in rule.get("to", [])
    )


# --- autoscaling and disruption budgets -----------------------------------------------------


def test_production_autoscales_and_budgets_disruptions(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["production-values.yaml"]
    deployments = _deployments(docs)
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in _of_kind(docs, "HorizontalPodAutoscaler")}
    assert hpas == {f"medbench-{n}" for n in SERVICES if n != "rotator"}
    for name in hpas:
        assert "replicas" not in deployments[name.removeprefix("medbench-")]["spec"]
    assert deployments["rotator"]["spec"]["replicas"] == 2
    pdbs = {_component(p) for p in _of_kind(docs, "PodDisruptionBudget")}
    assert pdbs == set(SERVICES) | {MODEL_SERVER}
    assert not _of_kind(rendered["chart-defaults"], "HorizontalPodAutoscaler")
    assert not _of_kind(rendered["chart-defaults"], "PodDisruptionBudget")


# --- monitoring: ServiceMonitor, PrometheusRule, dashboard ----------------------------------


def test_monitoring_objects_are_off_by_default(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {d["kind"] for d in rendered["chart-defaults"]}
    assert kinds.isdisjoint({"ServiceMonitor", "PrometheusRule"})
    assert not any(
        d["metadata"].get("labels", {}).get("grafana_dashboard") for d in rendered["chart-defaults"]
    )


def test_production_ships_service_monitors_rules_and_dashboard(
    rendered: dict[str, list[dict[str, Any]]], yaml: ModuleType
) -> None:
    docs = rendered["production-values.yaml"]
    monitors = {_component(m): m for m in _of_kind(docs, "ServiceMonitor")}
    assert set(monitors) == set(SERVICES) | {MODEL_SERVER}
    services = {_component(s): s for s in _of_kind(docs, "Service")}
    for name, monitor in monitors.items():
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        spec = monitor["spec"]
        assert spec["jobLabel"] == "medbench.io/job"
        assert services[name]["metadata"]["labels"]["medbench.io/job"] == f"medbench-{name}"
        port_names = {p["name"] for p in services[name]["spec"]["ports"]}
        assert spec["endpoints"][0]["port"] in port_names
    (rule,) = _of_kind(docs, "PrometheusRule")
    source = yaml.safe_load((CHART / "prometheus" / "alerts.yaml").read_text(encoding="utf-8"))
    assert rule["spec"] == source
    (dashboard,) = [d for d in docs if d["metadata"].get("labels", {}).get("grafana_dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["medbench.json"])["uid"] == "medbench-pipeline"


def test_promtool_checks_and_tests_the_alert_rules(promtool: str) -> None:
    checked = _run(promtool, "check", "rules", "alerts.yaml", cwd=CHART / "prometheus")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _run(promtool, "test", "rules", "alerts_test.yaml", cwd=CHART / "prometheus")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def _exported_metrics() -> set[str]:
    pattern = re.compile(r"\b(Counter|Gauge|Histogram)\(\s*\"(medbench_\w+)\"", re.S)
    names = set()
    for base in ("libs", "services"):
        for path in (ROOT / base).rglob("*.py"):
            for kind, name in pattern.findall(path.read_text(encoding="utf-8")):
                names.add(name)
                if kind == "Histogram":
                    names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def test_alerts_and_dashboard_name_only_known_metrics(yaml: ModuleType) -> None:
    exported = _exported_metrics()
    assert "medbench_dispatch_calls_total" in exported
    assert PENDING_METRICS.isdisjoint(exported), "exported now: drop it from PENDING_METRICS"
    rules = yaml.safe_load((CHART / "prometheus" / "alerts.yaml").read_text(encoding="utf-8"))
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((CHART / "dashboards" / "medbench.json").read_text(encoding="utf-8"))
    exprs += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\bmedbench_\w+", e)}
    assert used - exported - PENDING_METRICS == set()
    assert used >= PENDING_METRICS


def test_every_alert_has_a_runbook(yaml: ModuleType) -> None:
    rules = yaml.safe_load((CHART / "prometheus" / "alerts.yaml").read_text(encoding="utf-8"))
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert f"| `{rule['alert']}` |" in readme, rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert {"summary", "description", "runbook"} <= set(rule["annotations"])


def test_every_value_is_documented() -> None:
    """helm-docs style: each value, or a map above it, has a `# --` comment right above it."""
    lines = (CHART / "values.yaml").read_text(encoding="utf-8").splitlines()
    structural = [
        (i, line)
        for i, line in enumerate(lines)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stack: list[tuple[int, str, bool]] = []
    list_indent: int | None = None
    undocumented = []
    for n, (i, line) in enumerate(structural):
        indent = len(line) - len(line.lstrip())
        stripped = line.strip()
        if list_indent is not None and indent > list_indent:
            continue
        list_indent = None
        if stripped.startswith("-"):
            list_indent = indent
            continue
        key, _, value = stripped.partition(":")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        above = lines[:i]
        comments = []
        while above and above[-1].lstrip().startswith("#"):
            comments.append(above.pop().strip())
        documented = any(c.startswith("# --") for c in comments) or any(d for *_, d in stack)
        following = structural[n + 1][1] if n + 1 < len(structural) else ""
        leaf = value.strip() != "" or following.strip().startswith("-")
        if leaf and not documented:
            undocumented.append(".".join([k for _, k, _ in stack] + [key]))
        stack.append((indent, key, documented))
    assert not undocumented, undocumented
