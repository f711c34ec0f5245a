"""The chart's autoscaling (README "Autoscaling"): KEDA ScaledObjects on the Kafka consumers'
group lag and on vLLM's queue, their TriggerAuthentications, the model server's surge rollouts,
its disruption budget, and the scoring path's PriorityClass.

kubernetes-validate has no schema for KEDA's CRDs (test_chart skips keda.sh objects): their shape
is checked here against what KEDA's CRDs require (`_keda_shape_errors`)."""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

import pytest

from medbench_messaging import topics
from tests.charts.test_chart import (
    CHART,
    MODEL_SERVER,
    ROOT,
    _component,
    _deployments,
    _of_kind,
    _run,
    _template,
    _values_args,
    helm,
    rendered,
    yaml,
)

__all__ = ["helm", "rendered", "yaml"]  # session fixtures shared with test_chart
PRODUCTION = CHART / "ci" / "production-values.yaml"
# The Kafka consumers KEDA scales: component -> the module whose app.py names its group.
CONSUMERS = {
    "dispatcher": "dispatcher",
    "metric-scorer": "metric_scorer",
    "judge-scorer": "judge_scorer",
    "aggregator": "aggregator",
}
KEDA_KEYS = ("dispatcher", "metricScorer", "judgeScorer", "aggregator")  # their values keys
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
# Fields of KEDA's ScaledObject spec (keda.sh/v1alpha1) and of a trigger.
SCALED_OBJECT_SPEC = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
    "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}  # fmt: skip
TRIGGER_FIELDS = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
REQUIRED_METADATA = {
    "kafka": {"bootstrapServers", "consumerGroup", "lagThreshold"},
    "prometheus": {"serverAddress", "query", "threshold"},
    "cpu": {"value"},
}
KAFKA_AUTH_PARAMETERS = {"sasl", "username", "password", "tls", "ca", "cert", "key", "keyPassword"}


def _keda_shape_errors(doc: dict[str, Any]) -> list[str]:
    """What KEDA's CRDs would reject (required fields, types, metadata values that must be
    strings), for a ScaledObject or a TriggerAuthentication."""
    errors: list[str] = []
    name = doc.get("metadata", {}).get("name")
    where = f"{doc.get('kind')}/{name}"
    if doc.get("apiVersion") != "keda.sh/v1alpha1":
        errors.append(f"{where}: apiVersion {doc.get('apiVersion')!r}")
    if not isinstance(name, str) or not name:
        errors.append(f"{where}: metadata.name")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return [*errors, f"{where}: spec is not an object"]
    if doc["kind"] == "TriggerAuthentication":
        refs = spec.get("secretTargetRef")
        if not isinstance(refs, list) or not refs:
            errors.append(f"{where}: secretTargetRef must be a non-empty list")
            return errors
        for ref in refs:
            if set(ref) != {"parameter", "name", "key"}:
                errors.append(f"{where}: secretTargetRef entry {ref}")
            elif not all(isinstance(v, str) and v for v in ref.values()):
                errors.append(f"{where}: secretTargetRef values must be strings: {ref}")
            elif ref["parameter"] not in KAFKA_AUTH_PARAMETERS:
                errors.append(f"{where}: unknown parameter {ref['parameter']}")
        return errors
    unknown = set(spec) - SCALED_OBJECT_SPEC
    if unknown:
        errors.append(f"{where}: unknown spec fields {sorted(unknown)}")
    target = spec.get("scaleTargetRef", {})
    if not isinstance(target.get("name"), str) or not target["name"]:
        errors.append(f"{where}: scaleTargetRef.name is required")
    for field in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
        value = spec.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            errors.append(f"{where}: {field} must be an integer, got {value!r}")
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if isinstance(low, int) and isinstance(high, int) and not 0 <= low <= high:
        errors.append(f"{where}: minReplicaCount {low} > maxReplicaCount {high}")
    triggers = spec.get("triggers")
    if not isinstance(triggers, list) or not triggers:
        return [*errors, f"{where}: triggers must be a non-empty list"]
    for trigger in triggers:
        kind = trigger.get("type")
        if extra := sorted(set(trigger) - TRIGGER_FIELDS):
            errors.append(f"{where}: unknown trigger fields {extra}")
        metadata = trigger.get("metadata")
        if not isinstance(metadata, dict):
            errors.append(f"{where}: {kind} trigger has no metadata")
            continue
        # KEDA's trigger metadata is map[string]string: an unquoted number is refused.
        errors += [
            f"{where}: {kind} metadata {k} must be a string, got {v!r}"
            for k, v in metadata.items()
            if not isinstance(v, str)
        ]
        missing = REQUIRED_METADATA.get(str(kind), set()) - set(metadata)
        if kind not in REQUIRED_METADATA:
            errors.append(f"{where}: unexpected trigger type {kind!r}")
        elif missing:
            errors.append(f"{where}: {kind} trigger lacks {sorted(missing)}")
        for number in ("lagThreshold", "activationLagThreshold", "threshold", "value"):
            if number in metadata and not re.fullmatch(r"\d+(\.\d+)?", str(metadata[number])):
                errors.append(f"{where}: {kind} {number} is not a number: {metadata[number]!r}")
        if kind == "cpu" and trigger.get("metricType") not in ("Utilization", "AverageValue"):
            errors.append(f"{where}: cpu trigger needs metricType Utilization or AverageValue")
        ref = trigger.get("authenticationRef")
        if ref is not None and (not isinstance(ref.get("name"), str) or not ref["name"]):
            errors.append(f"{where}: authenticationRef.name is required")
    return errors


def _scaled(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {_component(s): s for s in _of_kind(docs, "ScaledObject")}


def _triggers(scaled: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in scaled["spec"]["triggers"]}


def _with(helm: str, yaml: ModuleType, *sets: str) -> list[dict[str, Any]]:
    return _template(helm, yaml, *(arg for s in sets for arg in ("--set", s)))


def _refused(helm: str, *sets: str) -> str:
    """Renders the chart defaults with these values; returns Helm's error (it must fail)."""
    args = [arg for s in sets for arg in ("--set", s)]
    result = _run(helm, "template", "medbench", str(CHART), *_values_args("chart-defaults"), *args)
    assert result.returncode != 0, f"{sets} rendered"
    return result.stderr


def _consumer_groups() -> dict[str, tuple[str, str]]:
    """component -> (group, topic) as each service's app.py subscribes."""
    found = {}
    for component, module in CONSUMERS.items():
        source = (ROOT / "services" / module / "src" / module / "app.py").read_text()
        ((topic, group),) = re.findall(r"topics\.(\w+),\s*group_id=\"([^\"]+)\"", source)
        found[component] = (group, getattr(topics, topic).name)
    return found


# --- shape --------------------------------------------------------------------------------


def test_the_shape_check_rejects_what_keda_would(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (good,) = [s for s in _of_kind(rendered["production-values.yaml"], "ScaledObject")][:1]
    assert _keda_shape_errors(good) == []
    bad = {**good, "spec": {**good["spec"], "maxReplicaCount": "12", "triggers": []}}
    assert len(_keda_shape_errors(bad)) == 2
    trigger = dict(good["spec"]["triggers"][0], metadata={"lagThreshold": 5})
    errors = _keda_shape_errors({**good, "spec": {**good["spec"], "triggers": [trigger]}})
    assert any("must be a string" in e for e in errors) and any("lacks" in e for e in errors)


@pytest.mark.parametrize("scenario", ["production-values.yaml", "everything"])
def test_keda_objects_have_the_shape_keda_requires(
    rendered: dict[str, list[dict[str, Any]]], helm: str, yaml: ModuleType, scenario: str
) -> None:
    docs = (
        rendered[scenario]
        if scenario != "everything"
        else _with(
            helm, yaml,
            *(f"{k}.keda.enabled=true" for k in KEDA_KEYS),
            "metricScorer.keda.minReplicas=0", "aggregator.keda.cpuUtilizationPercentage=80",
            "modelServer.keda.enabled=true", "modelServer.keda.minReplicas=0",
            "modelServer.cache.type=emptyDir", "visionModelServer.enabled=true",
            "kafka.securityProtocol=SASL_SSL", "kafka.tls.caSecret=kafka-ca",
            "keda.prometheus.authenticationRef=prometheus-bearer",
        )
    )  # fmt: skip
    keda = [d for d in docs if d["kind"] in KEDA_KINDS]
    assert len(_of_kind(keda, "ScaledObject")) >= 5
    assert _of_kind(keda, "TriggerAuthentication")
    errors = [e for d in keda for e in _keda_shape_errors(d)]
    assert not errors, "\n".join(errors)
    # Every authenticationRef names a TriggerAuthentication of the release (or the operator's).
    auths = {a["metadata"]["name"] for a in _of_kind(keda, "TriggerAuthentication")}
    refs = {
        t["authenticationRef"]["name"]
        for s in _of_kind(keda, "ScaledObject")
        for t in s["spec"]["triggers"]
        if "authenticationRef" in t
    }
    assert refs - {"prometheus-bearer"} == auths


# --- the Kafka consumers ------------------------------------------------------------------


def test_production_scales_each_consumer_on_its_own_groups_lag(
    rendered: dict[str, list[dict[str, Any]]], yaml: ModuleType
) -> None:
    docs = rendered["production-values.yaml"]
    values = yaml.safe_load(PRODUCTION.read_text())
    partitions = values["kafka"]["partitions"]
    scaled = _scaled(docs)
    assert set(scaled) == set(CONSUMERS) | {MODEL_SERVER}
    auths = {a["metadata"]["name"]: a for a in _of_kind(docs, "TriggerAuthentication")}
    hpas = {_component(h) for h in _of_kind(docs, "HorizontalPodAutoscaler")}
    deployments = _deployments(docs)
    for component, (group, topic) in _consumer_groups().items():
        spec = scaled[component]["spec"]
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": f"medbench-{component}",
        }
        assert 2 == spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
        lag = _triggers(scaled[component])["consumer-lag"]
        meta = lag["metadata"]
        assert meta["consumerGroup"] == group and meta["topic"] == topic, component
        assert meta["bootstrapServers"] == values["kafka"]["bootstrapServers"]
        assert meta["offsetResetPolicy"] == "earliest"  # as the services' consumers
        # SASL_SSL: SCRAM-SHA-512 with the service's own Kafka user and the brokers' CA.
        assert (meta["sasl"], meta["tls"]) == ("scram_sha512", "enable")
        auth = auths[lag["authenticationRef"]["name"]]["spec"]["secretTargetRef"]
        assert {(r["parameter"], r["name"], r["key"]) for r in auth} == {
            ("username", f"medbench-{component}-kafka", "username"),
            ("password", f"medbench-{component}-kafka", "password"),
            ("ca", "kafka-cluster-ca-cert", "ca.crt"),
        }
        # KEDA makes the HPA: the chart renders none, and leaves replicas alone.
        assert component not in hpas
        assert "replicas" not in deployments[component]["spec"]
    # The dispatcher's work is running dispatch jobs, not its intake lag: CPU too.
    assert _triggers(scaled["dispatcher"])["cpu"]["metadata"] == {"value": "70"}


def test_plaintext_kafka_needs_no_trigger_authentication(helm: str, yaml: ModuleType) -> None:
    docs = _with(helm, yaml, "judgeScorer.keda.enabled=true", "kafka.topicPrefix=prod.")
    (scaled,) = _of_kind(docs, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert "authenticationRef" not in trigger
    assert not {"sasl", "tls"} & set(trigger["metadata"])
    assert trigger["metadata"]["consumerGroup"] == "prod.judge-scorer"
    assert trigger["metadata"]["topic"] == "prod.medbench.scoring.judge-requested.v1"
    assert not _of_kind(docs, "TriggerAuthentication")


def test_keda_replaces_the_services_hpa(helm: str, yaml: ModuleType) -> None:
    docs = _with(
        helm, yaml, "serviceDefaults.autoscaling.enabled=true", "aggregator.keda.enabled=true"
    )
    hpas = {_component(h) for h in _of_kind(docs, "HorizontalPodAutoscaler")}
    assert "aggregator" not in hpas and {"gateway", "dispatcher"} <= hpas
    assert set(_scaled(docs)) == {"aggregator"}


def test_more_replicas_than_partitions_is_refused(helm: str) -> None:
    error = _refused(helm, "metricScorer.keda.enabled=true", "metricScorer.keda.maxReplicas=7")
    assert "metricScorer.keda.maxReplicas (7) exceeds kafka.partitions (6)" in error
    assert "medbench.inference.response-recorded.v1" in error
    error = _refused(helm, "aggregator.keda.enabled=true", "aggregator.keda.minReplicas=7")
    assert "minReplicas (7) exceeds its maxReplicas (6)" in error


def test_only_the_metric_scorer_and_the_model_server_scale_to_zero(
    helm: str, yaml: ModuleType
) -> None:
    """Zero only where work waits safely in Kafka and nothing calls the service over gRPC."""
    for key in ("dispatcher", "judgeScorer", "aggregator"):
        error = _refused(helm, f"{key}.keda.enabled=true", f"{key}.keda.minReplicas=0")
        assert f"{key}.keda.minReplicas 0 is refused" in error, error
    docs = _with(
        helm, yaml,
        "metricScorer.keda.enabled=true", "metricScorer.keda.minReplicas=0",
        "modelServer.keda.enabled=true", "modelServer.keda.minReplicas=0",
        "modelServer.keda.maxReplicas=1",
    )  # fmt: skip
    scaled = _scaled(docs)
    assert scaled["metric-scorer"]["spec"]["minReplicaCount"] == 0
    model = scaled[MODEL_SERVER]
    assert model["spec"]["minReplicaCount"] == 0
    # At zero no vLLM reports its queue: the judge requests waiting in Kafka wake it.
    wake = _triggers(model)["judge-requests-waiting"]["metadata"]
    assert (wake["consumerGroup"], wake["topic"]) == _consumer_groups()["judge-scorer"]
    assert wake["activationLagThreshold"] == "0"
    error = _refused(
        helm, "modelServer.keda.enabled=true", "modelServer.keda.minReplicas=0",
        "modelServer.keda.maxReplicas=1", "judgeScorer.enabled=false",
    )  # fmt: skip
    assert "enable judgeScorer" in error


# --- the judge's model server ---------------------------------------------------------------


def test_production_scales_vllm_on_its_queue_and_rolls_with_surge(
    rendered: dict[str, list[dict[str, Any]]], yaml: ModuleType
) -> None:
    docs = rendered["production-values.yaml"]
    values = yaml.safe_load(PRODUCTION.read_text())
    model = _scaled(docs)[MODEL_SERVER]
    assert (model["spec"]["minReplicaCount"], model["spec"]["maxReplicaCount"]) == (1, 2)
    (queue,) = model["spec"]["triggers"]
    assert queue["type"] == "prometheus"
    assert queue["metadata"]["serverAddress"] == values["keda"]["prometheus"]["serverAddress"]
    assert queue["metadata"]["query"] == (
        'sum(vllm:num_requests_waiting{namespace="medbench",job="medbench-judge-model"})'
    )
    assert queue["metadata"]["threshold"] == "8"
    deployment = _deployments(docs)[MODEL_SERVER]
    assert "replicas" not in deployment["spec"]
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    (pdb,) = [p for p in _of_kind(docs, "PodDisruptionBudget") if _component(p) == MODEL_SERVER]
    assert pdb["spec"]["maxUnavailable"] == 1
    # The ServiceMonitor gives vLLM's series the job label the query selects.
    (monitor,) = [m for m in _of_kind(docs, "ServiceMonitor") if _component(m) == MODEL_SERVER]
    assert monitor["spec"]["jobLabel"] == "medbench.io/job"
    (service,) = [s for s in _of_kind(docs, "Service") if _component(s) == MODEL_SERVER]
    assert service["metadata"]["labels"]["medbench.io/job"] == "medbench-judge-model"


def test_a_readwriteonce_cache_keeps_recreate_and_one_replica(helm: str, yaml: ModuleType) -> None:
    docs = _template(helm, yaml)
    assert _deployments(docs)[MODEL_SERVER]["spec"]["strategy"] == {"type": "Recreate"}
    error = _refused(helm, "modelServer.keda.enabled=true", "modelServer.keda.maxReplicas=2")
    assert "needs accessModes [ReadWriteMany]" in error
    surge = _with(helm, yaml, "modelServer.cache.type=emptyDir")
    assert _deployments(surge)[MODEL_SERVER]["spec"]["strategy"]["type"] == "RollingUpdate"
    off = _with(helm, yaml, "modelServer.cache.type=emptyDir", "modelServer.surgeOnUpdate=false")
    assert _deployments(off)[MODEL_SERVER]["spec"]["strategy"] == {"type": "Recreate"}


def test_the_model_servers_pdb_exists_only_where_it_keeps_capacity(
    helm: str, yaml: ModuleType
) -> None:
    def budgets(*sets: str) -> list[dict[str, Any]]:
        docs = _with(helm, yaml, "modelServer.pdb.enabled=true", *sets)
        return [p for p in _of_kind(docs, "PodDisruptionBudget") if _component(p) == MODEL_SERVER]

    assert budgets() == []  # one replica: a budget would protect nothing
    assert budgets("modelServer.keda.enabled=true", "modelServer.keda.maxReplicas=1") == []
    rwx = "modelServer.cache.accessModes={ReadWriteMany}"
    (fixed,) = budgets("modelServer.replicaCount=2", rwx)
    (scaled,) = budgets("modelServer.keda.enabled=true", rwx)
    assert fixed["spec"]["maxUnavailable"] == scaled["spec"]["maxUnavailable"] == 1


# --- priority ------------------------------------------------------------------------------


def test_the_scoring_path_gets_the_opt_in_priority_class(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    assert not _of_kind(rendered["chart-defaults"], "PriorityClass")
    for deployment in _deployments(rendered["chart-defaults"]).values():
        assert "priorityClassName" not in deployment["spec"]["template"]["spec"]
    docs = rendered["production-values.yaml"]
    (priority,) = _of_kind(docs, "PriorityClass")
    assert priority["metadata"]["name"] == "medbench-scoring"
    assert priority["value"] == 100000 and priority["globalDefault"] is False
    given = {
        name
        for name, d in _deployments(docs).items()
        if d["spec"]["template"]["spec"].get("priorityClassName") == "medbench-scoring"
    }
    assert given == {MODEL_SERVER, "metric-scorer", "judge-scorer"}


def test_keda_objects_are_opt_in(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for scenario, docs in rendered.items():
        if scenario != "production-values.yaml":
            assert not [d for d in docs if d["kind"] in KEDA_KINDS], scenario
