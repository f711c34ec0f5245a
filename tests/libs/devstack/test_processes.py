"""ManagedProcess, port helpers and pid helpers against tiny Python child processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from medbench_devstack import DevstackError, ManagedProcess, free_port, free_ports
from medbench_devstack.processes import pid_alive, stop_pid, tail_file

from ._util import wait_for


def _py(code: str) -> list[str]:
    return [sys.executable, "-u", "-c", textwrap.dedent(code)]


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    ports = free_ports(6)
    assert len(set(ports)) == 6


def test_start_tail_kill_restart(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    proc = ManagedProcess(
        "child",
        _py(
            """
            import os, time
            for i in range(100):
                print(f"line {i}")
            print("ready", os.getpid())
            time.sleep(60)
            """
        ),
        dict(os.environ),
        log,
    )
    assert proc.pid is None and not proc.alive()
    proc.start()
    first_pid = proc.pid
    assert first_pid is not None
    # its own session: tests may kill it without touching pytest's group
    assert os.getpgid(first_pid) == first_pid != os.getpgid(0)
    wait_for(lambda: proc.tail(1).startswith("ready"), 10, "child to print ready")
    assert proc.tail(3).splitlines() == ["line 98", "line 99", f"ready {first_pid}"]
    with pytest.raises(DevstackError, match="already running"):
        proc.start()

    proc.kill()
    assert proc.wait_exit(5) == -signal.SIGKILL
    assert not proc.alive()

    proc.restart()
    assert proc.pid != first_pid and proc.alive()
    wait_for(lambda: proc.tail(1) == f"ready {proc.pid}", 10, "restarted child")
    # the log is appended to, not truncated, across restarts
    assert f"ready {first_pid}" in log.read_text()
    assert proc.terminate(5) == -signal.SIGTERM


def test_terminate_escalates_and_kills_the_group(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "stubborn",
        _py(
            """
            import signal, subprocess, sys, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            print("grandchild", child.pid, flush=True)
            time.sleep(60)
            """
        ),
        dict(os.environ),
        tmp_path / "stubborn.log",
    )
    proc.start()
    line = wait_for(
        lambda: proc.tail(1) if proc.tail(1).startswith("grandchild") else None,
        10,
        "grandchild pid",
    )
    grandchild = int(line.split()[-1])
    assert pid_alive(grandchild)
    # SIGTERM is ignored, so only the SIGKILL escalation can end it
    assert proc.terminate(0.5) == -signal.SIGKILL
    wait_for(lambda: not pid_alive(grandchild), 5, "grandchild to die with its group")


def test_start_of_missing_binary_says_why(tmp_path: Path) -> None:
    proc = ManagedProcess("ghost", ["/nonexistent/bin/ghost"], {}, tmp_path / "ghost.log")
    with pytest.raises(DevstackError, match="ghost.*cannot run"):
        proc.start()


def test_stop_pid_respects_cmdline_marker(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "sleeper", _py("import time; time.sleep(60)"), dict(os.environ), tmp_path / "s.log"
    )
    proc.start()
    assert proc.pid is not None
    # a recycled pid (wrong command line) must be left alone
    assert stop_pid(proc.pid, 1, expect_in_cmdline="kafka.Kafka") is False
    assert proc.alive()
    assert stop_pid(proc.pid, 5, expect_in_cmdline="time.sleep") is True
    assert proc.wait_exit(5) == -signal.SIGTERM


def test_tail_file_of_missing_and_long_logs(tmp_path: Path) -> None:
    assert tail_file(tmp_path / "nope.log") == ""
    big = tmp_path / "big.log"
    big.write_text("".join(f"{'x' * 500} {i}\n" for i in range(1000)))
    assert tail_file(big, 2).splitlines()[-1].endswith(" 999")
    assert len(tail_file(big, 50).splitlines()) == 50


def test_stop_recorded_stops_the_recorded_module_only_and_forgets_it(tmp_path: Path) -> None:
    import json

    from medbench_devstack.processes import pid_alive, stop_recorded

    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = tmp_path / "app.json"
        # A pid recycled by another program: left running, the stale record dropped.
        record.write_text(json.dumps({"pid": other.pid}))
        stop_recorded(record, "http.server", "the app")
        assert other.poll() is None and not record.exists()
        record.write_text(json.dumps({"pid": server.pid}))
        stop_recorded(record, "http.server", "the app")
        assert server.wait(timeout=15) is not None and not record.exists()
        assert not pid_alive(server.pid)
        stop_recorded(record, "http.server", "the app")  # nothing recorded: nothing to do
    finally:
        for proc in (server, other):
            proc.kill()
            proc.wait()
