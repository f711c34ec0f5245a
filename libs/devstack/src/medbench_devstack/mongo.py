"""A MongoDB-wire server (SecantusDB's secantusd-py, always a separate process) on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

from medbench_devstack.errors import DevstackError
from medbench_devstack.ports import LOOPBACK, free_port, port_is_open
from medbench_devstack.processes import ManagedProcess

# SecantusDB is GPL-2.0: it is only ever exec'd, never imported into our processes.
SECANTUSD = "secantusd-py"
_POLL_S = 0.05


def find_secantusd() -> str | None:
    """secantusd-py beside the running interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / SECANTUSD
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(SECANTUSD)


class MongoWireServer:
    """A single-node replica set (transactions work) with its own storage dir.

    `sync_on_commit` (default on) makes acknowledged writes survive a SIGKILL of the server,
    as journaled writes do on a real mongod; it costs about 2 ms per write.
    """

    def __init__(
        self,
        work_dir: Path,
        port: int | None = None,
        *,
        executable: str | None = None,
        sync_on_commit: bool = True,
    ) -> None:
        self.work_dir = Path(work_dir).resolve()
        self.port = port if port is not None else free_port()
        self.executable = executable
        self.sync_on_commit = sync_on_commit
        self.startup_s: float | None = None
        self._proc: ManagedProcess | None = None

    def __repr__(self) -> str:
        return f"MongoWireServer({self.uri}, pid={self.pid})"

    @property
    def uri(self) -> str:
        return f"mongodb://{LOOPBACK}:{self.port}/?directConnection=true"

    @property
    def data_dir(self) -> Path:
        return self.work_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "secantusd.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.alive() else None

    @property
    def process(self) -> ManagedProcess | None:
        return self._proc

    def alive(self) -> bool:
        return self._proc is not None and self._proc.alive()

    def start(self, timeout_s: float = 30, *, fresh: bool = True) -> None:
        """Start the server (wiping its data unless `fresh=False`) and wait for a ping."""
        if self.alive():
            raise DevstackError(f"MongoDB-wire server on port {self.port} is already running")
        t0 = time.monotonic()
        exe = self.executable or find_secantusd()
        if exe is None:
            raise DevstackError(
                f"{SECANTUSD} not found beside {sys.executable} nor on PATH: install the "
                "workspace dev group (uv sync) which provides secantusdb"
            )
        if fresh and self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "secantusd.toml"
        # An explicit (empty) config stops secantusd auto-discovering ./ or ~/.secantus ones.
        config.write_text("# devstack: defaults only; flags carry the settings\n")
        argv = [
            exe,
            "--host", LOOPBACK,
            "--port", str(self.port),
            "--storage-path", str(self.data_dir),
            "--config", str(config),
        ]  # fmt: skip
        if self.sync_on_commit:
            argv.append("--sync-on-commit")
        self._proc = ManagedProcess(
            "secantusd", argv, dict(os.environ), self.log_path, cwd=self.work_dir
        )
        self._proc.start()
        try:
            self._wait_ready(time.monotonic() + timeout_s, timeout_s)
        except DevstackError:
            self._proc.terminate(5)
            raise
        self.startup_s = time.monotonic() - t0

    def _wait_ready(self, deadline: float, timeout_s: float) -> None:
        # Imported here so `python -m medbench_devstack status|down` stays quick.
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        assert self._proc is not None
        last_error = "port not open yet"
        while True:
            if not self._proc.alive():
                raise DevstackError(
                    f"{SECANTUSD} on port {self.port} exited with {self._proc.returncode} "
                    f"during startup; last log lines:\n{self._proc.tail(30)}"
                )
            # A plain TCP probe first: far cheaper than building a client per attempt.
            if port_is_open(self.port):
                remaining_ms = max(100, int((deadline - time.monotonic()) * 1000))
                client: MongoClient[dict[str, object]] = MongoClient(
                    self.uri,
                    serverSelectionTimeoutMS=min(1000, remaining_ms),
                    connectTimeoutMS=min(1000, remaining_ms),
                )
                try:
                    client.admin.command("ping")
                    hello = client.admin.command("hello")
                    if hello.get("isWritablePrimary"):
                        return
                    last_error = f"not a writable primary yet: {hello}"
                except PyMongoError as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                finally:
                    client.close()
            if time.monotonic() >= deadline:
                raise DevstackError(
                    f"{SECANTUSD} on port {self.port} did not answer ping within {timeout_s}s "
                    f"(last error: {last_error}); last log lines:\n{self._proc.tail(30)}"
                )
            time.sleep(_POLL_S)

    def restart(self, timeout_s: float = 30) -> None:
        """Stop and start again on the same port, keeping the data."""
        self.stop()
        self.start(timeout_s, fresh=False)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self._proc is not None:
            self._proc.kill(sig)

    def stop(self, timeout_s: float = 10) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL after `timeout_s`; no-op if not running."""
        proc = self._proc
        if proc is None:
            return
        if proc.alive():
            proc.kill(signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while proc.wait_exit(_POLL_S) is None and time.monotonic() < deadline:
                nudge_shutdown(self.port)
        proc.terminate(0)


def nudge_shutdown(port: int) -> None:
    """Help a SIGTERM'd secantusd exit in ~0.1 s instead of ~2 s.

    Its shutdown joins the accept thread, which stays blocked in accept() after the listening
    socket is closed; one throwaway connection wakes it up.
    """
    port_is_open(port, timeout_s=0.05)
