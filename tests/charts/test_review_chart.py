"""The review app in the chart: opt-in, one pod as locked down as the others, reaching only the
judge scorer (whose policy lets it in), with no credential of its own."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from tests.charts.test_chart import (
    CHART,
    RELEASE,
    _component,
    _deployments,
    _env,
    _main_container,
    _of_kind,
    _peers,
    _policies,
    _run,
    _template,
    _values_args,
    _web_app_reaches,
    helm,
    yaml,
)

__all__ = ["helm", "yaml"]  # fixtures, imported for pytest
REVIEW = "review"
PRODUCTION = ("-f", str(CHART / "ci" / "production-values.yaml"))
ON = (
    "--set",
    "review.enabled=true",
    "--set",
    "review.ingress.enabled=true",
    "--set",
    "review.ingress.tlsSecret=review-tls",
    "--set-json",
    'review.from=[{"namespaceSelector": {"matchLabels": '
    '{"kubernetes.io/metadata.name": "ingress-nginx"}}}]',
)


def _production(helm: str, yaml: ModuleType, *extra: str) -> list[dict[str, Any]]:
    return _template(helm, yaml, *PRODUCTION, *extra)


def test_the_review_app_is_off_by_default(helm: str, yaml: ModuleType) -> None:
    assert REVIEW not in _deployments(_template(helm, yaml))
    assert REVIEW not in _deployments(_production(helm, yaml))


def test_the_review_app_calls_the_judge_scorer_with_no_credential_of_its_own(
    helm: str, yaml: ModuleType
) -> None:
    docs = _production(helm, yaml, *ON)
    deployment = _deployments(docs)[REVIEW]
    assert deployment["spec"]["replicas"] == 1, "sessions live in the pod's memory"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = _main_container(deployment)
    assert container["command"][:3] == ["python", "-m", "medbench_review"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    env = _env(container)
    assert env["MEDBENCH_PEERS__JUDGE_SCORER"]["value"] == "medbench-judge-scorer:50051"
    assert env["MEDBENCH_REVIEW_SECURE_COOKIES"]["value"] == "true"
    assert set(env) == {"MEDBENCH_PEERS__JUDGE_SCORER", "MEDBENCH_REVIEW_SECURE_COOKIES"}
    assert "envFrom" not in container
    (ingress,) = [d for d in _of_kind(docs, "Ingress") if _component(d) == REVIEW]
    assert ingress["spec"]["tls"][0]["secretName"] == "review-tls"
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == (
        "medbench-review"
    )


def test_network_policies_let_the_review_app_reach_the_judge_scorer_only(
    helm: str, yaml: ModuleType
) -> None:
    policies = _policies(_production(helm, yaml, *ON))
    assert _web_app_reaches(policies["medbench-review"]["spec"]) == {"judge-scorer"}
    callers = _peers(policies["medbench-judge-scorer"]["spec"]["ingress"], "from")
    assert REVIEW in callers
    without = _policies(_production(helm, yaml))["medbench-judge-scorer"]["spec"]["ingress"]
    assert REVIEW not in str(without)


def test_the_review_app_needs_the_judge_scorer_and_valid_values(helm: str) -> None:
    defaults = _values_args("chart-defaults")
    result = _run(
        helm, "template", RELEASE, str(CHART), *defaults, "--set", "review.enabled=true",
        "--set", "judgeScorer.enabled=false",
    )  # fmt: skip
    assert result.returncode != 0
    assert "the review app calls the judge scorer" in result.stderr
    lint = _run(helm, "lint", "--strict", str(CHART), *defaults, "--set", "review.enabled=true")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    for bad in ("review.typo=1", "review.port=80", "review.secureCookies=maybe"):
        result = _run(helm, "lint", str(CHART), *defaults, "--set", bad)
        assert result.returncode != 0, bad
