"""The chart's in-cluster vision-language judge (visionModelServer): opt-in, a second vLLM server
on the GPU pool like the text judge's, with its own API key Secret and model cache, declared to
the judge scorer with "vision": true (items with images go to it, with their images), reachable
from the judge scorer only."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import pytest

from judge_scorer.settings import JudgeSettings
from tests.charts.test_chart import (
    CHART,
    GPU,
    KUBE_VERSION,
    MODEL_SERVER,
    _component,
    _deployments,
    _env,
    _main_container,
    _module,
    _of_kind,
    _policies,
    _run,
    _template,
    _values_args,
    helm,
    yaml,
)

__all__ = ["helm", "yaml"]  # fixtures, imported for pytest
VISION = "judge-vision-model"
ON = ("--set", "visionModelServer.enabled=true")
PRODUCTION = ("-f", str(CHART / "ci" / "production-values.yaml"))


def _judges(docs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The judge scorer's MEDBENCH_JUDGE__MODELS and its environment."""
    env = _env(_main_container(_deployments(docs)["judge-scorer"]))
    return json.loads(env["MEDBENCH_JUDGE__MODELS"]["value"]), env


def _args(deployment: dict[str, Any]) -> dict[str, str]:
    return dict(
        a.removeprefix("--").split("=", 1) for a in _main_container(deployment)["args"]
    )  # fmt: skip


def test_off_by_default(helm: str, yaml: ModuleType) -> None:
    for docs in (_template(helm, yaml), _template(helm, yaml, *PRODUCTION)):
        assert not [d for d in docs if d["metadata"].get("labels", {}).get(
            "app.kubernetes.io/component") == VISION]  # fmt: skip
        judges, _ = _judges(docs)
        assert not any(j.get("vision") for j in judges)


def test_a_vision_language_judge_on_the_gpu_pool(helm: str, yaml: ModuleType) -> None:
    docs = _template(helm, yaml, *ON)
    deployments = _deployments(docs)
    vision, text = deployments[VISION], deployments[MODEL_SERVER]
    args = _args(vision)
    assert (args["model"], args["served-model-name"]) == (
        "Qwen/Qwen2.5-VL-72B-Instruct", "qwen2.5-vl-72b-instruct",
    )  # fmt: skip
    assert args["tensor-parallel-size"] == "4" and args["max-model-len"] == "32768"
    assert json.loads(args["limit-mm-per-prompt"]) == {"image": 8}
    pod = vision["spec"]["template"]["spec"]
    container = _main_container(vision)
    # On the GPU pool, as the text judge's server: its selector, its toleration, whole GPUs.
    assert pod["nodeSelector"] == text["spec"]["template"]["spec"]["nodeSelector"]
    assert any(t["key"] == GPU and t["effect"] == "NoSchedule" for t in pod["tolerations"])
    assert container["resources"]["limits"][GPU] == container["resources"]["requests"][GPU] == 4
    assert container["image"] == _main_container(text)["image"]  # modelServer's, not set here
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert vision["spec"]["strategy"]["type"] == "Recreate"
    # Its own API key Secret and its own weights volume (never the text server's).
    key = _env(container)["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]
    text_key = _env(_main_container(text))["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert key["name"] == "medbench-judge-vision-model-api" != text_key["name"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "models"]
    assert volume["persistentVolumeClaim"]["claimName"] == "medbench-judge-vision-model-cache"
    claims = {c["metadata"]["name"] for c in _of_kind(docs, "PersistentVolumeClaim")}
    assert {"medbench-judge-model-cache", "medbench-judge-vision-model-cache"} <= claims
    (service,) = [s for s in _of_kind(docs, "Service") if _component(s) == VISION]
    assert service["metadata"]["labels"]["medbench.io/job"] == "medbench-judge-vision-model"


def test_the_judge_scorer_declares_it_vision_capable(helm: str, yaml: ModuleType) -> None:
    docs = _template(helm, yaml, *ON)
    judges, env = _judges(docs)
    text, vision = judges
    assert not text.get("vision") and text["model"] == "qwen2.5-72b-instruct"
    assert vision == {
        "model": "qwen2.5-vl-72b-instruct",
        "base_url": "http://medbench-judge-vision-model:8000/v1",
        "api_key": "$(JUDGE_API_KEY_VISION)",
        "max_concurrency": 16,
        "structured": "json_schema",
        "gpus": 4,
        "vision": True,
    }
    # The key from the server's own Secret, defined before the JSON that expands it.
    names = list(env)
    assert names.index("JUDGE_API_KEY_VISION") < names.index("MEDBENCH_JUDGE__MODELS")
    server_key = _env(_main_container(_deployments(docs)[VISION]))["VLLM_API_KEY"]
    assert env["JUDGE_API_KEY_VISION"]["valueFrom"] == server_key["valueFrom"]
    # What the judge scorer reads of it (its settings): one vision-capable judge.
    models = JudgeSettings.model_validate(
        {"models": [{**j, "api_key": "k"} for j in judges]}
    ).models  # fmt: skip
    assert [m.vision for m in models] == [False, True]


def test_alone_it_is_the_judge_and_key_points_are_judged(helm: str, yaml: ModuleType) -> None:
    docs = _template(helm, yaml, *ON, "--set", "modelServer.enabled=false")
    assert MODEL_SERVER not in _deployments(docs)
    (judge,), _ = _judges(docs)
    assert judge["vision"] is True
    metric = _env(_main_container(_deployments(docs)["metric-scorer"]))
    assert metric["MEDBENCH_KEY_POINT_RECALL"]["value"] == "judge"


def test_its_values_override_the_text_servers(helm: str, yaml: ModuleType) -> None:
    docs = _template(
        helm, yaml, *ON,
        "--set", "visionModelServer.tensorParallelSize=8",
        "--set", "visionModelServer.apiKeySecret.name=vl-key",
        "--set", "visionModelServer.cache.existingClaim=vl-weights",
        "--set", "modelServer.cache.existingClaim=text-weights",
        "--set", "visionModelServer.port=8100",
    )  # fmt: skip
    vision = _deployments(docs)[VISION]
    assert _args(vision)["tensor-parallel-size"] == "8"
    assert _main_container(vision)["resources"]["limits"][GPU] == 8
    pod = vision["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "models"]
    assert volume["persistentVolumeClaim"]["claimName"] == "vl-weights"
    (_, judge), env = _judges(docs)
    assert (judge["gpus"], judge["base_url"]) == (8, "http://medbench-judge-vision-model:8100/v1")
    assert env["JUDGE_API_KEY_VISION"]["valueFrom"]["secretKeyRef"]["name"] == "vl-key"
    # Left unset here, its Secret and claim are its own, not the text server's.
    docs = _template(helm, yaml, *ON, "--set", "modelServer.apiKeySecret.name=text-key",
                     "--set", "modelServer.cache.existingClaim=text-weights")  # fmt: skip
    vision = _deployments(docs)[VISION]
    key = _env(_main_container(vision))["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert key["name"] == "medbench-judge-vision-model-api"
    pod = vision["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "models"]
    assert volume["persistentVolumeClaim"]["claimName"] == "medbench-judge-vision-model-cache"


def test_only_the_judge_scorer_reaches_it(helm: str, yaml: ModuleType) -> None:
    docs = _template(helm, yaml, *PRODUCTION, *ON)
    policies = _policies(docs)
    own = policies["medbench-judge-vision-model"]
    callers = [
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in own["spec"]["ingress"]
        for peer in rule.get("from", [])
        if "podSelector" in peer
    ]
    assert callers == ["judge-scorer"]
    # Production keeps the model servers offline (a pre-filled cache): DNS only.
    assert len(own["spec"]["egress"]) == len(policies["medbench-judge-model"]["spec"]["egress"])
    egress = policies["medbench-judge-scorer"]["spec"]["egress"]
    to_vision = [
        rule for rule in egress
        if any(p.get("podSelector", {}).get("matchLabels", {}).get(
            "app.kubernetes.io/component") == VISION for p in rule.get("to", []))
    ]  # fmt: skip
    assert [r["ports"] for r in to_vision] == [[{"port": 8000, "protocol": "TCP"}]]
    for name, policy in policies.items():
        if name != "medbench-judge-scorer":
            assert VISION not in json.dumps(policy["spec"].get("egress", [])), name


def test_dev_clusters_get_its_key_and_monitoring_scrapes_it(helm: str, yaml: ModuleType) -> None:
    dev = _template(helm, yaml, *_values_args("dev-values.yaml"), *ON)
    secrets = {s["metadata"]["name"] for s in _of_kind(dev, "Secret")}
    assert "medbench-judge-vision-model-api" in secrets
    monitored = _template(helm, yaml, *PRODUCTION, *ON)
    monitors = {_component(m) for m in _of_kind(monitored, "ServiceMonitor")}
    assert {MODEL_SERVER, VISION} <= monitors


def test_rendered_objects_validate_and_bad_values_are_refused(helm: str, yaml: ModuleType) -> None:
    kv = _module("kubernetes_validate", "kubernetes-validate")
    for doc in _template(helm, yaml, *PRODUCTION, *ON):
        if VISION in json.dumps(doc.get("metadata", {})) and not doc["apiVersion"].startswith(
            ("monitoring.coreos.com/", "keda.sh/")  # KEDA's: test_autoscaling_chart.py
        ):
            kv.validate(doc, KUBE_VERSION, strict=True)
    for bad, message in (
        (("--set", "visionModelServer.nope=1"), "additional properties"),
        (("--set", "visionModelServer.tensorParallelSize=0"), "tensorParallelSize"),
        (("--set", "visionModelServer.replicaCount=2"), "ReadWriteMany"),
        (("--set", "judgeScorer.enabled=false"), "enable judgeScorer"),
    ):
        result = _run(
            helm, "template", "medbench", str(CHART),
            *_values_args("chart-defaults"), *ON, *bad,
        )  # fmt: skip
        assert result.returncode != 0, bad
        assert message in result.stderr, (bad, result.stderr)


@pytest.mark.parametrize("flag", ["modelServer.enabled=false", "visionModelServer.enabled=true"])
def test_lint(helm: str, flag: str) -> None:
    result = _run(helm, "lint", str(CHART), *_values_args("chart-defaults"), "--set", flag)
    assert result.returncode == 0, result.stdout + result.stderr
