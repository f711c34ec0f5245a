"""The Helm chart: lint, render every scenario, validate offline against Kubernetes schemas, check
what the chart promises over the rendered objects, and run promtool on the alert rules.

Tools come from `make chart-tools` (.tools/bin: helm, promtool) and the dev dependencies
(kubernetes-validate, PyYAML). Missing tools fail these tests, unless MEDBENCH_SKIP_CHART_TOOLS=1
turns the failure into a skip.
"""

from __future__ import annotations

import base64
import hashlib
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
# SHA-256 of each service's own token (examples whose tokens nobody has).
TOKEN_HASHES = {
    service: hashlib.sha256(f"example-{service}".encode()).hexdigest()
    for service in ("gateway", "rotator", "dispatcher", "metric_scorer", "judge_scorer")
    + ("aggregator", "site")
}
SCENARIOS = ["chart-defaults"] + sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
WITH_NETWORK_POLICY = [
    "production-values.yaml",
    "judge-disabled-values.yaml",
    "external-judge-values.yaml",
]
SERVICES = ["gateway", "rotator", "dispatcher", "metric-scorer", "judge-scorer", "aggregator"]
SEALED_READERS = {"rotator", "metric-scorer", "judge-scorer"}
# Told the sealed database for its endpoint_keys collection only (partners' endpoint API keys,
# sealed under the key-encryption keys only these two get).
ENDPOINT_KEY_HOLDERS = {"gateway", "dispatcher"}
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
    if scenario == "chart-defaults":
        # The one value every installation must add: its services' own token hashes.
        return ["--set-json", f"auth.serviceTokenHashes={json.dumps(TOKEN_HASHES)}"]
    return ["-f", str(CHART / "ci" / scenario)]


def _template(helm: str, yaml: ModuleType, *args: str) -> list[dict[str, Any]]:
    result = _run(
        helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--kube-version", KUBE_VERSION,
        # Without a values file: the chart's defaults plus the token hashes every install adds.
        *(() if "-f" in args else _values_args("chart-defaults")), *args,
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
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # KEDA CRDs: their shape is checked in test_autoscaling_chart.py
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
    # Recreate unless the weights' cache can be shared: an emptyDir, or production's
    # ReadWriteMany claim (rolling updates with surge: test_autoscaling_chart.py).
    (models,) = [v for v in pod["volumes"] if v["name"] == "models"]
    shared = "emptyDir" in models or scenario == "production-values.yaml"
    assert model["spec"]["strategy"]["type"] == ("RollingUpdate" if shared else "Recreate")
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
    # vLLM takes a verdict's JSON schema (response_format json_schema); its GPUs are the
    # tensor-parallel size (the GPU-seconds estimate).
    assert (judge["structured"], judge["gpus"]) == ("json_schema", 4)
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
    # Items with images go to the judge declared vision-capable, with the bank's images, which
    # the judge scorer reads from the rotator.
    assert [j["vision"] for j in judges] == [False, True]
    assert env["MEDBENCH_PEERS__ROTATOR"]["value"].endswith("-rotator-headless.medbench.svc:50051")
    assert [(j["structured"], j["gpus"]) for j in judges] == [("none", 1), ("none", 1)]


@pytest.mark.parametrize(
    ("scenario", "mode"),
    [("chart-defaults", "judge"), ("external-judge-values.yaml", "judge"),
     ("judge-disabled-values.yaml", "lexical")],
)  # fmt: skip
def test_key_point_recall_is_the_judges_when_there_is_one(
    rendered: dict[str, list[dict[str, Any]]], scenario: str, mode: str
) -> None:
    """With a judge, key points are judged; without one, the metric scorer's labelled lexical
    fallback applies (README "The judge")."""
    env = _env(_main_container(_deployments(rendered[scenario])["metric-scorer"]))
    assert env["MEDBENCH_KEY_POINT_RECALL"]["value"] == mode


def test_judge_disabled_renders_no_judge(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["judge-disabled-values.yaml"]
    labels = [d["metadata"].get("labels", {}) for d in docs]
    components = {
        lbl["app.kubernetes.io/component"] for lbl in labels if "app.kubernetes.io/component" in lbl
    }
    assert components.isdisjoint({"judge-scorer", MODEL_SERVER})
    assert "judge-scorer" not in json.dumps(docs)


# --- MongoDB: one user per service, sealed data for three (endpoint keys for two more) --------


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
        if name in SEALED_READERS | ENDPOINT_KEY_HOLDERS:
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


# --- Service credentials: a token per service, the bootstrap key on the gateway only -----------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_service_calls_with_its_own_token_and_only_the_gateway_holds_the_bootstrap_key(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    deployments = _deployments(rendered[scenario])
    tokens = {}
    for name, deployment in deployments.items():
        if name not in [*SERVICES, SITE]:
            continue
        env = _env(_main_container(deployment))
        tokens[name] = env["MEDBENCH_AUTH__SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"]
        assert tokens[name] == f"medbench-{name}-auth"
        assert ("MEDBENCH_AUTH__BOOTSTRAP_KEY" in env) == (name == "gateway"), name
    assert len(set(tokens.values())) == len(tokens) >= 5, tokens
    (shared,) = [c for c in _of_kind(rendered[scenario], "ConfigMap") if c["metadata"]["name"]
                 == "medbench-shared"]  # fmt: skip
    hashes = json.loads(shared["data"]["MEDBENCH_AUTH__SERVICE_TOKEN_HASHES"])
    assert {n.replace("-", "_") for n in tokens} <= set(hashes)


def test_dev_tokens_are_admitted_by_their_hashes_and_differ_per_service(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    from medbench_runtime.auth import hash_secret, parse_service_token

    docs = rendered["dev-values.yaml"]
    secrets = {s["metadata"]["name"]: s["stringData"] for s in _of_kind(docs, "Secret")}
    (shared,) = [c for c in _of_kind(docs, "ConfigMap") if c["metadata"]["name"]
                 == "medbench-shared"]  # fmt: skip
    hashes = json.loads(shared["data"]["MEDBENCH_AUTH__SERVICE_TOKEN_HASHES"])
    seen = set()
    for name in SERVICES:
        token = secrets[f"medbench-{name}-auth"]["service-token"]
        assert parse_service_token(token) == name.replace("-", "_")
        assert hashes[name.replace("-", "_")] == hash_secret(token)
        seen.add(token)
    assert len(seen) == len(SERVICES)
    assert "medbench-bootstrap" in secrets and "medbench-auth" not in secrets


def test_a_service_without_a_token_hash_is_refused(helm: str) -> None:
    partial = {k: v for k, v in TOKEN_HASHES.items() if k != "dispatcher"}
    result = _run(
        helm, "template", RELEASE, str(CHART),
        "--set-json", f"auth.serviceTokenHashes={json.dumps(partial)}",
    )  # fmt: skip
    assert result.returncode != 0
    assert "auth.serviceTokenHashes has no entry for dispatcher" in result.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_key_encryption_keys_reach_only_the_gateway_and_the_dispatcher(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    docs = rendered[scenario]
    production = scenario == "production-values.yaml"
    expected = "medbench-endpoint-key-kek" if production else "medbench-secrets"
    holders = set()
    for deployment in _of_kind(docs, "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        for container in spec["containers"]:
            env = _env(container)
            refs = [
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in env.values()
                if "secretKeyRef" in e.get("valueFrom", {})
            ]
            for source in container.get("envFrom", []):
                refs.append(source.get("secretRef", {}).get("name", ""))
            refs += [v.get("secret", {}).get("secretName", "") for v in spec.get("volumes", [])]
            if "MEDBENCH_SECRETS__KEYS" in env or expected in refs:
                holders.add(_component(deployment))
                key = env["MEDBENCH_SECRETS__KEYS"]["valueFrom"]["secretKeyRef"]
                assert key == {"name": expected, "key": "keys"}
    assert holders == ENDPOINT_KEY_HOLDERS, holders
    dispatcher = _env(_main_container(_deployments(docs)["dispatcher"]))
    assert dispatcher["MEDBENCH_SECRETS__STALLED_RETENTION_DAYS"]["value"] == "7"
    if scenario == "dev-values.yaml":
        dev = {s["metadata"]["name"]: s for s in _of_kind(docs, "Secret")}
        (entry,) = dev[expected]["stringData"].values()
        key_id, _, key = entry.partition(":")
        assert key_id == "dev1" and len(base64.b64decode(key)) == 32


def test_a_current_key_encryption_key_is_passed_on(helm: str, yaml: ModuleType) -> None:
    docs = _template(helm, yaml, "--set", "secrets.current=k2,secrets.stalledRetentionDays=3")
    for name in ENDPOINT_KEY_HOLDERS:
        env = _env(_main_container(_deployments(docs)[name]))
        assert env["MEDBENCH_SECRETS__CURRENT"]["value"] == "k2"
    dispatcher = _env(_main_container(_deployments(docs)["dispatcher"]))
    assert dispatcher["MEDBENCH_SECRETS__STALLED_RETENTION_DAYS"]["value"] == "3"
    refused = _run(helm, "template", RELEASE, str(CHART), "--set", "secrets.current=bad id")
    assert refused.returncode != 0 and "/secrets/current" in refused.stderr


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


PRIVATE_RANGES = {
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8",
    "100.64.0.0/10", "0.0.0.0/8",
}  # fmt: skip


def _partner_rules(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        rule
        for rule in policy["spec"]["egress"]
        if any("ipBlock" in peer for peer in rule.get("to", []))
    ]


def _egress_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    (shared,) = [
        d for d in _of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "medbench-shared"
    ]
    return {k: v for k, v in shared["data"].items() if k.startswith("MEDBENCH_EGRESS__")}


def test_by_default_only_the_dispatchers_egress_is_fenced(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["chart-defaults"]
    (policy,) = _of_kind(docs, "NetworkPolicy")
    assert policy["metadata"]["name"] == "medbench-dispatcher-egress"
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "dispatcher"
    assert spec["policyTypes"] == ["Egress"]  # ingress as without policies
    egress = spec["egress"]
    ports = [sorted(p["port"] for p in rule.get("ports", [])) for rule in egress]
    assert [53, 53] in ports and [9092] in ports and [27017] in ports and [50051] in ports
    rotator = [
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in egress
        for peer in rule.get("to", [])
        if "podSelector" in peer and "namespaceSelector" not in peer
    ]
    assert rotator == ["rotator"]
    (partners,) = _partner_rules(policy)
    (block,) = partners["to"]
    assert block["ipBlock"]["cidr"] == "0.0.0.0/0"
    assert set(block["ipBlock"]["except"]) >= PRIVATE_RANGES
    assert partners["ports"] == [
        {"port": 443, "protocol": "TCP"},
        {"port": 80, "protocol": "TCP"},
        {"port": 8000, "endPort": 8999, "protocol": "TCP"},
    ]
    # The services enforce the same rule: the gateway and the dispatcher read these.
    assert _egress_env(docs) == {
        "MEDBENCH_EGRESS__ALLOW_CIDRS": "",
        "MEDBENCH_EGRESS__DENY_CIDRS": "",
        "MEDBENCH_EGRESS__PORTS": "443,80,8000-8999",
    }


def test_on_premise_partners_and_public_cluster_ranges_reach_policy_and_services(
    helm: str, yaml: ModuleType
) -> None:
    args = (
        "--set", "networkPolicy.partnerEgress.allowCidrs={10.20.0.0/16,fd12::/64}",
        "--set", "networkPolicy.partnerEgress.clusterCidrs={34.118.224.0/20}",
    )  # fmt: skip
    for extra in ((), ("--set", "networkPolicy.enabled=true")):
        docs = _template(helm, yaml, *args, *extra)
        name = "medbench-dispatcher" + ("" if extra else "-egress")
        policy = _policies(docs)[name]
        public, allowed = _partner_rules(policy)
        assert "34.118.224.0/20" in public["to"][0]["ipBlock"]["except"]
        assert [p["ipBlock"]["cidr"] for p in allowed["to"]] == ["10.20.0.0/16", "fd12::/64"]
        assert allowed["ports"] == public["ports"]
        assert _egress_env(docs)["MEDBENCH_EGRESS__ALLOW_CIDRS"] == "10.20.0.0/16,fd12::/64"
        assert _egress_env(docs)["MEDBENCH_EGRESS__DENY_CIDRS"] == "34.118.224.0/20"
    off = _template(helm, yaml, "--set", "networkPolicy.partnerEgress.enabled=false")
    assert not _of_kind(off, "NetworkPolicy")


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
    # The judge scorer reads the bank's images (GetImage) for vision judges.
    judge = {"judge-scorer"} if "judge-scorer" in deployments else set()
    assert _grpc_callers(policies["medbench-rotator"]) == {"gateway", "dispatcher"} | site | judge
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
    assert _web_app_reaches(_policies(docs)["medbench-site"]["spec"]) == {"aggregator", "rotator"}


def _peers(rules: list[dict[str, Any]], side: str) -> set[str]:
    """The components a policy's ingress ("from") or egress ("to") rules name by pod label."""
    return {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in rules
        for peer in rule.get(side, [])
        if "app.kubernetes.io/component" in peer.get("podSelector", {}).get("matchLabels", {})
    }


def _web_app_reaches(policy: dict[str, Any]) -> set[str]:
    """A web app's policy admits its http port from the ingress controller's namespace only;
    the components it may reach."""
    (ingress_rule,) = policy["ingress"]
    assert ingress_rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress_rule["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }
    return _peers(policy["egress"], "to")


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
    # The Kafka consumers and the judge's model server scale with KEDA (test_autoscaling_chart).
    scaled = {s["spec"]["scaleTargetRef"]["name"] for s in _of_kind(docs, "ScaledObject")}
    assert hpas == {"medbench-gateway"}
    assert scaled == {f"medbench-{n}" for n in SERVICES if n not in ("gateway", "rotator")} | {
        f"medbench-{MODEL_SERVER}"
    }
    for name in hpas | scaled:
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


def test_metrics_need_a_token_from_its_own_secret_that_the_service_monitors_send(
    rendered: dict[str, list[dict[str, Any]]], helm: str, yaml: ModuleType
) -> None:
    docs = rendered["production-values.yaml"]
    secret = {"name": "medbench-metrics", "key": "token"}
    for name, deployment in _deployments(docs).items():
        if name in SERVICES:
            env = _env(_main_container(deployment))
            assert env["MEDBENCH_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"] == secret, name
    for monitor in _of_kind(docs, "ServiceMonitor"):
        (endpoint,) = monitor["spec"]["endpoints"]
        if _component(monitor) == MODEL_SERVER:  # vLLM's own /metrics takes no token
            assert "authorization" not in endpoint
        else:
            assert endpoint["authorization"] == {"type": "Bearer", "credentials": secret}
    dev = {s["metadata"]["name"]: s for s in _of_kind(rendered["dev-values.yaml"], "Secret")}
    assert dev["medbench-metrics"]["stringData"] == {"token": "dev-only-metrics-token"}
    off = _template(
        helm, yaml, "-f", str(CHART / "ci" / "production-values.yaml"),
        "--set", "metrics.token.enabled=false",
    )  # fmt: skip
    containers = [
        c for d in _of_kind(off, "Deployment") for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert not any("MEDBENCH_METRICS_TOKEN" in _env(c) for c in containers)
    monitors = _of_kind(off, "ServiceMonitor")
    assert monitors and all("authorization" not in m["spec"]["endpoints"][0] for m in monitors)


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


def test_the_scale_to_zero_exemptions_name_the_charts_deployments(
    rendered: dict[str, list[dict[str, Any]]], yaml: ModuleType
) -> None:
    """MedbenchServiceDown and MedbenchJudgeModelDown stay quiet while kube-state-metrics shows
    the metric scorer's or the judge model's Deployment asking for zero replicas (KEDA's scale
    to zero): their patterns match the Deployments the chart names, in every scenario, and no
    other component's (those at zero are down)."""
    rules = yaml.safe_load((CHART / "prometheus" / "alerts.yaml").read_text(encoding="utf-8"))
    exprs = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    exempt = {
        "MedbenchServiceDown": "metric-scorer",
        "MedbenchJudgeModelDown": "judge-model",
    }
    for alert, component in exempt.items():
        (pattern,) = re.findall(
            r'kube_deployment_spec_replicas\{deployment=~"([^"]+)"\}', exprs[alert]
        )
        matched = 0
        for scenario, docs in rendered.items():
            deployments = _deployments(docs)
            if component in deployments:
                name = deployments[component]["metadata"]["name"]
                assert re.fullmatch(pattern, name), (alert, scenario, name)
                matched += 1
            others = [d["metadata"]["name"] for c, d in deployments.items() if c != component]
            assert not [n for n in others if re.fullmatch(pattern, n)], (alert, scenario)
        assert matched >= 2, (alert, component)


def test_every_alert_has_a_runbook(yaml: ModuleType) -> None:
    rules = yaml.safe_load((CHART / "prometheus" / "alerts.yaml").read_text(encoding="utf-8"))
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "record" in rule:  # SLO ratios: level:metric:operation, read by the alerts
                assert re.fullmatch(r"medbench:\w+:ratio_rate\d+[mh]", rule["record"])
                continue
            assert f"| `{rule['alert']}` |" in readme, rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert {"summary", "description", "runbook"} <= set(rule["annotations"])


def test_alerts_and_dashboard_read_our_labels_and_cluster_wide_gauges_once(
    yaml: ModuleType,
) -> None:
    """`service` is the ServiceMonitor's label (ours is medbench_service); gauges every replica
    exports for the whole deployment are read with max, never summed over replicas; every
    recorded ratio an alert reads is recorded."""
    rules = yaml.safe_load((CHART / "prometheus" / "alerts.yaml").read_text(encoding="utf-8"))
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((CHART / "dashboards" / "medbench.json").read_text(encoding="utf-8"))
    exprs += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    cluster_wide = (
        "medbench_quarantine_held",
        "medbench_submissions_stuck",
        "medbench_submissions",
        "medbench_judge_parked_requests",
        "medbench_judge_kappa",
        "medbench_judge_kappa_lower_bound",
        "medbench_judge_calibrated",
    )
    for expr in exprs:
        assert not re.search(r"\bservice\s*[=!~,)]", expr), expr
        for gauge in cluster_wide:
            for m in re.finditer(rf"(\w+)(?: by \([^)]*\))? \({gauge}\{{", expr):
                assert m.group(1) in {"max", "min"}, (gauge, expr)
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    read = {m for e in exprs for m in re.findall(r"medbench:\w+:ratio_rate\w+", e)}
    assert read <= recorded and recorded <= read, read ^ recorded


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


SETTINGS = {
    "gateway": "gateway.settings:GatewaySettings",
    "rotator": "rotator.settings:RotatorSettings",
    "dispatcher": "dispatcher.settings:DispatcherSettings",
    "metric-scorer": "metric_scorer.settings:MetricScorerSettings",
    "judge-scorer": "judge_scorer.settings:JudgeScorerSettings",
    "aggregator": "aggregator.settings:AggregatorSettings",
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_rendered_setting_is_one_the_service_accepts(
    rendered: dict[str, list[dict[str, Any]]], scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment the chart gives each service (ConfigMaps and literal values; Secrets are
    not rendered) parses into that service's settings: a value Helm renders as "1e+06" where an
    integer is wanted would stop the pod at start."""
    import importlib

    docs = rendered[scenario]
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in _of_kind(docs, "ConfigMap")}
    checked = 0
    for component, deployment in _deployments(docs).items():
        if component not in SETTINGS:
            continue
        container = _main_container(deployment)
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(maps[source["configMapRef"]["name"]])
        env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
        # A Secret's value is not rendered: a placeholder stands for it (Kafka SASL users).
        env.update(
            {
                e["name"]: "from-secret"
                for e in container.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
        )
        for name in list(env):
            if not name.startswith("MEDBENCH_"):
                del env[name]
        with monkeypatch.context() as patched:
            for name, value in env.items():
                patched.setenv(name, str(value))
            module, _, cls = SETTINGS[component].partition(":")
            settings = getattr(importlib.import_module(module), cls)()
        assert settings.kafka.max_event_bytes == 1_000_000 or scenario != "chart-defaults"
        checked += 1
    assert checked >= len(SETTINGS) - 1  # the judge scorer may be switched off
