"""A single-node KRaft Kafka broker on loopback, run through kafka/kafka-test-broker.sh."""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from medbench_devstack.errors import DevstackError
from medbench_devstack.ports import LOOPBACK, free_ports
from medbench_devstack.processes import pid_cmdline, stop_pid, tail_file

# Must match <kafka.version> in kafka/pom.xml and the script's default.
KAFKA_VERSION = "3.9.2"

_SCRIPT = "kafka-test-broker.sh"
_ERROR_LINE = re.compile(r"\bERROR\b|^Caused by:|Exception: ")
# The JVM command line always ends with this main class; it tells our pid from a recycled one.
JVM_MARKER = "kafka.Kafka"


def recipe_dir() -> Path:
    """Folder holding kafka-test-broker.sh, pom.xml and log4j.properties."""
    override = os.environ.get("MEDBENCH_KAFKA_RECIPE_DIR")
    if override:
        return Path(override)
    # src/medbench_devstack/kafka.py -> libs/devstack/kafka (the workspace installs editable)
    return Path(__file__).resolve().parents[2] / "kafka"


def cache_dir() -> Path:
    """Root of caches shared across runs: $MEDBENCH_CACHE_DIR, else ~/.cache/medbench."""
    return Path(os.environ.get("MEDBENCH_CACHE_DIR") or "~/.cache/medbench").expanduser()


def kafka_libs_dir(version: str = KAFKA_VERSION) -> Path:
    """Where the broker's jars for `version` are cached."""
    return cache_dir() / "kafka" / f"libs-{version}"


def find_java() -> str | None:
    """The java binary the script would use: $JAVA, then $JAVA_HOME/bin/java, then PATH."""
    explicit = os.environ.get("JAVA")
    if explicit:
        return shutil.which(explicit)
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("java")


class KafkaBroker:
    """Apache Kafka (KRaft combined mode) with a fresh data dir on every start.

    Ports default to free ones picked at construction, so `bootstrap` is known up front.
    """

    def __init__(
        self,
        work_dir: Path,
        port: int | None = None,
        controller_port: int | None = None,
        *,
        version: str = KAFKA_VERSION,
    ) -> None:
        self.work_dir = Path(work_dir).resolve()
        picked = free_ports(2)
        self.port = port if port is not None else picked[0]
        self.controller_port = controller_port if controller_port is not None else picked[1]
        if self.port == self.controller_port:
            raise DevstackError(f"Kafka client and controller port are both {self.port}")
        self.version = version
        self.startup_s: float | None = None

    def __repr__(self) -> str:
        return f"KafkaBroker({self.bootstrap}, pid={self.pid})"

    @property
    def bootstrap(self) -> str:
        """`host:port` for Kafka clients."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def libs_dir(self) -> Path:
        return kafka_libs_dir(self.version)

    @property
    def pid_file(self) -> Path:
        return self.work_dir / "kafka.pid"

    @property
    def log_path(self) -> Path:
        """The broker's own log (server.log)."""
        return self.work_dir / "logs" / "server.log"

    @property
    def script_log_path(self) -> Path:
        """Output of the last kafka-test-broker.sh run (fetch, format, readiness)."""
        return self.work_dir / "kafka-test-broker.out"

    @property
    def pid(self) -> int | None:
        """Pid of the running broker JVM, None if it is not running."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        cmdline = pid_cmdline(pid)
        if cmdline is None or (cmdline and JVM_MARKER not in cmdline):
            return None
        return pid

    def alive(self) -> bool:
        return self.pid is not None

    def start(
        self, timeout_s: float = 120, *, fetch_timeout_s: float = 900, fresh: bool = True
    ) -> None:
        """Start the broker and wait until it accepts clients (wiping its data unless
        ``fresh=False``: then topics, messages and committed offsets survive a restart).

        `timeout_s` bounds storage formatting plus readiness; fetching the jars with Maven,
        needed only on a cold cache, has its own `fetch_timeout_s`.
        """
        if self.alive():
            raise DevstackError(f"Kafka in {self.work_dir} is already running (pid {self.pid})")
        t0 = time.monotonic()
        script = recipe_dir() / _SCRIPT
        if not script.is_file():
            raise DevstackError(f"Kafka recipe not found: {script} (set MEDBENCH_KAFKA_RECIPE_DIR)")
        bash = shutil.which("bash")
        if bash is None:
            raise DevstackError("bash not found on PATH; kafka-test-broker.sh needs it")
        java = find_java()
        if java is None:
            raise DevstackError(
                "java not found ($JAVA, $JAVA_HOME/bin/java, PATH): Kafka needs a JDK 17+"
            )
        env = {
            **os.environ,
            "JAVA": java,
            "KAFKA_VERSION": self.version,
            "KAFKA_WORK": str(self.work_dir),
            "KAFKA_LIBS": str(self.libs_dir),
            "KAFKA_HOST": LOOPBACK,
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "KAFKA_FRESH": "1" if fresh else "0",
            "KAFKA_START_TIMEOUT": str(max(1, math.ceil(timeout_s))),
        }
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not (self.libs_dir / ".complete").is_file():
            mvn = shutil.which(os.environ.get("MVN", "mvn"))
            if mvn is None:
                raise DevstackError(
                    f"Kafka {self.version} jars are not cached in {self.libs_dir} and Maven "
                    "(mvn) is not on PATH to fetch them"
                )
            self._run_script(bash, script, "fetch", env, fetch_timeout_s, "jar fetch (mvn)")
        # The script itself gives up after KAFKA_START_TIMEOUT; the margin covers formatting.
        self._run_script(bash, script, "start", env, timeout_s + 30, "start")
        if self.pid is None:
            raise DevstackError(
                f"Kafka on {self.bootstrap} reported ready but its pid is gone; "
                f"last log lines:\n{tail_file(self.log_path)}"
            )
        self.startup_s = time.monotonic() - t0

    def _run_script(
        self,
        bash: str,
        script: Path,
        command: str,
        env: dict[str, str],
        timeout_s: float,
        what: str,
    ) -> None:
        with self.script_log_path.open("wb") as out:
            # Own session: on timeout the whole group (script, mvn or the JVM) is killed.
            proc = subprocess.Popen(
                [bash, str(script), command],
                env=env,
                cwd=self.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                self._kill_leftover()
                raise DevstackError(
                    f"Kafka {self.version} on {self.bootstrap}: {what} timed out after "
                    f"{timeout_s:.0f}s; "
                    f"last output:\n{self._script_tail()}\nlast broker log lines:\n"
                    f"{tail_file(self.log_path, 20)}"
                ) from None
        if rc != 0:
            self._kill_leftover()
            raise DevstackError(
                f"Kafka {self.version} on {self.bootstrap}: {what} failed "
                f"({_SCRIPT} {command} exited {rc}):\n{self._script_tail()}"
            )

    def _script_tail(self) -> str:
        """Why the script failed: its own verdict lines, the errors, then the raw tail.

        A JVM stack trace easily pushes the one useful "Caused by" line out of a plain tail.
        """
        text = tail_file(self.script_log_path, 400)
        lines = text.splitlines()
        verdicts = [ln for ln in lines if ln.startswith("[kafka-test-broker]")]
        errors = [ln for ln in lines if _ERROR_LINE.search(ln) and ln not in verdicts]
        parts = verdicts[-5:]
        if errors:
            parts += ["errors:", *dict.fromkeys(errors[-12:])]
        parts += ["last lines:", *lines[-15:]]
        return "\n".join(parts)

    def _kill_leftover(self) -> None:
        pid = self.pid
        if pid is not None:
            stop_pid(pid, 5.0, expect_in_cmdline=JVM_MARKER)
        self.pid_file.unlink(missing_ok=True)

    def restart(self, timeout_s: float = 120) -> None:
        """Stop and start again on the same ports, keeping the data."""
        self.stop()
        self.start(timeout_s, fresh=False)

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM the broker, SIGKILL it after `timeout_s`; a no-op if it is not running."""
        pid = self.pid
        if pid is not None:
            stop_pid(pid, timeout_s, expect_in_cmdline=JVM_MARKER)
        self.pid_file.unlink(missing_ok=True)
