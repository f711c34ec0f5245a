"""ServiceStack against a throwaway health-only gRPC server (the real services are not needed)."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from medbench_devstack import SERVICES, DevstackError, ServiceSpec, ServiceStack

HERE = Path(__file__).resolve().parent
FAKE = "health_server"


def _stack(tmp_path: Path, specs: list[ServiceSpec], **fake_env: str) -> ServiceStack:
    return ServiceStack(
        tmp_path,
        mongo_uri="mongodb://127.0.0.1:1/?directConnection=true",
        database="devstack_test",
        kafka_bootstrap="127.0.0.1:2",
        topic_prefix="t.",
        # PYTHONPATH makes the fake importable as `python -m health_server`
        extra_env={"PYTHONPATH": str(HERE), **fake_env},
        specs=specs,
    )


def _health(address: str) -> str:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def test_service_list_and_env_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert [(s.name, s.module) for s in SERVICES] == [
        ("rotator", "rotator"),
        ("aggregator", "aggregator"),
        ("metric_scorer", "metric_scorer"),
        ("judge_scorer", "judge_scorer"),
        ("dispatcher", "dispatcher"),
        ("gateway", "gateway"),
    ]
    monkeypatch.setenv("MEDBENCH_STRAY_SETTING", "from-the-shell")
    stack = ServiceStack(
        tmp_path, "mongodb://m/", "db1", "127.0.0.1:9", "p.", extra_env={"EXTRA": "1"}
    )
    ports = [stack.grpc_port(n) for n in stack.names] + [stack.metrics_port(n) for n in stack.names]
    assert len(set(ports)) == 12
    env = stack.env("gateway")
    assert env["MEDBENCH_SERVICE_NAME"] == "gateway"
    assert env["MEDBENCH_GRPC_PORT"] == str(stack.grpc_port("gateway"))
    assert env["MEDBENCH_METRICS_PORT"] == str(stack.metrics_port("gateway"))
    assert env["MEDBENCH_MONGO__URI"] == "mongodb://m/"
    assert env["MEDBENCH_MONGO__DATABASE"] == "db1"
    assert env["MEDBENCH_KAFKA__BOOTSTRAP_SERVERS"] == "127.0.0.1:9"
    assert env["MEDBENCH_KAFKA__TOPIC_PREFIX"] == "p."
    assert env["MEDBENCH_LOG_LEVEL"] == "INFO"
    assert env["EXTRA"] == "1"
    assert env["MEDBENCH_PEERS__ROTATOR"] == stack.address("rotator")
    assert env["MEDBENCH_PEERS__METRIC_SCORER"] == stack.address("metric_scorer")
    assert "MEDBENCH_PEERS__GATEWAY" not in env
    assert "MEDBENCH_STRAY_SETTING" not in env
    assert stack.process("rotator").argv[1:] == ["-m", "rotator"]
    with pytest.raises(DevstackError, match="unknown service 'nope'"):
        stack.address("nope")


def test_serving_then_kill_and_restart_on_same_port(tmp_path: Path) -> None:
    stack = _stack(tmp_path, [ServiceSpec("alpha", FAKE), ServiceSpec("beta", FAKE)])
    try:
        stack.start(timeout_s=20)
        assert _health(stack.address("alpha")) == "SERVING"
        assert _health(stack.address("beta")) == "SERVING"
        # the child really received its peers' addresses
        assert f"MEDBENCH_PEERS__BETA={stack.address('beta')}" in stack.process("alpha").tail()

        address, old_pid = stack.address("alpha"), stack.process("alpha").pid
        stack.kill("alpha")
        assert stack.process("alpha").wait_exit(5) == -signal.SIGKILL
        assert _health(address) == "UNAVAILABLE"
        assert _health(stack.address("beta")) == "SERVING"

        stack.restart("alpha", timeout_s=20)
        assert stack.address("alpha") == address
        assert stack.process("alpha").pid != old_pid
        assert _health(address) == "SERVING"
    finally:
        stack.stop()
    assert not any(stack.process(n).alive() for n in stack.names)
    # SIGTERM reached the fake's handler, so it shut down gracefully
    assert "beta: stopped cleanly" in stack.process("beta").tail()


def test_never_serving_service_is_named_and_stack_cleaned_up(tmp_path: Path) -> None:
    stack = _stack(
        tmp_path,
        [ServiceSpec("good", FAKE), ServiceSpec("stuck", FAKE)],
        FAKE_HEALTH_STUCK="not_serving",
    )
    with pytest.raises(DevstackError) as info:
        stack.start(timeout_s=4)
    message = str(info.value)
    assert "service stuck not SERVING" in message
    assert "NOT_SERVING" in message
    assert "stuck: listening on" in message  # tail of its log
    assert not stack.process("good").alive() and not stack.process("stuck").alive()


def test_service_that_exits_fails_fast_with_its_log(tmp_path: Path) -> None:
    stack = _stack(tmp_path, [ServiceSpec("quitter", FAKE)], FAKE_HEALTH_QUITTER="exit")
    with pytest.raises(DevstackError, match=r"(?s)service quitter exited with 3.*on purpose"):
        stack.start(timeout_s=20)
