"""ServiceStack's replicas: names, ports, member ids, peers' multi-address targets, partitions,
and kill/restart of one replica (a health-only fake stands in for the services)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medbench_devstack import DevstackError, ServiceSpec, ServiceStack
from tests.libs.devstack.test_services import FAKE, HERE, _health


def _contract_stack(tmp_path: Path, **kwargs: object) -> ServiceStack:
    return ServiceStack(tmp_path, "mongodb://m/", "db1", "127.0.0.1:9", "p.", **kwargs)  # type: ignore[arg-type]


def test_default_is_one_process_per_service_with_single_address_peers(tmp_path: Path) -> None:
    stack = _contract_stack(tmp_path)
    assert stack.names == [
        "rotator",
        "aggregator",
        "metric_scorer",
        "judge_scorer",
        "dispatcher",
        "gateway",
    ]
    assert stack.replicas("rotator") == ["rotator"]
    assert stack.target("rotator") == stack.address("rotator")
    env = stack.env("gateway")
    assert env["MEDBENCH_PEERS__ROTATOR"] == stack.address("rotator")
    assert "MEDBENCH_KAFKA__PARTITIONS" not in env
    assert "MEDBENCH_INSTANCE_ID" not in env


def test_replicas_get_own_ports_member_ids_and_peers_get_every_address(tmp_path: Path) -> None:
    stack = _contract_stack(tmp_path, replicas={"rotator": 2, "metric_scorer": 4, "gateway": 2})
    assert stack.replicas("rotator") == ["rotator", "rotator-2"]
    assert stack.replicas("metric_scorer") == [
        "metric_scorer",
        "metric_scorer-2",
        "metric_scorer-3",
        "metric_scorer-4",
    ]
    assert len(stack.names) == 6 + 1 + 3 + 1
    # Replicas start after their first, in the services' order; the gateway last.
    assert stack.names[:2] == ["rotator", "rotator-2"] and stack.names[-2:] == [
        "gateway",
        "gateway-2",
    ]
    ports = [stack.grpc_port(n) for n in stack.names] + [stack.metrics_port(n) for n in stack.names]
    assert len(set(ports)) == 2 * len(stack.names)

    first, second = stack.env("rotator"), stack.env("rotator-2")
    assert second["MEDBENCH_GRPC_PORT"] == str(stack.grpc_port("rotator-2"))
    assert second["MEDBENCH_METRICS_PORT"] == str(stack.metrics_port("rotator-2"))
    assert second["MEDBENCH_INSTANCE_ID"].startswith("rotator-2@")
    # The same service: name (so the same consumer groups, outbox and token), settings.
    different = {k for k in first.keys() | second.keys() if first.get(k) != second.get(k)}
    assert different == {"MEDBENCH_GRPC_PORT", "MEDBENCH_METRICS_PORT", "MEDBENCH_INSTANCE_ID"}
    assert second["MEDBENCH_SERVICE_NAME"] == "rotator"
    assert stack.env("metric_scorer-4")["MEDBENCH_INSTANCE_ID"].startswith("metric_scorer-4@")

    rotators = f"ipv4:{stack.address('rotator')},{stack.address('rotator-2')}"
    assert stack.target("rotator") == rotators
    for caller in ("gateway", "gateway-2", "dispatcher", "judge_scorer"):
        assert stack.env(caller)["MEDBENCH_PEERS__ROTATOR"] == rotators
    assert stack.env("dispatcher")["MEDBENCH_PEERS__GATEWAY"] == (
        f"ipv4:{stack.address('gateway')},{stack.address('gateway-2')}"
    )
    assert "MEDBENCH_PEERS__ROTATOR" not in stack.env("rotator-2")
    # Every topic gets as many partitions as the most replicas of a service.
    assert {stack.env(n)["MEDBENCH_KAFKA__PARTITIONS"] for n in stack.names} == {"4"}
    assert (tmp_path / "rotator-2.log").resolve() == stack.log_path("rotator-2")


def test_two_replicas_keep_the_default_three_partitions(tmp_path: Path) -> None:
    stack = _contract_stack(tmp_path, replicas={"aggregator": 2})
    assert stack.env("gateway")["MEDBENCH_KAFKA__PARTITIONS"] == "3"


def test_bad_replica_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DevstackError, match="replicas of unknown service 'nope'"):
        _contract_stack(tmp_path, replicas={"nope": 2})
    with pytest.raises(DevstackError, match="at least 1"):
        _contract_stack(tmp_path, replicas={"rotator": 0})
    with pytest.raises(DevstackError, match="PARTITIONS=2 is fewer than the 3 replicas"):
        _contract_stack(
            tmp_path,
            extra_env={"MEDBENCH_KAFKA__PARTITIONS": "2"},
            replicas={"metric_scorer": 3},
        )
    with pytest.raises(DevstackError, match="unknown service 'rotator-2'"):
        _contract_stack(tmp_path).replicas("rotator-2")


def test_one_replica_killed_and_restarted_while_the_other_serves(tmp_path: Path) -> None:
    stack = ServiceStack(
        tmp_path,
        mongo_uri="mongodb://127.0.0.1:1/?directConnection=true",
        database="devstack_test",
        kafka_bootstrap="127.0.0.1:2",
        topic_prefix="t.",
        extra_env={"PYTHONPATH": str(HERE)},
        specs=[ServiceSpec("alpha", FAKE), ServiceSpec("beta", FAKE)],
        replicas={"alpha": 2},
    )
    try:
        stack.start(timeout_s=20)
        assert [_health(stack.address(n)) for n in stack.names] == ["SERVING"] * 3
        # beta was handed both of alpha's addresses
        assert f"MEDBENCH_PEERS__ALPHA={stack.target('alpha')}" in stack.process("beta").tail()
        stack.kill("alpha-2")
        assert stack.process("alpha-2").wait_exit(5) is not None
        assert _health(stack.address("alpha-2")) == "UNAVAILABLE"
        assert _health(stack.address("alpha")) == "SERVING"
        stack.restart("alpha-2", timeout_s=20)
        assert _health(stack.address("alpha-2")) == "SERVING"
    finally:
        stack.stop()
    assert not any(stack.process(n).alive() for n in stack.names)
