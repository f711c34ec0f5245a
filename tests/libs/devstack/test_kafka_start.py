"""Starting the devstack Kafka: the first run on a fresh machine, and failures that explain
themselves (the JVM's exit status, what was being checked, the last lines of its logs)."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.errors import MessageSizeTooLargeError

from medbench_devstack import KAFKA_VERSION, DevstackError, KafkaBroker
from medbench_devstack.kafka import DEFAULT_MESSAGE_MAX_BYTES, JVM_MARKER, recipe_dir
from medbench_devstack.ports import port_is_open
from medbench_devstack.processes import pid_alive, pid_cmdline

from ._util import wait_for


def _list_topics(bootstrap: str) -> list[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    try:
        return list(admin.list_topics())
    finally:
        admin.close()


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _devstack(
    command: str, stack_dir: Path, env: dict[str, str], timeout_s: float, *args: str
) -> str:
    """`python -m medbench_devstack <command>`: what `make run` runs (through demo.py) to bring
    Kafka and the Mongo-wire server up, detached, and down again."""
    proc = subprocess.run(
        [sys.executable, "-m", "medbench_devstack", command, "--dir", str(stack_dir), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"devstack {command} exited {proc.returncode}:\n{output}"
    return output


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the cold fetch alone may take up to KafkaBroker's 900 s
def test_first_run_on_a_fresh_machine_then_fresh_starts(tmp_path: Path) -> None:
    """A wiped jar cache and a fresh work dir, started as `make run` starts it; then three more
    fresh work dirs on the now warm cache. Every start must succeed and serve clients."""
    if shutil.which(os.environ.get("MVN", "mvn")) is None:
        pytest.skip("mvn is needed to fill the empty jar cache")
    cache = tmp_path / "cache"  # MEDBENCH_CACHE_DIR: the real ~/.cache/medbench is untouched
    # `make run` runs under make; its variables are all it adds to the environment.
    env = {**os.environ, "MEDBENCH_CACHE_DIR": str(cache), "MAKELEVEL": "1", "MAKEFLAGS": ""}
    mvn_args = env.get("MVN_ARGS", "").split()
    if not {"-o", "--offline"} & set(mvn_args):
        # A fresh machine has no Maven repository either: resolve from Maven Central.
        env["MVN_ARGS"] = " ".join([*mvn_args, f"-Dmaven.repo.local={tmp_path / 'm2'}"])
    libs = cache / "kafka" / f"libs-{KAFKA_VERSION}"
    assert not libs.exists()
    fetched_ns = None
    for run in range(4):
        stack_dir = tmp_path / f"stack-{run}"
        started = time.monotonic()
        # the first run fetches the jars with Maven, once
        output = _devstack("up", stack_dir, env, 900 if run == 0 else 300)
        took = time.monotonic() - started
        assert (libs / ".complete").is_file()
        if fetched_ns is None:
            fetched_ns = (libs / ".complete").stat().st_mtime_ns
        assert (libs / ".complete").stat().st_mtime_ns == fetched_ns, "fetched twice"
        state = json.loads((stack_dir / "state.json").read_text())
        kafka = state["kafka"]
        try:
            # The command that started it has exited: the broker must outlive it.
            cmdline = pid_cmdline(kafka["pid"])
            assert cmdline and JVM_MARKER in cmdline, f"run {run}: {cmdline!r}\n{output}"
            assert f"libs-{KAFKA_VERSION}" in cmdline and str(cache) in cmdline
            assert isinstance(_list_topics(kafka["bootstrap"]), list)
            assert pid_alive(kafka["pid"]), f"run {run}: the broker died after serving"
            config = (stack_dir / "kafka" / "server.properties").read_text()
            assert f"message.max.bytes={DEFAULT_MESSAGE_MAX_BYTES}\n" in config
        finally:
            # SIGKILL after 15 s, not 30: the Mongo-wire server now and then sits out SIGTERM
            _devstack("down", stack_dir, env, 120, "--timeout", "15")
        assert not pid_alive(kafka["pid"])
        print(f"run {run}: up in {took:.1f}s (kafka {kafka['startup_s']}s)")


def test_an_exec_held_back_is_not_taken_for_an_exit(tmp_path: Path) -> None:
    """The defect of the first `make run`: the readiness check read the command line of the
    JVM's pid while the forked shell had not exec'd java yet, took "not kafka.Kafka" for "exited"
    and failed with both logs empty. Here the exec is held back for a second: the forked shell
    opens logs/kafka.out (a FIFO here) for its stdout before it execs, and that open blocks until
    the test reads the FIFO."""
    broker = KafkaBroker(tmp_path / "kafka")
    fifo = broker.stdout_path
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    outcome: dict[str, object] = {}

    def start() -> None:
        try:
            broker.start(timeout_s=90)
            outcome["ok"] = True
        except BaseException as exc:  # reported by the test thread
            outcome["error"] = exc

    done = threading.Event()
    output = bytearray()

    def drain(fd: int) -> None:  # the JVM's stdout; a full FIFO would stall the broker
        while not done.is_set():
            if select.select([fd], [], [], 0.2)[0]:
                chunk = os.read(fd, 65536)
                if chunk:
                    output.extend(chunk)
                else:  # no writer (yet, or any more)
                    time.sleep(0.05)
        os.close(fd)

    def release() -> threading.Thread:
        # Reading the FIFO lets the open, and then the exec, happen.
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        drainer = threading.Thread(target=drain, args=(fd,), daemon=True)
        drainer.start()
        return drainer

    starter = threading.Thread(target=start, daemon=True)
    starter.start()
    drainer: threading.Thread | None = None
    try:
        # "formatted" is the script's last word before it forks the JVM's shell.
        wait_for(
            lambda: "formatted" in _text(broker.script_log_path) or not starter.is_alive(),
            60,
            "storage to be formatted",
        )
        starter.join(timeout=1.0)  # the exec is held back meanwhile
        early = _text(broker.script_log_path)
        assert "exited during startup" not in early, early
        assert starter.is_alive(), outcome
        drainer = release()
        starter.join(timeout=200)
        assert outcome.get("ok"), outcome.get("error")
        assert broker.pid is not None
        assert isinstance(_list_topics(broker.bootstrap), list)
    finally:
        if drainer is None:  # a shell may still be blocked on the FIFO
            drainer = release()
        starter.join(timeout=200)
        broker.stop()
        done.set()
        drainer.join(timeout=10)


def test_port_in_use_names_exit_status_check_and_cause(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        broker = KafkaBroker(tmp_path / "kafka", port=squatter.getsockname()[1])
        with pytest.raises(DevstackError) as info:
            broker.start(timeout_s=60)
    message = str(info.value)
    assert "broker exited during startup" in message
    # Kafka exits with status 1 when its listener cannot bind
    assert "exit status 1," in message
    assert "was checking: 'Kafka Server started'" in message
    assert "Address already in use" in message
    assert broker.pid is None


_FAKE_JAVA = """#!/bin/sh
# A java that formats storage but whose broker dies at once, as FAKE_JAVA_DEATH says.
case "$*" in *StorageTool*) exit 0 ;; esac
echo "fake java: the broker dies ($FAKE_JAVA_DEATH)" >&2
if [ "$FAKE_JAVA_DEATH" = sigkill ]; then kill -9 $$; fi
exit 3
"""


@pytest.mark.parametrize(
    ("death", "status"),
    [("exit", "exit status 3,"), ("sigkill", "exit status 137 (128+9: SIGKILL)")],
)
def test_a_dying_jvm_is_reported_with_its_exit_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, death: str, status: str
) -> None:
    fake_java = tmp_path / "java"
    fake_java.write_text(_FAKE_JAVA)
    fake_java.chmod(0o755)
    # A jar cache of its own that counts as complete: the fake needs no jars, nothing is fetched.
    cache = tmp_path / "cache"
    (cache / "kafka" / f"libs-{KAFKA_VERSION}").mkdir(parents=True)
    (cache / "kafka" / f"libs-{KAFKA_VERSION}" / ".complete").touch()
    monkeypatch.setenv("MEDBENCH_CACHE_DIR", str(cache))
    monkeypatch.setenv("JAVA", str(fake_java))
    monkeypatch.setenv("FAKE_JAVA_DEATH", death)
    broker = KafkaBroker(tmp_path / "kafka")
    with pytest.raises(DevstackError) as info:
        broker.start(timeout_s=30)
    message = str(info.value)
    assert "broker exited during startup" in message
    assert status in message
    assert "was checking: " in message
    assert f"fake java: the broker dies ({death})" in message  # the JVM's own last words
    assert "server.log is empty" in message
    assert broker.pid is None
    assert not broker.pid_file.exists()


def test_message_max_bytes_is_set_and_enforced(tmp_path: Path) -> None:
    limit = 2_000_000
    broker = KafkaBroker(tmp_path / "kafka", message_max_bytes=limit)
    broker.start(timeout_s=90)
    try:
        config = (broker.work_dir / "server.properties").read_text()
        assert f"message.max.bytes={limit}\n" in config
        assert f"replica.fetch.max.bytes={limit}\n" in config
        topic = f"devstack-size-{uuid.uuid4().hex}"
        producer = KafkaProducer(
            bootstrap_servers=broker.bootstrap, acks="all", max_request_size=4_000_000
        )
        try:
            # Kafka's default limit (1048588) would refuse this one; the configured one takes it.
            producer.send(topic, value=b"x" * 1_500_000).get(timeout=30)
            with pytest.raises(MessageSizeTooLargeError):
                producer.send(topic, value=b"x" * 2_500_000).get(timeout=30)
        finally:
            producer.close()
    finally:
        broker.stop()
    assert not port_is_open(broker.port)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, (1 << 30) + 1])
def test_message_max_bytes_is_validated(tmp_path: Path, bad: object) -> None:
    with pytest.raises(DevstackError, match="message_max_bytes must be an int"):
        KafkaBroker(tmp_path / "kafka", message_max_bytes=bad)  # type: ignore[arg-type]


def test_the_script_refuses_a_bad_message_max_bytes(tmp_path: Path) -> None:
    script = recipe_dir() / "kafka-test-broker.sh"
    proc = subprocess.run(
        ["bash", str(script), "bootstrap"],
        env={**os.environ, "KAFKA_MESSAGE_MAX_BYTES": "12MB", "KAFKA_WORK": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "KAFKA_MESSAGE_MAX_BYTES must be an integer" in proc.stderr
