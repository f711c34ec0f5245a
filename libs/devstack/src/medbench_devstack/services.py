"""The six MedBench services as local processes, each on its own free gRPC and metrics port."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
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
from medbench_runtime.auth import PLATFORM_SERVICES, SERVICE_TOKEN_PREFIX, hash_secret


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
# Only the gateway holds the bootstrap maintainer key (it installs it at start), as in the chart.
BOOTSTRAP_KEY = "MEDBENCH_AUTH__BOOTSTRAP_KEY"
BOOTSTRAP_HOLDER = "gateway"
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


# Partitions of every topic when a service runs as several replicas: at least the largest
# replica count (a consumer group's replicas beyond the partitions would sit idle), and not
# fewer than the services' default (KafkaSettings.partitions).
PARTITIONS = "MEDBENCH_KAFKA__PARTITIONS"
DEFAULT_PARTITIONS = 3


def replica_name(service: str, index: int) -> str:
    """The process name of a service's index-th replica (from 1): the service's own name for
    the first, `<service>-<index>` for the others (`rotator`, `rotator-2`)."""
    return service if index == 1 else f"{service}-{index}"


def peer_target(addresses: Sequence[str]) -> str:
    """The gRPC target of a peer's replicas at these `127.0.0.1:<port>` addresses: the address
    itself for one, gRPC's static list `ipv4:a,b` for several (the services' channels balance
    round robin over it: medbench_runtime.grpc_clients)."""
    if len(addresses) == 1:
        return addresses[0]
    return "ipv4:" + ",".join(addresses)


def derived_service_token(seed: str, service: str) -> str:
    """The local stack's token of one service ("mbs_<service>_<43 characters>"), derived from
    the stack's seed so that `make run` keeps them across restarts in one pinned value."""
    mac = hmac.new(seed.encode(), f"service-token:{service}".encode(), hashlib.sha256).digest()
    return f"{SERVICE_TOKEN_PREFIX}{service}_{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def user_judge_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The judge settings among `environ` (USER_JUDGE_SETTINGS), names matched as the
    services' settings match them (case-insensitively), given upper-case."""
    return {k.upper(): v for k, v in environ.items() if k.upper() in USER_JUDGE_SETTINGS}


# Who decides key-point recall (metric scorer's MEDBENCH_KEY_POINT_RECALL), as the chart decides
# it: the judge when the judge scorer is given judge models, else the metric scorer's labelled
# lexical fallback (README "Metrics"). A caller's extra_env or service_env may still set it.
KEY_POINT_RECALL = "MEDBENCH_KEY_POINT_RECALL"
KEY_POINT_SERVICE = "metric_scorer"


def judge_configured(judge_env: Mapping[str, str]) -> bool:
    """Whether these judge scorer settings name a judge model (MEDBENCH_JUDGE__MODELS other
    than unset or an empty list; a value that is not JSON counts: the judge scorer refuses to
    start on it and says why)."""
    raw = judge_env.get("MEDBENCH_JUDGE__MODELS", "").strip()
    if not raw:
        return False
    try:
        return bool(json.loads(raw))
    except ValueError:
        return True


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
        replicas: Mapping[str, int] | None = None,
    ) -> None:
        """service_env: settings of single services on top of extra_env; health_credentials:
        TLS credentials to check a service's health with (a service serving TLS);
        loopback_endpoints: API mode may call endpoints on loopback, any port (LOOPBACK_EGRESS:
        the local model server of `make demo-llm`, the tests' fake endpoints); False keeps the
        production default (public addresses on the default ports only);
        user_judge_settings: the judge scorer takes the caller's USER_JUDGE_SETTINGS from the
        environment (`make run`), under extra_env and service_env; False (tests) drops them
        with every other inherited MEDBENCH_* variable;
        replicas: how many processes run each service (default one; README "Balancing and
        replicas"): the first under the service's name, the others as `<name>-2`, `<name>-3`,
        each on its own ports with the same settings (so one consumer group), its peers given
        the addresses of all of a peer's replicas; topics get at least as many partitions."""
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise DevstackError(f"duplicate service names in {names}")
        counts = dict.fromkeys(names, 1)
        for name, count in (replicas or {}).items():
            if name not in counts:
                raise DevstackError(f"replicas of unknown service {name!r}; known: {names}")
            if count < 1:
                raise DevstackError(f"replicas of {name}: {count}; at least 1")
            counts[name] = count
        self.work_dir = Path(work_dir).resolve()
        self.specs = tuple(specs)
        self._replicas = {
            spec.name: [replica_name(spec.name, i) for i in range(1, counts[spec.name] + 1)]
            for spec in self.specs
        }
        # Every process in start order: a service's replicas one after the other.
        self._order = [name for spec in self.specs for name in self._replicas[spec.name]]
        if len(set(self._order)) != len(self._order):
            raise DevstackError(f"replica names clash with service names: {self._order}")
        ports = free_ports(2 * len(self._order))
        self._grpc_ports = {name: ports[2 * i] for i, name in enumerate(self._order)}
        self._metrics_ports = {name: ports[2 * i + 1] for i, name in enumerate(self._order)}
        # Inherited MEDBENCH_* settings would make the stack depend on the caller's shell
        # (the user's judge settings excepted, when asked for: below). Case-insensitively, as
        # the services' settings read them.
        base = {k: v for k, v in os.environ.items() if not k.upper().startswith("MEDBENCH_")}
        base["PYTHONUNBUFFERED"] = "1"
        # Credentials of this stack: each service's own token for its calls to the others
        # (derived from one seed; every service admits them by their SHA-256 only) and a
        # maintainer key only the gateway holds and installs at start (tests and the demo
        # create tenants and partner keys with it). extra_env may pin the seed and the key
        # (make run keeps them in its state).
        pinned = extra_env or {}
        self.service_token_seed = pinned.get(
            "MEDBENCH_AUTH__SERVICE_TOKEN"
        ) or secrets.token_urlsafe(32)
        self.service_tokens = {
            name: derived_service_token(self.service_token_seed, name) for name in PLATFORM_SERVICES
        }
        # The gateway's: the widest service caller (tests call service RPCs with it).
        self.service_token = self.service_tokens["gateway"]
        self.admin_key = pinned.get("MEDBENCH_AUTH__BOOTSTRAP_KEY") or (
            f"mbk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
        )
        # /metrics of every service answers only requests carrying this bearer token.
        self.metrics_token = pinned.get("MEDBENCH_METRICS_TOKEN") or secrets.token_urlsafe(32)
        base["MEDBENCH_AUTH__SERVICE_TOKEN_HASHES"] = json.dumps(
            {name: hash_secret(token) for name, token in self.service_tokens.items()}
        )
        base["MEDBENCH_METRICS_TOKEN"] = self.metrics_token
        if loopback_endpoints:
            base.update(LOOPBACK_EGRESS)
        most = max(counts.values())
        if most > 1:
            given = (extra_env or {}).get(PARTITIONS)
            if given is None:
                base[PARTITIONS] = str(max(most, DEFAULT_PARTITIONS))
            elif int(given) < most:
                raise DevstackError(
                    f"{PARTITIONS}={given} is fewer than the {most} replicas of a service"
                )
        # The key-encryption key that seals partners' endpoint API keys ("<id>:<base64>"), given
        # only to the services that hold those keys, as in the chart.
        self.secrets_keys = pinned.get(SECRETS_KEYS) or (
            f"dev1:{base64.b64encode(secrets.token_bytes(32)).decode()}"
        )
        self._procs: dict[str, ManagedProcess] = {}
        self._health_credentials = dict(health_credentials or {})
        judge_env = {
            **(user_judge_env(os.environ) if user_judge_settings else {}),
            **(extra_env or {}),
            **(service_env or {}).get(JUDGE_SERVICE, {}),
        }
        key_point_recall = (
            "judge" if JUDGE_SERVICE in names and judge_configured(judge_env) else "lexical"
        )
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
                    env[f"MEDBENCH_PEERS__{peer.env_key}"] = self.target(peer.name)
            if user_judge_settings and spec.name == JUDGE_SERVICE:
                env.update(user_judge_env(os.environ))
            if spec.name == KEY_POINT_SERVICE:
                env[KEY_POINT_RECALL] = key_point_recall
            env.update(extra_env or {})
            env["MEDBENCH_AUTH__SERVICE_TOKEN"] = self.service_tokens.get(spec.name, "")
            env.pop(BOOTSTRAP_KEY, None)
            if spec.name == BOOTSTRAP_HOLDER:
                env[BOOTSTRAP_KEY] = self.admin_key
            env.pop(SECRETS_KEYS, None)
            if spec.name in SECRETS_HOLDERS:
                env[SECRETS_KEYS] = self.secrets_keys
            env.update((service_env or {}).get(spec.name, {}))
            for name in self._replicas[spec.name]:
                if name != spec.name:
                    # Its own ports and Kafka member id (static membership: two members with
                    # one id would fence each other); everything else as the first replica.
                    env = {
                        **env,
                        "MEDBENCH_GRPC_PORT": str(self._grpc_ports[name]),
                        "MEDBENCH_METRICS_PORT": str(self._metrics_ports[name]),
                        "MEDBENCH_INSTANCE_ID": f"{name}@{socket.gethostname()}",
                    }
                self._procs[name] = ManagedProcess(
                    name,
                    [sys.executable, "-m", spec.module],
                    env,
                    self.work_dir / f"{name}.log",
                    cwd=self.work_dir,
                )

    def __repr__(self) -> str:
        return f"ServiceStack({[(n, p.pid, p.alive()) for n, p in self._procs.items()]})"

    @property
    def names(self) -> list[str]:
        """Every process of the stack in start order (a service's replicas included)."""
        return list(self._order)

    def replicas(self, service: str) -> list[str]:
        """The process names of a service's replicas (`[service]` when it runs once)."""
        try:
            return list(self._replicas[service])
        except KeyError:
            known = [spec.name for spec in self.specs]
            raise DevstackError(f"unknown service {service!r}; known: {known}") from None

    def target(self, service: str) -> str:
        """The gRPC target of all of a service's replicas, as its peers are given it:
        `127.0.0.1:<port>` for one, `ipv4:127.0.0.1:<p1>,127.0.0.1:<p2>` for several."""
        return peer_target([f"{LOOPBACK}:{self._grpc_ports[n]}" for n in self.replicas(service)])

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
            for name in self._order:
                self._procs[name].start()
            # One shared deadline: the services boot concurrently, so waiting in order is free.
            for name in self._order:
                self._wait_serving(name, deadline, timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_serving(self, name: str, deadline: float, timeout_s: float) -> None:
        proc = self._procs[name]
        request = health_pb2.HealthCheckRequest(service="")
        last = "no answer yet"
        # A replica is checked as its service is.
        service = next(s for s, names in self._replicas.items() if name in names)
        credentials = self._health_credentials.get(name, self._health_credentials.get(service))
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
        procs = [self._procs[name] for name in reversed(self._order)]
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
