"""`python -m medbench_devstack up|down|status [--dir .stack]`: Kafka + Mongo-wire for local dev."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from medbench_devstack.errors import DevstackError
from medbench_devstack.kafka import JVM_MARKER, KafkaBroker
from medbench_devstack.mongo import SECANTUSD, MongoWireServer, nudge_shutdown
from medbench_devstack.processes import pid_cmdline, stop_pid

STATE_FILE = "state.json"
# What each component's command line must contain before `down` signals its recorded pid.
_MARKERS = {"kafka": JVM_MARKER, "mongo": SECANTUSD}


def _state_path(stack_dir: Path) -> Path:
    return stack_dir / STATE_FILE


def _read_state(stack_dir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(_state_path(stack_dir).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DevstackError(f"unreadable {_state_path(stack_dir)}: {exc}") from exc


def _write_state(stack_dir: Path, state: dict[str, Any]) -> None:
    path = _state_path(stack_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    # Atomic replace: a concurrent `status` never sees half a file.
    os.replace(tmp, path)


def _component_running(name: str, info: dict[str, Any]) -> bool:
    pid = info.get("pid")
    if not isinstance(pid, int):
        return False
    cmdline = pid_cmdline(pid)
    return cmdline is not None and (not cmdline or _MARKERS[name] in cmdline)


def _with_liveness(state: dict[str, Any]) -> dict[str, Any]:
    shown = dict(state)
    for name in _MARKERS:
        if isinstance(state.get(name), dict):
            shown[name] = {**state[name], "alive": _component_running(name, state[name])}
    return shown


def cmd_up(stack_dir: Path, args: argparse.Namespace) -> int:
    state = _read_state(stack_dir)
    if state is not None and any(
        isinstance(state.get(n), dict) and _component_running(n, state[n]) for n in _MARKERS
    ):
        print(f"devstack already up in {stack_dir} (run `down` first):", file=sys.stderr)
        print(json.dumps(_with_liveness(state), indent=2))
        return 1
    stack_dir.mkdir(parents=True, exist_ok=True)
    mongo = MongoWireServer(stack_dir / "mongo", port=args.mongo_port)
    kafka = KafkaBroker(stack_dir / "kafka", port=args.kafka_port)
    # Both children run in their own sessions, so they outlive this command. They boot in
    # parallel: each start is mostly waiting on a child process.
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(mongo.start, timeout_s=args.timeout),
            pool.submit(kafka.start, timeout_s=args.timeout),
        ]
        errors = [str(f.exception()) for f in futures if f.exception() is not None]
    if errors:
        kafka.stop()
        mongo.stop()
        print("devstack up failed:\n" + "\n".join(errors), file=sys.stderr)
        return 1
    state = {
        "dir": str(stack_dir),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kafka": {
            "pid": kafka.pid,
            "port": kafka.port,
            "controller_port": kafka.controller_port,
            "bootstrap": kafka.bootstrap,
            "version": kafka.version,
            "log": str(kafka.log_path),
            "startup_s": round(kafka.startup_s or 0.0, 2),
        },
        "mongo": {
            "pid": mongo.pid,
            "port": mongo.port,
            "uri": mongo.uri,
            "log": str(mongo.log_path),
            "startup_s": round(mongo.startup_s or 0.0, 2),
        },
    }
    _write_state(stack_dir, state)
    print(json.dumps(state, indent=2))
    return 0


def _nudge(name: str, info: dict[str, Any]) -> Callable[[], None] | None:
    port = info.get("port")
    if name != "mongo" or not isinstance(port, int):
        return None
    return lambda: nudge_shutdown(port)


def cmd_down(stack_dir: Path, args: argparse.Namespace) -> int:
    state = _read_state(stack_dir)
    if state is None:
        print(f"devstack not up ({_state_path(stack_dir)} missing)", file=sys.stderr)
        return 0
    pids = {
        name: state[name]["pid"]
        for name in _MARKERS
        if isinstance(state.get(name), dict) and isinstance(state[name].get("pid"), int)
    }
    # Stopped in parallel: Kafka and secantusd each take a second or two to shut down.
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            name: pool.submit(
                stop_pid,
                pid,
                args.timeout,
                expect_in_cmdline=_MARKERS[name],
                while_waiting=_nudge(name, state[name]),
            )
            for name, pid in pids.items()
        }
    failed = False
    for name, future in futures.items():
        exc = future.exception()
        if exc is not None:
            print(f"{name}: {exc}", file=sys.stderr)
            failed = True
        else:
            verdict = "stopped" if future.result() else "was not running"
            print(f"{name}: {verdict} (pid {pids[name]})")
    if failed:
        return 1
    _state_path(stack_dir).unlink(missing_ok=True)
    (stack_dir / "kafka" / "kafka.pid").unlink(missing_ok=True)
    return 0


def cmd_status(stack_dir: Path, args: argparse.Namespace) -> int:
    state = _read_state(stack_dir)
    if state is None:
        print(f"devstack not up ({_state_path(stack_dir)} missing)", file=sys.stderr)
        return 1
    shown = _with_liveness(state)
    print(json.dumps(shown, indent=2))
    return 0 if all(shown.get(n, {}).get("alive") for n in _MARKERS) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m medbench_devstack",
        description="Local Kafka (KRaft) + MongoDB-wire server, detached, for development.",
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", default=".stack", type=Path, help="state/work dir (.stack)")
    parser.add_argument("--kafka-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--mongo-port", type=int, default=None, help="default: a free port")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per component (up 120, down 30)"
    )
    args = parser.parse_args(argv)
    if args.timeout is None:
        args.timeout = 120.0 if args.command == "up" else 30.0
    stack_dir = args.dir.resolve()
    commands = {"up": cmd_up, "down": cmd_down, "status": cmd_status}
    try:
        return commands[args.command](stack_dir, args)
    except DevstackError as exc:
        print(f"devstack {args.command} failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
