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
from dataclasses import dataclass
from pathlib import Path

from medbench_devstack.errors import DevstackError
from medbench_devstack.kafka_tls import SaslSsl, ThrowawayPki, make_test_pki
from medbench_devstack.ports import LOOPBACK, free_ports
from medbench_devstack.processes import pid_cmdline, stop_pid, tail_file

# Must match <kafka.version> in kafka/pom.xml and the script's default.
KAFKA_VERSION = "3.9.2"
# Kafka's own default message.max.bytes (1 MiB + 12 bytes of batch overhead); the script's too.
DEFAULT_MESSAGE_MAX_BYTES = 1048588
# The script refuses more (message.max.bytes is a Java int; a local broker needs far less).
_MAX_MESSAGE_MAX_BYTES = 1 << 30

_SCRIPT = "kafka-test-broker.sh"
_VERDICT = "[kafka-test-broker]"
_ERROR_LINE = re.compile(r"\bERROR\b|^Caused by:|Exception: ")
# What the script gives a JVM it stops at its own deadline before reporting; Python's deadline
# for the script is the readiness timeout plus this, formatting and slack.
_SCRIPT_STOP_TIMEOUT_S = 10
_START_MARGIN_S = 60
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


@dataclass(frozen=True)
class ClusterMembership:
    """What makes a broker one node of a cluster (medbench_devstack.kafka_cluster): its id,
    the controller quorum's voters ("id@host:port,..."), the cluster id every node's storage
    is formatted with, and the cluster's replication settings."""

    node_id: int
    quorum_voters: str
    cluster_id: str
    replication_factor: int
    min_insync_replicas: int
    # How long the controller waits for a silent (killed) broker before it moves its leaderships.
    broker_session_timeout_ms: int = 9000

    def script_env(self) -> dict[str, str]:
        """The kafka-test-broker.sh settings of this node."""
        return {
            "KAFKA_NODE_ID": str(self.node_id),
            "KAFKA_QUORUM_VOTERS": self.quorum_voters,
            "KAFKA_CLUSTER_ID": self.cluster_id,
            "KAFKA_REPLICATION_FACTOR": str(self.replication_factor),
            "KAFKA_MIN_ISR": str(self.min_insync_replicas),
            "KAFKA_BROKER_SESSION_TIMEOUT_MS": str(self.broker_session_timeout_ms),
        }


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
        message_max_bytes: int = DEFAULT_MESSAGE_MAX_BYTES,
        sasl_ssl: SaslSsl | None = None,
        membership: ClusterMembership | None = None,
    ) -> None:
        """`message_max_bytes`: the broker's message.max.bytes, the largest record batch it
        accepts (topics may set their own max.message.bytes); set explicitly in its config.
        `sasl_ssl`: the client port takes SCRAM-SHA-512 over TLS only (a throwaway CA and
        certificate made at start, `ca_file`; `client_env` gives a service the settings),
        and the broker talks to itself on its own SASL_SSL listener.
        `membership`: a node of a cluster (KafkaCluster builds them); None: a single node."""
        if (
            isinstance(message_max_bytes, bool)
            or not isinstance(message_max_bytes, int)
            or not 0 < message_max_bytes <= _MAX_MESSAGE_MAX_BYTES
        ):
            raise DevstackError(
                f"message_max_bytes must be an int in 1..{_MAX_MESSAGE_MAX_BYTES}, "
                f"got {message_max_bytes!r}"
            )
        self.message_max_bytes = message_max_bytes
        self.work_dir = Path(work_dir).resolve()
        picked = free_ports(3)
        self.port = port if port is not None else picked[0]
        self.controller_port = controller_port if controller_port is not None else picked[1]
        if self.port == self.controller_port:
            raise DevstackError(f"Kafka client and controller port are both {self.port}")
        self.sasl_ssl = sasl_ssl
        # The inter-broker listener of a SASL_SSL broker.
        self.internal_port = next(p for p in picked if p not in (self.port, self.controller_port))
        self.pki: ThrowawayPki | None = None
        self.membership = membership
        self.version = version
        self.startup_s: float | None = None

    def __repr__(self) -> str:
        return f"KafkaBroker({self.bootstrap}, pid={self.pid})"

    @property
    def bootstrap(self) -> str:
        """`host:port` for Kafka clients."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The CA certificate clients trust (a SASL_SSL broker, once started)."""
        if self.pki is None:
            raise DevstackError("ca_file: the broker is not a started SASL_SSL broker")
        return self.pki.ca_file

    def client_env(self, user: str) -> dict[str, str]:
        """MEDBENCH_KAFKA__* settings of a service reaching this broker as `user` (SCRAM over
        TLS, the password given inline), or just the bootstrap address for a plaintext one."""
        env = {"MEDBENCH_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap}
        if self.sasl_ssl is not None:
            env |= {
                "MEDBENCH_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
                "MEDBENCH_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
                "MEDBENCH_KAFKA__SASL_USERNAME": user,
                "MEDBENCH_KAFKA__SASL_PASSWORD": self.sasl_ssl.users[user],
                "MEDBENCH_KAFKA__SSL_CAFILE": str(self.ca_file),
            }
        return env

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
    def stdout_path(self) -> Path:
        """The JVM's stdout and stderr (kafka.out): startup errors, JVM crashes."""
        return self.work_dir / "logs" / "kafka.out"

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
            "KAFKA_MESSAGE_MAX_BYTES": str(self.message_max_bytes),
            "KAFKA_START_TIMEOUT": str(max(1, math.ceil(timeout_s))),
            "KAFKA_STOP_TIMEOUT": str(_SCRIPT_STOP_TIMEOUT_S),
        }
        if self.membership is not None:
            env |= self.membership.script_env()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.sasl_ssl is not None:
            tls_dir = self.work_dir / "tls"
            if self.pki is None:  # a restart keeps the CA clients already trust
                self.pki = make_test_pki(tls_dir, (LOOPBACK, "localhost"))
            env |= {
                "KAFKA_SECURITY": "SASL_SSL",
                "KAFKA_INTERNAL_PORT": str(self.internal_port),
                "KAFKA_SSL_KEYSTORE": str(self.pki.keystore_file),
                "KAFKA_SSL_TRUSTSTORE": str(self.pki.ca_file),
                "KAFKA_SCRAM_USERS_FILE": str(self.sasl_ssl.write_users(tls_dir / "scram-users")),
            }
        if not (self.libs_dir / ".complete").is_file():
            mvn = shutil.which(os.environ.get("MVN", "mvn"))
            if mvn is None:
                raise DevstackError(
                    f"Kafka {self.version} jars are not cached in {self.libs_dir} and Maven "
                    "(mvn) is not on PATH to fetch them"
                )
            self._run_script(bash, script, "fetch", env, fetch_timeout_s, "jar fetch (mvn)")
        # The script itself gives up after KAFKA_START_TIMEOUT (then stops the JVM and says
        # why); the margin covers formatting storage and that stop.
        self._run_script(bash, script, "start", env, timeout_s + _START_MARGIN_S, "start")
        if self.pid is None:
            raise DevstackError(
                f"Kafka {self.version} on {self.bootstrap}: {_SCRIPT} start reported the broker "
                f"ready, but pid file {self.pid_file} names no running {JVM_MARKER} JVM "
                f"(it exited right after, or was killed).\n{self._script_tail()}\n"
                f"{self._logs_tail()}"
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
                    f"{timeout_s:.0f}s ({_SCRIPT} {command} killed); {self._last_step()}\n"
                    f"{self._script_tail()}\n{self._logs_tail()}"
                ) from None
        if rc != 0:
            self._kill_leftover()
            raise DevstackError(
                f"Kafka {self.version} on {self.bootstrap}: {what} failed "
                f"({_SCRIPT} {command} exited {rc}):\n{self._script_tail()}"
            )

    def _script_tail(self) -> str:
        """Why the script failed: its own verdict lines (the JVM's exit status, what it was
        checking, ...), the error lines of the output, then the raw tail.

        A JVM stack trace easily pushes the one useful "Caused by" line out of a plain tail.
        """
        text = tail_file(self.script_log_path, 400)
        lines = text.splitlines()
        # "last lines of <file>:" headers only make sense above their lines, in the raw tail
        verdicts = [ln for ln in lines if ln.startswith(_VERDICT) and not ln.rstrip().endswith(":")]
        errors = [ln for ln in lines if _ERROR_LINE.search(ln) and not ln.startswith(_VERDICT)]
        parts = verdicts[-8:] or [f"({_SCRIPT} printed no verdict)"]
        if errors:
            parts += ["errors:", *dict.fromkeys(errors[-12:])]
        parts += [f"last lines of {self.script_log_path}:", *lines[-20:]]
        return "\n".join(parts)

    def _last_step(self) -> str:
        """What the script was doing (it logs every step and what it waits for)."""
        lines = tail_file(self.script_log_path, 400).splitlines()
        steps = [ln for ln in lines if ln.startswith(_VERDICT)]
        return f"its last step: {steps[-1]}" if steps else "it had logged no step yet"

    def _logs_tail(self) -> str:
        """The broker's own files: its stdout/stderr and server.log."""
        parts = []
        for path, n_lines in ((self.stdout_path, 15), (self.log_path, 20)):
            if path.exists() and not path.is_file():
                parts.append(f"{path}: not a regular file")  # reading a FIFO could block
                continue
            text = tail_file(path, n_lines)
            parts.append(f"last lines of {path}:\n{text}" if text else f"{path}: empty")
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
