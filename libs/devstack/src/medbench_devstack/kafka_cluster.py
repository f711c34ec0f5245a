"""A KRaft Kafka cluster on loopback: three combined controller+broker nodes, each a
kafka-test-broker.sh broker (the single broker's recipe and jar cache) with its own ports and
data dir, one cluster id and one controller quorum.

Topics get 3 replicas by default and take an acks=all write only while 2 replicas are in sync
(``min.insync.replicas``); a replica that fell out of sync never becomes leader
(``unclean.leader.election.enable=false``), so losing one node loses no acknowledged write. A
node can be killed and restarted by id, and the leader and in-sync replicas of a partition read,
for tests and the chaos rig (README "Tests").
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from medbench_devstack.errors import DevstackError
from medbench_devstack.kafka import (
    DEFAULT_MESSAGE_MAX_BYTES,
    JVM_MARKER,
    KAFKA_VERSION,
    ClusterMembership,
    KafkaBroker,
)
from medbench_devstack.ports import LOOPBACK, free_ports
from medbench_devstack.processes import pid_cmdline

SIZE = 3
MIN_INSYNC_REPLICAS = 2
# The controller fences a silent node after this long and moves its leaderships: Kafka's default
# is 9 s; a test cluster on loopback has no network to be patient with (heartbeats every 1 s).
BROKER_SESSION_TIMEOUT_MS = 4000


@dataclass(frozen=True)
class PartitionState:
    """A partition as the cluster's metadata shows it: its leader (None while it has none), its
    replicas and the replicas in sync with the leader."""

    topic: str
    partition: int
    leader: int | None
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes in unpadded URL-safe base64, never beginning with
    '-' (as the script makes one)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class KafkaCluster:
    """``size`` KRaft nodes (node ids 1..size), every one a controller and a broker."""

    def __init__(
        self,
        work_dir: Path,
        size: int = SIZE,
        *,
        min_insync_replicas: int = MIN_INSYNC_REPLICAS,
        broker_session_timeout_ms: int = BROKER_SESSION_TIMEOUT_MS,
        version: str = KAFKA_VERSION,
        message_max_bytes: int = DEFAULT_MESSAGE_MAX_BYTES,
    ) -> None:
        if size < 1 or not 1 <= min_insync_replicas <= size:
            raise DevstackError(
                f"a cluster of {size} node(s) with min.insync.replicas {min_insync_replicas}: "
                "need size >= 1 and 1 <= min.insync.replicas <= size"
            )
        self.work_dir = Path(work_dir).resolve()
        self.size = size
        self.replication_factor = size
        self.min_insync_replicas = min_insync_replicas
        self.cluster_id = new_cluster_id()
        ports = free_ports(2 * size)
        client_ports = ports[:size]
        controller_ports = ports[size:]
        voters = ",".join(f"{i + 1}@{LOOPBACK}:{p}" for i, p in enumerate(controller_ports))
        self.nodes: dict[int, KafkaBroker] = {}
        for i in range(size):
            node_id = i + 1
            self.nodes[node_id] = KafkaBroker(
                self.work_dir / f"node-{node_id}",
                client_ports[i],
                controller_ports[i],
                version=version,
                message_max_bytes=message_max_bytes,
                membership=ClusterMembership(
                    node_id=node_id,
                    quorum_voters=voters,
                    cluster_id=self.cluster_id,
                    replication_factor=size,
                    min_insync_replicas=min_insync_replicas,
                    broker_session_timeout_ms=broker_session_timeout_ms,
                ),
            )
        self.startup_s: float | None = None
        self._admin: Any = None
        self._admin_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KafkaCluster({self.bootstrap}, alive={self.alive_nodes()})"

    @property
    def bootstrap(self) -> str:
        """Every node's `host:port`, comma-separated (clients find the rest from any one)."""
        return ",".join(node.bootstrap for node in self.nodes.values())

    def client_env(self) -> dict[str, str]:
        """The MEDBENCH_KAFKA__* settings of a service on this cluster: every node to bootstrap
        from, and topics created with one replica per node."""
        return {
            "MEDBENCH_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "MEDBENCH_KAFKA__REPLICATION_FACTOR": str(self.replication_factor),
        }

    def node(self, node_id: int) -> KafkaBroker:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise DevstackError(f"no node {node_id}; nodes: {sorted(self.nodes)}") from None

    def alive_nodes(self) -> list[int]:
        return [i for i, node in self.nodes.items() if node.alive()]

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout_s: float = 120) -> None:
        """Starts every node at once (a node is ready only once a quorum of controllers is up,
        so they cannot start one after another) and waits until the cluster shows them all;
        on failure every node is stopped and DevstackError says which failed and why."""
        t0 = time.monotonic()
        with ThreadPoolExecutor(self.size) as pool:
            futures = {
                i: pool.submit(node.start, timeout_s, fresh=True) for i, node in self.nodes.items()
            }
            failures = {}
            for i, future in futures.items():
                try:
                    future.result()
                except Exception as exc:  # noqa: BLE001 - reported together below
                    failures[i] = exc
        if failures:
            self.stop()
            raise DevstackError(
                "Kafka cluster: node(s) "
                + ", ".join(str(i) for i in sorted(failures))
                + " did not start:\n"
                + "\n".join(f"node {i}: {exc}" for i, exc in sorted(failures.items()))
            )
        try:
            self.wait_brokers(set(self.nodes), timeout_s)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0

    def kill(self, node_id: int, sig: int = signal.SIGKILL, timeout_s: float = 15) -> None:
        """Signals one node's JVM (default SIGKILL, a crash: no controlled shutdown, its
        leaderships move once the controller's session with it expires); with SIGKILL, waits
        until the process is gone."""
        node = self.node(node_id)
        pid = node.pid
        if pid is None:
            raise DevstackError(f"node {node_id} is not running")
        os.kill(pid, sig)
        if sig != signal.SIGKILL:
            return
        deadline = time.monotonic() + timeout_s
        while (cmdline := pid_cmdline(pid)) is not None and JVM_MARKER in cmdline:
            if time.monotonic() > deadline:
                raise DevstackError(
                    f"node {node_id} (pid {pid}) still running {timeout_s}s after kill"
                )
            time.sleep(0.05)

    def restart(self, node_id: int, timeout_s: float = 120) -> None:
        """Starts a stopped or killed node again on its ports with its data (if it is still
        running, it is stopped first); returns once it serves clients."""
        node = self.node(node_id)
        if node.alive():
            node.stop()
        node.start(timeout_s, fresh=False)

    def stop(self, timeout_s: float = 10) -> None:
        """Stops every node at once (one by one, the last would wait for a quorum to shut down
        in order); a no-op for nodes not running."""
        self._close_admin()
        with ThreadPoolExecutor(self.size) as pool:
            list(pool.map(lambda node: node.stop(timeout_s), self.nodes.values()))

    def __enter__(self) -> KafkaCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the cluster shows ---------------------------------------------------------------

    def _call(self, fn: Callable[[Any], Any]) -> Any:
        """Runs ``fn(admin)`` on a cached admin client, made again after an error (a node it
        was talking to may have been killed)."""
        with self._admin_lock:
            if self._admin is None:
                self._admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap,
                    client_id="medbench-devstack-cluster",
                    request_timeout_ms=5000,
                )
            try:
                return fn(self._admin)
            except Exception:
                self._close_admin_locked()
                raise

    def _close_admin(self) -> None:
        with self._admin_lock:
            self._close_admin_locked()

    def _close_admin_locked(self) -> None:
        if self._admin is not None:
            # A client whose broker was killed may not close cleanly.
            with contextlib.suppress(Exception):
                self._admin.close()
            self._admin = None

    def brokers(self) -> set[int]:
        """The node ids the cluster's metadata lists as live brokers (fenced ones left out:
        a killed node stays listed, fenced, once its session expired)."""
        described = self._call(lambda admin: admin.describe_cluster())
        return {int(b["broker_id"]) for b in described.get("brokers", []) if not b.get("is_fenced")}

    def partitions(self, topics: Iterable[str]) -> list[PartitionState]:
        """Every partition of ``topics`` (leader -1 in the metadata is None here)."""
        described = self._call(lambda admin: admin.describe_topics(list(topics)))
        out = []
        for topic in described:
            name = str(topic.get("name") or topic.get("topic"))
            for p in topic.get("partitions") or []:
                leader = int(p.get("leader_id", -1))
                out.append(
                    PartitionState(
                        name,
                        int(p["partition_index"]),
                        leader if leader >= 0 else None,
                        tuple(int(r) for r in p.get("replica_nodes", [])),
                        tuple(int(r) for r in p.get("isr_nodes", [])),
                    )
                )
        return sorted(out, key=lambda s: (s.topic, s.partition))

    def partition(self, topic: str, partition: int) -> PartitionState:
        for state in self.partitions([topic]):
            if state.partition == partition:
                return state
        raise DevstackError(f"{topic} has no partition {partition}")

    def leader(self, topic: str, partition: int) -> int | None:
        """The node leading the partition (None while it has no leader)."""
        return self.partition(topic, partition).leader

    # -- waiting ------------------------------------------------------------------------------

    def _wait(self, what: str, check: Callable[[], bool], timeout_s: float) -> float:
        """Polls ``check`` (errors count as not yet) until true; the seconds it took."""
        t0 = time.monotonic()
        last = "no answer yet"
        while True:
            try:
                if check():
                    return time.monotonic() - t0
                last = "not yet"
            except (KafkaError, OSError, DevstackError) as exc:
                last = repr(exc)
            if time.monotonic() - t0 > timeout_s:
                raise DevstackError(f"Kafka cluster: {what} not within {timeout_s:.0f}s ({last})")
            time.sleep(0.1)

    def wait_brokers(self, expected: set[int], timeout_s: float = 60) -> float:
        """Waits until the live brokers are exactly ``expected``."""
        return self._wait(
            f"brokers {sorted(expected)} live", lambda: self.brokers() == expected, timeout_s
        )

    def wait_new_leader(self, topic: str, partition: int, old: int, timeout_s: float = 60) -> float:
        """Waits until the partition has a leader other than ``old``; the seconds it took."""

        def moved() -> bool:
            leader = self.leader(topic, partition)
            return leader is not None and leader != old

        return self._wait(f"a new leader of {topic}[{partition}] (was {old})", moved, timeout_s)

    def wait_in_sync(self, topics: Iterable[str], timeout_s: float = 120) -> float:
        """Waits until every partition of ``topics`` has all its replicas in sync again (a
        restarted node caught up)."""
        names = list(topics)

        def whole() -> bool:
            states = self.partitions(names)
            return bool(states) and all(
                s.leader is not None and set(s.isr) == set(s.replicas) for s in states
            )

        return self._wait(f"every replica of {names} in sync", whole, timeout_s)
