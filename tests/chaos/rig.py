"""Chaos: faults injected while a real evaluation runs; the report must equal a clean run's.

The rig owns its Kafka (one broker, or a 3-node cluster) and Mongo-wire server (it restarts
them), and the six services. Per mode, one clean evaluation, then the same evaluation again
while, one after another and each at a random moment of its own stretch of the run: on one
broker (FAULTS) kill -9 of each service (then a restart), a Kafka broker restart, a Mongo-wire
server restart, a consumer paused past its session timeout and poison events; on the cluster
(CLUSTER_FAULTS) kill -9 of the node leading the busiest partitions (twice), kill -9 of one
replica of each service (of the service itself when it runs once), every service rolled (SIGTERM,
drained, started again) and a consumer paused past its session timeout (its group rebalances).
The run is handed in in stretches (upload batches, or the endpoint's answers in API mode), one
per fault, so every fault lands on work in progress; a fault has recovered when every item
handed in so far is scored. At the end: the report equals the clean one (nothing lost, nothing
counted twice), and the submission is COMPLETED (nothing stuck).
"""

from __future__ import annotations

import asyncio
import inspect
import random
import signal
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from kafka import KafkaConsumer, TopicPartition
from pymongo import AsyncMongoClient

from medbench.common.v1 import common_pb2
from medbench.report.v1 import report_service_pb2, report_service_pb2_grpc
from medbench.submission.v1 import submission_events_pb2, submission_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client.api import AdminClient, channel
from medbench_client.bank_files import import_item
from medbench_devstack.kafka import KafkaBroker
from medbench_devstack.kafka_cluster import KafkaCluster
from medbench_devstack.mongo import MongoWireServer
from medbench_devstack.services import ServiceStack
from medbench_messaging import topics
from medbench_messaging.publisher import KafkaPublisher, Outgoing
from medbench_runtime.settings import KafkaSettings
from rotator.core.options import parse_options
from rotator.core.synthetic import synthetic_answers, synthetic_items
from tests.e2e.fake_endpoint import FakeEndpoint, Reply, Script
from tests.e2e.harness import Evaluation, checked_report, comparable, partner_client

SERVICES = ["gateway", "rotator", "dispatcher", "metric_scorer", "judge_scorer", "aggregator"]
FAULTS = [
    *(f"kill -9 {name}" for name in SERVICES),
    "restart kafka",
    "restart mongo",
    "pause metric_scorer",
    # Events no worker can process: one at the head of every outbox (too large for any record)
    # and undecodable bytes on every topic. They are quarantined; the run goes on.
    "poison events",
]
# On the 3-node cluster: what a cluster and replicas of the services must ride out.
KAFKA_LEADER = "kill -9 kafka leader"
ROLL = "roll every service"
CLUSTER_FAULTS = [
    f"{KAFKA_LEADER} #1",
    f"{KAFKA_LEADER} #2",
    *(f"kill -9 {name}" for name in SERVICES),
    ROLL,
    "pause metric_scorer",
]
# Replicas of each service on the cluster, when the devstack runs replicas (ServiceStack's
# `replicas`); otherwise every service runs once and "kill -9" kills the service itself.
CLUSTER_REPLICAS = 2
# The busiest partitions (most records written over BUSY_WINDOW_S, then most records) whose
# leaders are counted to pick the node to kill.
BUSIEST = 3
BUSY_WINDOW_S = 2.0
RELAYING = ("gateway", "rotator", "dispatcher", "aggregator")
TENANT = "chaos-hospital"
COMPLETED = submission_pb2.SUBMISSION_STATE_COMPLETED
# Consumers' session timeout (MEDBENCH_KAFKA__SESSION_TIMEOUT_MS); a pause outlasts it.
SESSION_TIMEOUT_S = 10.0
PAUSE_S = SESSION_TIMEOUT_S + 4
# A kill -9'd service stays down this long before its restart (work piles up meanwhile).
DOWN_S = 1.0
RECOVERY_TIMEOUT_S = 180.0


@dataclass
class FaultRecord:
    mode: str
    fault: str
    # Seconds from the start of the run to the fault, and from the fault to recovery (None if
    # the platform never caught up within RECOVERY_TIMEOUT_S).
    at_s: float
    recovered_s: float | None
    # What the fault did and how its parts went (which node, election and resync times, ...).
    detail: str = ""


@dataclass
class ModeResult:
    mode: str
    items: int
    clean_s: float
    chaos_s: float
    equal: bool
    state: str
    scored: int
    expected: int
    faults: list[FaultRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.equal
            and self.state == "SUBMISSION_STATE_COMPLETED"
            and self.scored == self.expected
            and all(f.recovered_s is not None for f in self.faults)
        )


class Gate:
    """What the API-mode endpoint may answer: questions up to a budget (raised stretch by
    stretch); a question already let through is answered again at once (a resend)."""

    def __init__(self) -> None:
        self._budget = 0
        self._admitted: set[str] = set()
        self._changed = threading.Condition()

    def release(self, budget: int) -> None:
        with self._changed:
            self._budget = budget
            self._changed.notify_all()

    def wait(self, question: str, timeout_s: float = 50.0) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while question not in self._admitted and len(self._admitted) >= self._budget:
                if not self._changed.wait(max(0.0, deadline - time.monotonic())):
                    return False
            self._admitted.add(question)
            return True


def model_answer(question: str) -> str:
    """The API-mode model: a fixed choice per question text (so two runs answer alike)."""
    shown = parse_options(question)
    if shown is None:
        return "2"  # the preflight's tiny prompt
    return f"<{shown.letters[zlib.crc32(question.encode()) % len(shown.letters)]}>"


def stack_has_replicas() -> bool:
    """Whether the devstack can run several replicas of a service."""
    return "replicas" in inspect.signature(ServiceStack.__init__).parameters


class ChaosRig:
    """Kafka (``kafka``: "broker", one node, or "cluster", three), the Mongo-wire server and
    the six services (``replicas`` of each, when the devstack runs replicas) in ``work``; a
    pool of ``items`` synthetic items on both boards."""

    def __init__(
        self, work: Path, items: int, seed: int = 7, *, kafka: str = "broker", replicas: int = 1
    ) -> None:
        if kafka not in ("broker", "cluster"):
            raise ValueError(f"kafka must be broker or cluster, got {kafka!r}")
        if replicas > 1 and not stack_has_replicas():
            raise ValueError("this devstack runs every service once (no ServiceStack replicas)")
        self.work = work
        self.items = items
        self.rng = random.Random(seed)
        self.kafka: KafkaBroker | KafkaCluster = (
            KafkaCluster(work / "kafka-cluster")
            if kafka == "cluster"
            else KafkaBroker(work / "kafka")
        )
        self.replicas = replicas
        self.details: dict[str, str] = {}
        self.mongo = MongoWireServer(work / "mongo")
        self.stack: ServiceStack | None = None
        self.rows = list(synthetic_items(items, seed=seed))
        self.answers = {
            a["item_id"]: a["answer"] for a in synthetic_answers(self.rows, 0.6, seed=seed)
        }

    def __enter__(self) -> ChaosRig:
        self.kafka.start()
        self.mongo.start()
        env = {"MEDBENCH_KAFKA__SESSION_TIMEOUT_MS": str(int(SESSION_TIMEOUT_S * 1000))}
        if isinstance(self.kafka, KafkaCluster):
            env |= self.kafka.client_env()
        more: dict[str, Any] = {}
        if self.replicas > 1:
            more["replicas"] = {name: self.replicas for name in SERVICES}
        self.stack = ServiceStack(
            self.work / "services",
            self.mongo.uri,
            "chaos",
            self.kafka.bootstrap,
            "chaos.",
            extra_env=env,
            **more,
        )
        try:
            self.stack.start(timeout_s=90)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stack is not None:
            self.stack.stop()
        self.mongo.stop()
        self.kafka.stop()

    @property
    def services(self) -> ServiceStack:
        assert self.stack is not None
        return self.stack

    async def load(self) -> None:
        admin = AdminClient(channel(self.services.address("rotator"), self.services.admin_key))
        await admin.import_items([import_item(r) for r in self.rows], batch=2000)
        await admin.publish("chaos-upload", board=taskpool_pb2.BOARD_UPLOAD)
        await admin.publish("chaos-api", board=taskpool_pb2.BOARD_API)

    # -- faults --------------------------------------------------------------------------

    def _replicas(self, service: str) -> list[str]:
        return self.services.replicas(service) if self.replicas > 1 else [service]

    async def inject(self, fault: str) -> None:
        """Does the fault and puts things back (the platform must recover by itself)."""
        verb, target = fault.rsplit(" ", 1)
        stack = self.services
        if fault.startswith(KAFKA_LEADER):
            await self._kill_kafka_leader(fault)
        elif fault == ROLL:
            await self._roll(fault)
        elif verb == "kill -9":
            # One replica of the service (the last): the others carry on meanwhile.
            victim = self._replicas(target)[-1]
            stack.kill(victim)
            await asyncio.sleep(DOWN_S)
            await asyncio.to_thread(stack.restart, victim, 90)
            self.details[fault] = (
                f"{victim} of {len(self._replicas(target))}" if self.replicas > 1 else ""
            )
        elif fault == "restart kafka":
            broker = self.kafka
            assert isinstance(broker, KafkaBroker), "a whole-broker restart is the single broker's"
            await asyncio.to_thread(broker.restart)
        elif fault == "restart mongo":
            await asyncio.to_thread(self.mongo.restart)
        elif fault == "poison events":
            await self._poison()
        elif verb == "pause":
            paused = self._replicas(target)[0]
            stack.kill(paused, signal.SIGSTOP)
            try:
                await asyncio.sleep(PAUSE_S)
            finally:
                stack.kill(paused, signal.SIGCONT)
            self.details[fault] = (
                f"{paused} of {len(self._replicas(target))} stopped {PAUSE_S:.0f} s "
                f"(session timeout {SESSION_TIMEOUT_S:.0f} s)"
            )
        else:
            raise ValueError(f"unknown fault {fault!r}")

    def _busiest_leader(self, cluster: KafkaCluster) -> tuple[int, list[str]]:
        """The node leading most of the BUSIEST partitions of the run's topics (the most
        records written during BUSY_WINDOW_S: where this run's submission is; the most records
        as a tie-break), and those partitions."""
        names = [t.full_name("chaos.") for t in topics.ALL_TOPICS]
        states = cluster.partitions(names)
        partitions = [TopicPartition(s.topic, s.partition) for s in states]
        consumer = KafkaConsumer(bootstrap_servers=cluster.bootstrap, request_timeout_ms=10_000)
        try:
            before = consumer.end_offsets(partitions)
            time.sleep(BUSY_WINDOW_S)
            ends = consumer.end_offsets(partitions)
        finally:
            consumer.close()
        led = {(s.topic, s.partition): s.leader for s in states}
        busiest = sorted(ends, key=lambda tp: (before[tp] - ends[tp], -ends[tp]))[:BUSIEST]
        counts: dict[int, int] = {}
        for tp in busiest:
            leader = led.get((tp.topic, tp.partition))
            if leader is not None:
                counts[leader] = counts.get(leader, 0) + 1
        victim = max(counts, key=lambda n: counts[n])
        labels = [
            f"{tp.topic.split('.')[3]}[{tp.partition}] (+{ends[tp] - before[tp]} in "
            f"{BUSY_WINDOW_S:.0f} s)"
            for tp in busiest
            if led.get((tp.topic, tp.partition)) == victim
        ]
        return victim, labels

    async def _kill_kafka_leader(self, fault: str) -> None:
        """kill -9 of the node leading the busiest partitions; waits until every partition it
        led has a new leader (the election), starts it again and waits until every replica
        of the run's topics is in sync (it caught up)."""
        cluster = self.kafka
        assert isinstance(cluster, KafkaCluster), "leader kills need the cluster"
        names = [t.full_name("chaos.") for t in topics.ALL_TOPICS]
        victim, busiest = await asyncio.to_thread(self._busiest_leader, cluster)
        led = [s for s in await asyncio.to_thread(cluster.partitions, names) if s.leader == victim]
        killed = time.monotonic()
        await asyncio.to_thread(cluster.kill, victim)
        for state in led:
            await asyncio.to_thread(
                cluster.wait_new_leader, state.topic, state.partition, victim, RECOVERY_TIMEOUT_S
            )
        elected_s = time.monotonic() - killed
        await asyncio.sleep(DOWN_S)
        restarted = time.monotonic()
        await asyncio.to_thread(cluster.restart, victim, 120)
        restart_s = time.monotonic() - restarted
        in_sync_s = await asyncio.to_thread(cluster.wait_in_sync, names, RECOVERY_TIMEOUT_S)
        self.details[fault] = (
            f"node {victim} (led {', '.join(busiest)}; {len(led)} partitions): new leaders in "
            f"{elected_s:.1f} s, restarted in {restart_s:.1f} s, all in sync "
            f"{in_sync_s:.1f} s later"
        )

    async def _roll(self, fault: str) -> None:
        """Every process of every service in turn: SIGTERM, drained (exits by itself), started
        again and SERVING before the next, as a rolling update does."""
        stack = self.services
        drains = []
        for service in SERVICES:
            for name in self._replicas(service):
                t0 = time.monotonic()
                stack.kill(name, signal.SIGTERM)
                status = await asyncio.to_thread(stack.process(name).wait_exit, 30.0)
                drains.append(time.monotonic() - t0)
                if status is None:
                    raise RuntimeError(f"{name} did not exit within 30 s of SIGTERM")
                await asyncio.to_thread(stack.restart, name, 90)
        self.details[fault] = (
            f"{len(drains)} processes; SIGTERM to exit {min(drains):.1f}-{max(drains):.1f} s"
        )

    async def _poison(self) -> None:
        too_large = submission_events_pb2.SubmissionCreated(
            event_id="poison",
            submission=submission_pb2.Submission(
                model=submission_pb2.ModelInfo(name="x" * 1_100_000)
            ),
        ).SerializeToString()
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.mongo.uri)
        try:
            for name in RELAYING:
                await client["chaos"][f"outbox_{name}"].insert_one(
                    {
                        "_id": f"poison-{name}-{time.monotonic_ns()}",
                        "topic": topics.SUBMISSION_CREATED.name,
                        "key": "poison",
                        "payload": too_large,
                        "created_at": datetime(2000, 1, 1, tzinfo=UTC),  # the head
                        "trace": [],
                    }
                )
        finally:
            await client.close()
        publisher = KafkaPublisher(
            KafkaSettings(bootstrap_servers=self.kafka.bootstrap, topic_prefix="chaos."), "chaos"
        )
        try:
            await publisher.publish(
                [
                    Outgoing(
                        topic,
                        topic.message_type(),
                        key=TENANT,
                        topic_name=topic.full_name("chaos."),
                        raw_value=b"\xff\x00 not an event",
                    )
                    for topic in topics.ALL_TOPICS
                ]
            )
        finally:
            publisher.close()

    async def quarantined(self) -> int:
        """Entries held in the quarantine (every poison event ends there)."""
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.mongo.uri)
        try:
            return await client["chaos"]["quarantine"].count_documents({"status": "held"})
        finally:
            await client.close()

    async def scored(self, submission_id: str) -> int | None:
        """Items scored so far (None while the aggregator cannot answer)."""
        chan = channel(self.services.address("aggregator"), self.services.admin_key)
        try:
            progress = await report_service_pb2_grpc.ReportServiceStub(chan).GetProgress(
                report_service_pb2.GetProgressRequest(submission_id=submission_id), timeout=5
            )
            return int(progress.scored_items)
        except grpc.aio.AioRpcError:
            return None
        finally:
            await chan.close()

    async def caught_up(self, submission_id: str, target: int, since: float) -> float | None:
        deadline = since + RECOVERY_TIMEOUT_S
        while time.monotonic() < deadline:
            done = await self.scored(submission_id)
            if done is not None and done >= target:
                return time.monotonic() - since
            await asyncio.sleep(0.25)
        return None

    async def stretches(
        self,
        mode: str,
        submission_id: str,
        hand_in: Sequence[Callable[[], Awaitable[int]]],
        faults: Sequence[str],
        started: float,
    ) -> list[FaultRecord]:
        """Hands in stretch i while fault i strikes at a random moment of it; then waits until
        everything handed in is scored. ``hand_in[i]`` returns the items handed in so far."""
        records = []
        for i, fault in enumerate(faults):
            handing = asyncio.create_task(hand_in[i]())
            await asyncio.sleep(self.rng.uniform(0.0, 0.5))
            at = time.monotonic()
            await self.inject(fault)
            target = await handing
            recovered = await self.caught_up(submission_id, target, at)
            records.append(
                FaultRecord(mode, fault, at - started, recovered, self.details.pop(fault, ""))
            )
        for rest in hand_in[len(faults) :]:
            await rest()
        return records

    # -- runs ----------------------------------------------------------------------------

    async def upload_run(self, run: str, faults: Sequence[str]) -> tuple[Any, float, list]:
        evaluation = Evaluation(self.services, TENANT, run, self.answers, batch_size=50)
        started = time.monotonic()
        await evaluation.create()
        batches = evaluation.batches(await evaluation.prompts())
        groups = _split(batches, len(faults) + 1)
        handed = 0

        def stretch(group: list[Any]) -> Callable[[], Awaitable[int]]:
            async def go() -> int:
                nonlocal handed
                for batch in group:
                    await evaluation.upload_batch(batch, timeout_s=RECOVERY_TIMEOUT_S)
                    handed += sum(1 for item_id, _ in batch[1] if item_id in self.answers)
                return handed

            return go

        records = await self.stretches(
            "upload",
            evaluation.submission_id,
            [stretch(g) for g in groups],
            faults,
            started,
        )
        report = await evaluation.wait_completed(timeout_s=RECOVERY_TIMEOUT_S)
        return report, time.monotonic() - started, records

    async def api_run(self, run: str, faults: Sequence[str]) -> tuple[Any, float, list]:
        gate = Gate()

        def gated(question: str, attempt: int) -> Reply | None:
            if parse_options(question) is not None and not gate.wait(question):
                return 503, {"error": {"message": "gate closed"}}, {}
            return None

        with FakeEndpoint(Script(answer=model_answer, fault=gated)) as fake:
            partner = partner_client(self.services, TENANT)
            started = time.monotonic()
            created = await partner.create(
                run,
                "chaos-model",
                mode=common_pb2.SUBMISSION_MODE_API,
                endpoint=submission_pb2.Endpoint(
                    base_url=fake.base_url,
                    model="test-model",
                    api_key="secret-key",
                    max_concurrency=16,
                ),
            )
            sid = created.submission.submission_id
            total = self.items
            budgets = [total * (i + 1) // (len(faults) + 1) for i in range(len(faults) + 1)]

            def stretch(budget: int) -> Callable[[], Awaitable[int]]:
                async def go() -> int:
                    gate.release(budget)
                    return budget

                return go

            records = await self.stretches(
                "api", sid, [stretch(b) for b in budgets], faults, started
            )
            deadline = time.monotonic() + RECOVERY_TIMEOUT_S
            while True:
                sub = await partner_client(self.services, TENANT).get(sid)
                if sub.state == COMPLETED or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.25)
            report = await checked_report(self.services, TENANT, sid)
        return report, time.monotonic() - started, records

    async def mode(self, mode: str, faults: Sequence[str] = FAULTS) -> ModeResult:
        """A clean run, then the same run with ``faults`` in a seeded random order."""
        run = self.upload_run if mode == "upload" else self.api_run
        clean, clean_s, _ = await run(f"clean-{mode}", [])
        order = list(faults)
        self.rng.shuffle(order)
        chaos, chaos_s, records = await run(f"chaos-{mode}", order)
        sub = await partner_client(self.services, TENANT).get(chaos.submission_id)
        return ModeResult(
            mode=mode,
            items=self.items,
            clean_s=clean_s,
            chaos_s=chaos_s,
            equal=comparable(chaos) == comparable(clean),
            state=submission_pb2.SubmissionState.Name(sub.state),
            scored=int(chaos.scored_items),
            expected=int(clean.scored_items),
            faults=records,
        )


def _split(seq: Sequence[Any], parts: int) -> list[list[Any]]:
    return [list(seq[len(seq) * i // parts : len(seq) * (i + 1) // parts]) for i in range(parts)]


def table(results: Sequence[ModeResult]) -> str:
    """The chaos table: one line per fault, then one per mode."""
    lines = [
        "| mode | fault | at (s) | recovered | time to recover (s) | detail |",
        "|---|---|---:|---|---:|---|",
    ]
    for r in results:
        for f in r.faults:
            recovered = "yes" if f.recovered_s is not None else "NO"
            took = f"{f.recovered_s:.1f}" if f.recovered_s is not None else "-"
            lines.append(
                f"| {r.mode} | {f.fault} | {f.at_s:.1f} | {recovered} | {took} | {f.detail} |"
            )
    lines += [
        "",
        "| mode | items | faults injected | recoveries | clean run (s) | chaos run (s) | "
        "scored / expected | final state | report equal |",
        "|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in results:
        recoveries = sum(1 for f in r.faults if f.recovered_s is not None)
        lines.append(
            f"| {r.mode} | {r.items:,} | {len(r.faults)} | {recoveries} | {r.clean_s:.1f} | "
            f"{r.chaos_s:.1f} | {r.scored:,} / {r.expected:,} | {r.state} | "
            f"{'yes' if r.equal else 'NO'} |"
        )
    return "\n".join(lines)
