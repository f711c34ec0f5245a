"""The chart's transport security: Kafka SASL_SSL with a Secret per service, the brokers' and
MongoDB's CA mounted, extra volumes (gRPC TLS certificates), and the cert-manager example."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from tests.charts.test_chart import (
    CHART,
    KUBE_VERSION,
    SERVICES,
    _deployments,
    _env,
    _main_container,
    _module,
    _of_kind,
    _run,
    _template,
    helm,
    yaml,
)

__all__ = ["helm", "yaml"]  # session fixtures shared with test_chart
EXAMPLE = CHART / "ci" / "mtls-cert-manager-values.yaml"
# Kafka's SASL users: the six services, each with its own Secret.
KAFKA_SECRETS = {
    "gateway": "medbench-kafka-gateway",
    "rotator": "medbench-kafka-rotator",
    "dispatcher": "medbench-kafka-dispatcher",
    "metric-scorer": "medbench-kafka-metric-scorer",
    "judge-scorer": "medbench-kafka-judge-scorer",
    "aggregator": "medbench-kafka-aggregator",
}


@pytest.fixture(scope="module")
def example(helm: str, yaml: ModuleType) -> list[dict[str, Any]]:
    return _template(helm, yaml, "-f", str(EXAMPLE))


def _shared(docs: list[dict[str, Any]]) -> dict[str, str]:
    (config,) = [
        d for d in _of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "medbench-shared"
    ]
    return dict(config["data"])


def _mounts(deployment: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in _main_container(deployment)["volumeMounts"]}


def _services(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The six services' Deployments (not the model server's)."""
    return {n: d for n, d in _deployments(docs).items() if n in SERVICES}


def _volumes(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}


def test_defaults_stay_plaintext_with_no_credentials_or_mounts(helm: str, yaml: ModuleType) -> None:
    docs = _template(helm, yaml)
    assert _shared(docs)["MEDBENCH_KAFKA__SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert not any(
        k.startswith(("MEDBENCH_KAFKA__SASL", "MEDBENCH_KAFKA__SSL")) for k in _shared(docs)
    )
    for deployment in _services(docs).values():
        assert not any("SASL" in name for name in _env(_main_container(deployment)))
        assert set(_mounts(deployment)) == {"tmp"}


def test_sasl_ssl_gives_each_service_its_own_kafka_user_and_the_brokers_ca(
    example: list[dict[str, Any]],
) -> None:
    shared = _shared(example)
    assert shared["MEDBENCH_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
    assert shared["MEDBENCH_KAFKA__SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert shared["MEDBENCH_KAFKA__SSL_CAFILE"] == "/etc/medbench/kafka-ca/ca.crt"
    assert shared["MEDBENCH_KAFKA__SSL_CHECK_HOSTNAME"] == "true"
    assert shared["MEDBENCH_MONGO__TLS_CA_FILE"] == "/etc/medbench/mongo-ca/ca.crt"
    deployments = _services(example)
    assert set(deployments) == set(SERVICES)
    for name, deployment in deployments.items():
        env = _env(_main_container(deployment))
        for setting, key in (("USERNAME", "username"), ("PASSWORD", "password")):
            ref = env[f"MEDBENCH_KAFKA__SASL_{setting}"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": KAFKA_SECRETS[name], "key": key}, name
        assert "value" not in env["MEDBENCH_KAFKA__SASL_PASSWORD"]  # never inline
        mounts, volumes = _mounts(deployment), _volumes(deployment)
        assert mounts["kafka-ca"] == "/etc/medbench/kafka-ca"
        assert mounts["mongo-ca"] == "/etc/medbench/mongo-ca"
        assert volumes["kafka-ca"]["secret"]["secretName"] == "medbench-kafka-cluster-ca"
        assert volumes["mongo-ca"]["secret"]["secretName"] == "medbench-mongo-ca"
    # No two services share a Kafka user.
    assert len(set(KAFKA_SECRETS.values())) == len(KAFKA_SECRETS)


def test_the_gateway_mounts_its_grpc_certificate_and_serves_mutual_tls(
    example: list[dict[str, Any]],
) -> None:
    deployments = _services(example)
    gateway = deployments["gateway"]
    assert _mounts(gateway)["grpc-tls"] == "/etc/medbench/grpc-tls"
    assert _volumes(gateway)["grpc-tls"]["secret"]["secretName"] == "medbench-gateway-grpc-tls"
    env = _env(_main_container(gateway))
    assert env["MEDBENCH_AUTH__TLS_CERT_FILE"]["value"] == "/etc/medbench/grpc-tls/tls.crt"
    assert env["MEDBENCH_AUTH__TLS_KEY_FILE"]["value"] == "/etc/medbench/grpc-tls/tls.key"
    assert env["MEDBENCH_AUTH__TLS_CLIENT_CA_FILE"]["value"] == "/etc/medbench/grpc-tls/ca.crt"
    for name, deployment in deployments.items():
        if name != "gateway":
            assert "grpc-tls" not in _mounts(deployment), name


def test_global_and_service_extra_volumes_add_up(helm: str, yaml: ModuleType) -> None:
    docs = _template(
        helm, yaml,
        "--set-json", 'global.extraVolumes=[{"name": "shared-ca", "configMap": {"name": "ca"}}]',
        "--set-json", 'global.extraVolumeMounts=[{"name": "shared-ca", "mountPath": "/etc/ca"}]',
        "--set-json", 'rotator.extraVolumes=[{"name": "own", "secret": {"secretName": "r"}}]',
        "--set-json", 'rotator.extraVolumeMounts=[{"name": "own", "mountPath": "/etc/own"}]',
    )  # fmt: skip
    deployments = _deployments(docs)
    assert _mounts(deployments["rotator"]) == {
        "tmp": "/tmp",
        "shared-ca": "/etc/ca",
        "own": "/etc/own",
    }
    assert _mounts(deployments["aggregator"]) == {"tmp": "/tmp", "shared-ca": "/etc/ca"}
    assert set(_volumes(deployments["rotator"])) == {"tmp", "shared-ca", "own"}


def test_example_lints_and_validates_against_kubernetes_schemas(
    helm: str, example: list[dict[str, Any]]
) -> None:
    result = _run(helm, "lint", "--strict", str(CHART), "-f", str(EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr
    kv = _module("kubernetes_validate", "kubernetes-validate")
    for doc in example:
        if not doc["apiVersion"].startswith("monitoring.coreos.com/"):
            kv.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize(
    ("values", "error"),
    [
        (["--set", "kafka.securityProtocol=TLS"], "securityProtocol"),
        (["--set", "kafka.sasl.mechanism=GSSAPI"], "mechanism"),
        (["--set", "kafka.tls.verify=false"], "verify"),
    ],
)
def test_schema_refuses_unknown_security_values(helm: str, values: list[str], error: str) -> None:
    result = _run(
        helm, "template", "medbench", str(CHART), "-f", str(EXAMPLE), *values
    )  # fmt: skip
    assert result.returncode != 0 and error in result.stderr, result.stderr
