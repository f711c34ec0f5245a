"""`python -m medbench_devstack up|status|down` with real, detached Kafka and Mongo-wire servers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kafka.admin import KafkaAdminClient
from pymongo import MongoClient

from medbench_devstack.ports import port_is_open
from medbench_devstack.processes import pid_alive

from ._util import wait_for


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medbench_devstack", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_up_status_down(tmp_path: Path) -> None:
    stack_dir = tmp_path / ".stack"
    up = _cli("up", "--dir", str(stack_dir))
    try:
        assert up.returncode == 0, up.stderr
        state = json.loads((stack_dir / "state.json").read_text())
        assert json.loads(up.stdout) == state
        kafka, mongo = state["kafka"], state["mongo"]
        assert kafka["bootstrap"] == f"127.0.0.1:{kafka['port']}"
        assert mongo["uri"] == f"mongodb://127.0.0.1:{mongo['port']}/?directConnection=true"
        # `up` has exited; the servers must have outlived it
        assert pid_alive(kafka["pid"]) and pid_alive(mongo["pid"])

        client: MongoClient[dict[str, object]]
        with MongoClient(mongo["uri"], serverSelectionTimeoutMS=5000) as client:
            assert client.admin.command("ping")["ok"] == 1.0
        admin = KafkaAdminClient(bootstrap_servers=kafka["bootstrap"], request_timeout_ms=10_000)
        try:
            assert [b["port"] for b in admin.describe_cluster()["brokers"]] == [kafka["port"]]
        finally:
            admin.close()

        status = _cli("status", "--dir", str(stack_dir))
        assert status.returncode == 0, status.stderr
        shown = json.loads(status.stdout)
        assert shown["kafka"]["alive"] is True and shown["mongo"]["alive"] is True

        again = _cli("up", "--dir", str(stack_dir))
        assert again.returncode == 1 and "already up" in again.stderr
    finally:
        down = _cli("down", "--dir", str(stack_dir))
    assert down.returncode == 0, down.stderr
    assert "kafka: stopped" in down.stdout and "mongo: stopped" in down.stdout
    assert not (stack_dir / "state.json").exists()
    wait_for(
        lambda: not pid_alive(kafka["pid"]) and not pid_alive(mongo["pid"]), 5, "pids to vanish"
    )
    assert not port_is_open(kafka["port"]) and not port_is_open(mongo["port"])
    after = _cli("status", "--dir", str(stack_dir))
    assert after.returncode == 1 and "not up" in after.stderr
