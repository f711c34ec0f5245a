"""Child processes with their own process group and log file, plus helpers for detached pids."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from medbench_devstack.errors import DevstackError

_POLL_S = 0.05


class ManagedProcess:
    """One service process: stdout and stderr go to `log_path`, which survives restarts.

    `env` is the child's complete environment (nothing is inherited implicitly), so callers
    decide exactly what leaks in from the parent.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = Path(log_path)
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid}, alive={self.alive()})"

    @property
    def pid(self) -> int | None:
        """Pid of the current (or most recent) run, None before the first start."""
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit status of the most recent run; None while it runs or before it started."""
        if self._proc is None:
            return None
        return self._proc.poll()

    def start(self) -> None:
        """Spawn the process in a new session (so its whole group can be signalled)."""
        if self.alive():
            raise DevstackError(f"{self.name}: already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # A marker between runs makes a restarted service's log readable.
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- devstack: starting {self.name} at {stamp}: {self.argv}\n".encode())
            log.flush()
            try:
                self._proc = subprocess.Popen(
                    self.argv,
                    env=self.env,
                    cwd=self.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise DevstackError(f"{self.name}: cannot run {self.argv[0]!r}: {exc}") from exc

    def alive(self) -> bool:
        """True while the process runs (a zombie counts as exited: poll() reaps it)."""
        return self._proc is not None and self._proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the process group, so helpers the service spawned die with it."""
        if self._proc is None:
            return
        _signal_group(self._proc.pid, sig)

    def wait_exit(self, timeout_s: float) -> int | None:
        """Wait up to `timeout_s` for the process to exit; its exit status, or None if alive."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout=max(timeout_s, 0.0))
        except subprocess.TimeoutExpired:
            return None

    def terminate(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, wait up to `timeout_s`, then SIGKILL; returns the exit status."""
        if self._proc is None:
            return None
        if self.alive():
            self.kill(signal.SIGTERM)
            if self.wait_exit(timeout_s) is None:
                self.kill(signal.SIGKILL)
                self.wait_exit(10.0)
        # Children that ignored SIGTERM or outlived their parent still hold the group.
        _signal_group(self._proc.pid, signal.SIGKILL)
        return self.returncode

    def restart(self, timeout_s: float = 10.0) -> None:
        """Terminate (if running) and start again with the same argv, env and log file."""
        self.terminate(timeout_s)
        self.start()

    def tail(self, n_lines: int = 40) -> str:
        """The last `n_lines` lines of the log ('' if there is no log yet)."""
        return tail_file(self.log_path, n_lines)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def tail_file(path: Path, n_lines: int = 40) -> str:
    """The last `n_lines` lines of a text file, read from the end so big logs stay cheap."""
    try:
        with Path(path).open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            block = 8192
            data = b""
            pos = end
            while pos > 0 and data.count(b"\n") <= n_lines:
                step = min(block, pos)
                pos -= step
                fh.seek(pos)
                data = fh.read(step) + data
    except FileNotFoundError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-n_lines:]) if n_lines > 0 else ""


def pid_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie waiting to be reaped by someone else."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def pid_cmdline(pid: int) -> str | None:
    """The command line of `pid` ('' if unreadable), None if there is no such process."""
    if not pid_alive(pid):
        return None
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return raw.replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["ps", "-ww", "-p", str(pid), "-o", "args="],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def wait_pid_gone(
    pid: int, timeout_s: float, while_waiting: Callable[[], object] | None = None
) -> bool:
    """Poll until `pid` is gone (works for processes that are not our children).

    `while_waiting` runs on every poll, e.g. to nudge a server that is slow to notice.
    """
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        if while_waiting is not None:
            while_waiting()
        time.sleep(_POLL_S)
    return True


def stop_pid(
    pid: int,
    timeout_s: float = 30.0,
    expect_in_cmdline: str | None = None,
    while_waiting: Callable[[], object] | None = None,
) -> bool:
    """SIGTERM `pid`, wait up to `timeout_s`, then SIGKILL it.

    With `expect_in_cmdline`, a process whose command line lacks that text is left alone:
    pids in a state file may have been recycled since it was written. Returns True if a
    process was signalled.
    """
    cmdline = pid_cmdline(pid)
    if expect_in_cmdline is not None:
        # An empty command line is a process between fork and exec (just started) or a zombie:
        # give the first its command line before judging it.
        deadline = time.monotonic() + 1.0
        while cmdline == "" and time.monotonic() < deadline:
            time.sleep(0.02)
            cmdline = pid_cmdline(pid)
    if cmdline is None:
        return False
    if expect_in_cmdline is not None and cmdline and expect_in_cmdline not in cmdline:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if not wait_pid_gone(pid, timeout_s, while_waiting):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        if not wait_pid_gone(pid, 10.0):
            raise DevstackError(f"pid {pid} survived SIGKILL")
    return True


def stop_recorded(path: Path, module: str, what: str) -> None:
    """Stops the `python -m module` process whose pid a previous `up` recorded in path (a JSON
    file with "pid"), if it still runs, and removes the record."""
    if not path.exists():
        return
    pid = json.loads(path.read_text())["pid"]
    if stop_pid(pid, 15, expect_in_cmdline=f"-m {module}"):
        print(f"stopped {what} (pid {pid})")
    path.unlink()


def wait_http_ok(proc: ManagedProcess, url: str, what: str, timeout_s: float = 60) -> None:
    """Waits until GET url answers 200 (a started web server's /healthz); DevstackError naming
    what, with the process's last log lines, when it dies or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            pass
        if not proc.alive() or time.monotonic() > deadline:
            raise DevstackError(f"{what} did not come up:\n{proc.tail(20)}")
        time.sleep(0.2)
