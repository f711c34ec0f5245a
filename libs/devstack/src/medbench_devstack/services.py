"""The six MedBench services as local processes, each on its own free gRPC and metrics port."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from medbench_devstack.errors import DevstackError
from medbench_devstack.ports import LOOPBACK, free_ports
from medbench_devstack.processes import ManagedProcess


@dataclass(frozen=True)
class ServiceSpec:
    """A service name and the module run as `python -m module`."""

    name: str
    module: str

    @property
    def env_key(self) -> str:
        """Upper-case form used in MEDBENCH_PEERS__<NAME>."""
        return self.name.upper()


# Start order: dependencies first, the public gateway last.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("rotator", "rotator"),
    ServiceSpec("aggregator", "aggregator"),
    ServiceSpec("metric_scorer", "metric_scorer"),
    ServiceSpec("judge_scorer", "judge_scorer"),
    ServiceSpec("dispatcher", "dispatcher"),
    ServiceSpec("gateway", "gateway"),
)

# A refused connection otherwise backs off for a second or more before gRPC retries it.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]
_POLL_S = 0.05
_TAIL_LINES = 40
# Partners' endpoints on loopback, any port: a local stack's egress policy (see
# medbench_runtime.egress; the default allows public addresses on 80, 443, 8000-8999 only).
LOOPBACK_EGRESS = {
    "MEDBENCH_EGRESS__ALLOW_CIDRS": "127.0.0.0/8,::1/128",
    "MEDBENCH_EGRESS__PORTS": "1-65535",
}
# The services that seal and open partners' endpoint API keys, and the setting of their keys.
SECRETS_HOLDERS = frozenset({"gateway", "dispatcher"})
SECRETS_KEYS = "MEDBENCH_SECRETS__KEYS"
# The settings a user may give the local stack from the shell (`make run`: README "Pointing
# make run at a judge"), handed to the judge scorer only: every field of its JudgeSettings
# (judge_scorer/settings.py; a test keeps the two lists equal). Every other inherited
# MEDBENCH_* variable is dropped, so the stack never depends on the caller's shell otherwise;
# none of these is one the stack pins itself (ports, peers, Mongo, Kafka, credentials, egress).
JUDGE_SERVICE = "judge_scorer"
USER_JUDGE_SETTINGS = frozenset(
    f"MEDBENCH_JUDGE__{name.upper()}"
    for name in (
        "models",
        "panel_rule",
        "review_spread",
        "kappa_threshold",
        "min_ratings",
        "timeout_s",
        "max_attempts",
        "retry_base_delay_s",
        "retry_max_delay_s",
        "max_tokens",
        "batch_concurrency",
        "request_concurrency",
    )
)


def user_judge_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The judge settings among `environ` (USER_JUDGE_SETTINGS), names matched as the
    services' settings match them (case-insensitively), given upper-case."""
    return {k.upper(): v for k, v in environ.items() if k.upper() in USER_JUDGE_SETTINGS}


class ServiceStack:
    """Starts services in order, waits for gRPC health SERVING, supports kill and restart."""

    def __init__(
        self,
        work_dir: Path,
        mongo_uri: str,
        database: str,
        kafka_bootstrap: str,
        topic_prefix: str,
        extra_env: dict[str, str] | None = None,
        *,
        specs: Sequence[ServiceSpec] = SERVICES,
        service_env: dict[str, dict[str, str]] | None = None,
        health_credentials: dict[str, grpc.ChannelCredentials] | None = None,
        loopback_endpoints: bool = True,
        user_judge_settings: bool = False,
    ) -> None:
        """service_env: settings of single services on top of extra_env; health_credentials:
        TLS credentials to check a service's health with (a service serving TLS);
        loopback_endpoints: API mode may call endpoints on loopback, any port (LOOPBACK_EGRESS:
        the local model server of `make demo-llm`, the tests' fake endpoints); False keeps the
        production default (public addresses on the default ports only);
        user_judge_settings: the judge scorer takes the caller's USER_JUDGE_SETTINGS from the
        environment (`make run`), under extra_env and service_env; False (tests) drops them
        with every other inherited MEDBENCH_* variable."""
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise DevstackError(f"duplicate service names in {names}")
        self.work_dir = Path(work_dir).resolve()
        self.specs = tuple(specs)
        ports = free_ports(2 * len(self.specs))
        self._grpc_ports = {s.name: ports[2 * i] for i, s in enumerate(self.specs)}
        self._metrics_ports = {s.name: ports[2 * i + 1] for i, s in enumerate(self.specs)}
        # Inherited MEDBENCH_* settings would make the stack depend on the caller's shell
        # (the user's judge settings excepted, when asked for: below). Case-insensitively, as
        # the services' settings read them.
        base = {k: v for k, v in os.environ.items() if not k.upper().startswith("MEDBENCH_")}
        base["PYTHONUNBUFFERED"] = "1"
        # Credentials of this stack: the service token the services call each other with and
        # a maintainer key the gateway installs at start (tests and the demo create tenants
        # and partner keys with it). extra_env may pin them (make run keeps them in its state).
        pinned = extra_env or {}
        self.service_token = pinned.get("MEDBENCH_AUTH__SERVICE_TOKEN") or secrets.token_urlsafe(32)
        self.admin_key = pinned.get("MEDBENCH_AUTH__BOOTSTRAP_KEY") or (
            f"mbk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
        )
        # /metrics of every service answers only requests carrying this bearer token.
        self.metrics_token = pinned.get("MEDBENCH_METRICS_TOKEN") or secrets.token_urlsafe(32)
        base["MEDBENCH_AUTH__SERVICE_TOKEN"] = self.service_token
        base["MEDBENCH_AUTH__BOOTSTRAP_KEY"] = self.admin_key
        base["MEDBENCH_METRICS_TOKEN"] = self.metrics_token
        if loopback_endpoints:
            base.update(LOOPBACK_EGRESS)
        # The key-encryption key that seals partners' endpoint API keys ("<id>:<base64>"), given
        # only to the services that hold those keys, as in the chart.
        self.secrets_keys = pinned.get(SECRETS_KEYS) or (
            f"dev1:{base64.b64encode(secrets.token_bytes(32)).decode()}"
        )
        self._procs: dict[str, ManagedProcess] = {}
        self._health_credentials = dict(health_credentials or {})
        for spec in self.specs:
            env = dict(base)
            env.update(
                {
                    "MEDBENCH_SERVICE_NAME": spec.name,
                    "MEDBENCH_GRPC_PORT": str(self._grpc_ports[spec.name]),
                    "MEDBENCH_METRICS_PORT": str(self._metrics_ports[spec.name]),
                    "MEDBENCH_MONGO__URI": mongo_uri,
                    "MEDBENCH_MONGO__DATABASE": database,
                    "MEDBENCH_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
                    "MEDBENCH_KAFKA__TOPIC_PREFIX": topic_prefix,
                    "MEDBENCH_LOG_LEVEL": "INFO",
                }
            )
            for peer in self.specs:
                if peer.name != spec.name:
                    env[f"MEDBENCH_PEERS__{peer.env_key}"] = (
                        f"{LOOPBACK}:{self._grpc_ports[peer.name]}"
                    )
            if user_judge_settings and spec.name == JUDGE_SERVICE:
                env.update(user_judge_env(os.environ))
            env.update(extra_env or {})
            env.pop(SECRETS_KEYS, None)
            if spec.name in SECRETS_HOLDERS:
                env[SECRETS_KEYS] = self.secrets_keys
            env.update((service_env or {}).get(spec.name, {}))
            self._procs[spec.name] = ManagedProcess(
                spec.name,
                [sys.executable, "-m", spec.module],
                env,
                self.work_dir / f"{spec.name}.log",
                cwd=self.work_dir,
            )

    def __repr__(self) -> str:
        return f"ServiceStack({[(n, p.pid, p.alive()) for n, p in self._procs.items()]})"

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def _spec_process(self, name: str) -> ManagedProcess:
        try:
            return self._procs[name]
        except KeyError:
            raise DevstackError(f"unknown service {name!r}; known: {self.names}") from None

    def process(self, name: str) -> ManagedProcess:
        return self._spec_process(name)

    def address(self, name: str) -> str:
        """`127.0.0.1:<grpc port>` of a service."""
        return f"{LOOPBACK}:{self.grpc_port(name)}"

    def grpc_port(self, name: str) -> int:
        self._spec_process(name)
        return self._grpc_ports[name]

    def metrics_port(self, name: str) -> int:
        self._spec_process(name)
        return self._metrics_ports[name]

    def metrics_url(self, name: str) -> str:
        """`http://127.0.0.1:<metrics port>/metrics` of a service (send metrics_token)."""
        return f"http://{LOOPBACK}:{self.metrics_port(name)}/metrics"

    def scrape(self, name: str, timeout_s: float = 5) -> str:
        """A service's /metrics text, read with the stack's metrics token."""
        request = urllib.request.Request(
            self.metrics_url(name), headers={"Authorization": f"Bearer {self.metrics_token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return str(response.read().decode())

    def env(self, name: str) -> dict[str, str]:
        """The environment a service is started with (a copy)."""
        return dict(self._spec_process(name).env)

    def log_path(self, name: str) -> Path:
        return self._spec_process(name).log_path

    def start(self, timeout_s: float = 60) -> None:
        """Start every service in order, then wait until all report SERVING.

        On failure everything started is stopped and DevstackError names the service.
        """
        self.work_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        try:
            for spec in self.specs:
                self._procs[spec.name].start()
            # One shared deadline: the services boot concurrently, so waiting in order is free.
            for spec in self.specs:
                self._wait_serving(spec.name, deadline, timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_serving(self, name: str, deadline: float, timeout_s: float) -> None:
        proc = self._procs[name]
        request = health_pb2.HealthCheckRequest(service="")
        last = "no answer yet"
        credentials = self._health_credentials.get(name)
        channel = (
            grpc.secure_channel(self.address(name), credentials, options=_CHANNEL_OPTIONS)
            if credentials is not None
            else grpc.insecure_channel(self.address(name), options=_CHANNEL_OPTIONS)
        )
        with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if not proc.alive():
                    raise DevstackError(
                        f"service {name} exited with {proc.returncode} before reporting "
                        f"SERVING; last lines of {proc.log_path}:\n{proc.tail(_TAIL_LINES)}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DevstackError(
                        f"service {name} not SERVING on {self.address(name)} within {timeout_s}s "
                        f"(last health answer: {last}); last lines of {proc.log_path}:\n"
                        f"{proc.tail(_TAIL_LINES)}"
                    )
                try:
                    # wait_for_ready rides out "connection refused" until the port is bound.
                    reply = stub.Check(request, timeout=min(0.5, remaining), wait_for_ready=True)
                except grpc.RpcError as exc:
                    code = exc.code() if isinstance(exc, grpc.Call) else None
                    last = code.name if code is not None else repr(exc)
                    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                        continue
                else:
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                    last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                time.sleep(_POLL_S)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal one service's process group (default SIGKILL, i.e. a crash)."""
        self._spec_process(name).kill(sig)

    def restart(self, name: str, timeout_s: float = 30) -> None:
        """Stop (if still running) and start one service on the same ports; wait SERVING."""
        proc = self._spec_process(name)
        # The old process must be gone: gRPC binds with SO_REUSEPORT, so two could share a port.
        proc.terminate(10)
        proc.start()
        self._wait_serving(name, time.monotonic() + timeout_s, timeout_s)

    def stop(self, timeout_s: float = 10) -> None:
        """SIGTERM all (reverse start order), wait up to `timeout_s`, SIGKILL leftovers."""
        procs = [self._procs[s.name] for s in reversed(self.specs)]
        for proc in procs:
            if proc.alive():
                proc.kill(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            proc.wait_exit(deadline - time.monotonic())
        for proc in procs:
            proc.terminate(0)

    def __enter__(self) -> ServiceStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
