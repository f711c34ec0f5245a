"""Benchmark: what one item costs the platform, per 1,000 items, for the capacity model.

Two runs through the local stack, each a few submissions of one pool the size of the LLM
track's pool in the registry (1,620 lines), every submission its own tenant:
- upload mode: synthetic multiple-choice items (objective scoring only);
- API mode, self-test (judged at once, no calibration needed): the registry's judge-scored share
  of free-text MedHC items (key points + judge) and multiple-choice items, answered by the
  scripted endpoint of the end-to-end tests (tests/e2e/fake_endpoint.py), judged by its scripted
  judge (tests/e2e/fake_judge.py); every answer differs, so no verdict comes from the cache.

Measured around each run (from the first CreateSubmission to the last COMPLETED), per 1,000
items: Kafka records and key+value bytes per topic (end offsets before and after; the records in
between read back), MongoDB writes per collection (oplog entries, local.oplog.rs, transactions'
applyOps counted per operation), stored bytes per collection (collStats size after - before)
and CPU seconds per process (/proc/<pid>/stat utime + stime; Kafka, the Mongo-wire server, each
service). Also: bytes per bank item stored by the import, and one partition's consumer
throughput (kafka-python fetching and decoding the run's own records from a one-partition
topic). `python -m tests.bench.capacity` turns these rows into a national-scale estimate.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bson.timestamp import Timestamp
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from pymongo import AsyncMongoClient

from medbench.common.v1 import common_pb2
from medbench.submission.v1 import submission_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client.api import AdminClient, PartnerClient, channel, chunked
from medbench_client.bank_files import import_item
from medbench_devstack.answers import translate
from medbench_messaging import topics
from rotator.core.registry import load_registry
from rotator.core.synthetic import synthetic_answers, synthetic_items
from rotator.registry import DEFAULT_REGISTRY_PATH
from tests.bench.bench_dispatch import cpu_s
from tests.bench.local_stack import BenchStack, bench_stack
from tests.bench.results import record
from tests.e2e.fake_endpoint import FakeEndpoint, Script
from tests.e2e.fake_judge import judge
from tests.e2e.harness import lift_caps, partner_client

BENCH = "costs"
COMPLETED = submission_pb2.SUBMISSION_STATE_COMPLETED
UPLOAD_DATASETS = ("MedSafety", "MedEthics", "MedRxCheck", "DDx-advanced")
API_CHOICE_DATASET = "MedExam"
JUDGED_DATASET = "MedHC"
POINTS = ("低盐饮食", "规律服药", "监测血压", "控制体重", "戒烟限酒")


def pool_lines(track: str = "llm") -> tuple[int, int]:
    """(lines of a track's pool, lines whose metric has a judge component), from the registry."""
    registry = load_registry(DEFAULT_REGISTRY_PATH)
    lines = judged = 0
    for dataset in registry.datasets_in(track):
        for part in dataset.parts:
            lines += part.pool_lines
            judged += part.pool_lines if "judge" in part.metric_components else 0
    return lines, judged


def topic_label(name: str, prefix: str) -> str:
    """ "medbench.inference.response-recorded.v1.dlq" under prefix -> "response-recorded.dlq"."""
    bare = name.removeprefix(prefix)
    parts = bare.split(".")
    return parts[2] + (".dlq" if bare.endswith(topics.DEAD_LETTER_SUFFIX) else "")


def choice_rows(datasets: Sequence[str], n: int, seed: int) -> list[dict[str, Any]]:
    """n synthetic multiple-choice items of datasets, whole question groups only."""
    rows: list[dict[str, Any]] = []
    for row in synthetic_items(8 * n, seed=seed):
        if row["dataset"] in datasets:
            rows.append(row)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["group_id"], []).append(row)
    taken: list[dict[str, Any]] = []
    for group in groups.values():
        if len(taken) >= n:
            break
        taken.extend(group)
    return taken


def judged_rows(n: int) -> list[dict[str, Any]]:
    """n free-text MedHC items with key points (metric key_point_recall+judge)."""
    return [
        {
            "item_id": f"costs-hc-{i}",
            "dataset": JUDGED_DATASET,
            "answer_format": "free_text",
            "question": f"第{i}题：高血压患者日常生活中应注意什么？",
            "specialties": ["IM.CARD"],
            "key_points": list(POINTS),
        }
        for i in range(n)
    ]


def model_answer(question: str) -> str:
    """The scripted candidate: a letter for a choice item, a fresh free-text answer otherwise
    (a random subset of the key points and a nonce, so the judge's cache never answers)."""
    if "单选题" in question or "多选题" in question:
        return f"<{random.choice('ABCDE')}>"
    chosen = random.sample(POINTS, random.randint(1, len(POINTS)))
    return f"建议{'，'.join(chosen)}。（{uuid.uuid4().hex[:8]}）"


# --- what is measured -------------------------------------------------------------------------


@dataclass
class Snapshot:
    offsets: dict[TopicPartition, int]
    oplog_ts: Timestamp
    sizes: dict[str, int]
    cpu: dict[str, float]
    at: float = field(default_factory=time.monotonic)


def end_offsets(bootstrap: str, prefix: str) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        names = sorted(t for t in consumer.topics() if t.startswith(prefix))
        tps = [TopicPartition(t, p) for t in names for p in consumer.partitions_for_topic(t) or ()]
        return dict(consumer.end_offsets(tps)) if tps else {}
    finally:
        consumer.close()


def read_range(
    bootstrap: str, before: dict[TopicPartition, int], after: dict[TopicPartition, int]
) -> dict[str, list[tuple[bytes, bytes]]]:
    """The (key, value) of every record between the two offset maps, per topic."""
    wanted = {tp: end for tp, end in after.items() if end > before.get(tp, 0)}
    found: dict[str, list[tuple[bytes, bytes]]] = {}
    if not wanted:
        return found
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        consumer.assign(list(wanted))
        for tp in wanted:
            consumer.seek(tp, before.get(tp, 0))
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < end for tp, end in wanted.items()):
            if time.monotonic() > deadline:
                raise RuntimeError("could not read the run's records back within 120 s")
            for tp, records in consumer.poll(timeout_ms=500).items():
                for r in records:
                    if r.offset < wanted[tp]:
                        found.setdefault(tp.topic, []).append((r.key or b"", r.value or b""))
        return found
    finally:
        consumer.close()


async def collection_sizes(client: AsyncMongoClient[dict[str, Any]], dbs: Iterable[str]) -> dict:
    """collStats size (bytes of documents) of every collection, "<db label>.<collection>"."""
    sizes: dict[str, int] = {}
    for db in dbs:
        label = "sealed" if db.endswith("_sealed") else "main"
        for name in await client[db].list_collection_names():
            stats = await client[db].command({"collStats": name})
            sizes[f"{label}.{name}"] = int(stats.get("size", 0))
    return sizes


async def latest_oplog_ts(client: AsyncMongoClient[dict[str, Any]]) -> Timestamp:
    last = await client.local["oplog.rs"].find_one({}, sort=[("$natural", -1)])
    return last["ts"] if last else Timestamp(0, 0)


async def oplog_writes(
    client: AsyncMongoClient[dict[str, Any]], since: Timestamp, dbs: Sequence[str]
) -> Counter[str]:
    """Write operations per "<db label>.<collection>" after since (applyOps counted per op)."""
    counts: Counter[str] = Counter()

    def count(entry: dict[str, Any]) -> None:
        if entry.get("op") == "c" and "applyOps" in (entry.get("o") or {}):
            for inner in entry["o"]["applyOps"]:
                count(inner)
            return
        if entry.get("op") not in ("i", "u", "d"):
            return
        db, _, coll = str(entry.get("ns", "")).partition(".")
        if db in dbs:
            counts[f"{'sealed' if db.endswith('_sealed') else 'main'}.{coll}"] += 1

    async for entry in client.local["oplog.rs"].find({"ts": {"$gt": since}}):
        count(entry)
    return counts


@dataclass
class Meter:
    bench: BenchStack
    client: AsyncMongoClient[dict[str, Any]]

    @property
    def prefix(self) -> str:
        return self.bench.services.env("gateway")["MEDBENCH_KAFKA__TOPIC_PREFIX"]

    @property
    def dbs(self) -> list[str]:
        db = self.bench.services.env("gateway")["MEDBENCH_MONGO__DATABASE"]
        return [db, f"{db}_sealed"]

    async def snapshot(self) -> Snapshot:
        return Snapshot(
            end_offsets(self.bench.kafka.bootstrap, self.prefix),
            await latest_oplog_ts(self.client),
            await collection_sizes(self.client, self.dbs),
            {name: cpu_s(pid) for name, pid in self.bench.pids().items()},
        )

    async def settled(self) -> Snapshot:
        """A snapshot once the topics' end offsets stop moving (relays publish last)."""
        last = await self.snapshot()
        for _ in range(30):
            await asyncio.sleep(1.0)
            now = await self.snapshot()
            if now.offsets == last.offsets:
                return now
            last = now
        return last


@dataclass
class Costs:
    items: int
    seconds: float
    events: dict[str, int]
    bytes: dict[str, int]
    writes: Counter[str]
    stored: dict[str, int]
    cpu: dict[str, float]
    records: dict[str, list[tuple[bytes, bytes]]]


async def idle_cpu(meter: Meter, seconds: float = 5.0) -> dict[str, float]:
    """CPU seconds per second each process spends with no work (Kafka's and the JVM's
    housekeeping, pollers): subtracted from the runs, so the costs are the work's."""
    before = {name: cpu_s(pid) for name, pid in meter.bench.pids().items()}
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    return {n: (cpu_s(pid) - before[n]) / elapsed for n, pid in meter.bench.pids().items()}


async def measured(
    meter: Meter, items: int, run: Callable[[], Awaitable[None]], idle: dict[str, float]
) -> Costs:
    before = await meter.snapshot()
    await run()
    after = await meter.settled()
    seconds = after.at - before.at
    records = read_range(meter.bench.kafka.bootstrap, before.offsets, after.offsets)
    prefix = meter.prefix
    return Costs(
        items=items,
        seconds=seconds,
        events={topic_label(t, prefix): len(rs) for t, rs in records.items()},
        bytes={
            topic_label(t, prefix): sum(len(k) + len(v) for k, v in rs) for t, rs in records.items()
        },
        writes=await oplog_writes(meter.client, before.oplog_ts, meter.dbs),
        stored={c: after.sizes[c] - before.sizes.get(c, 0) for c in after.sizes},
        cpu={
            p: max(0.0, after.cpu[p] - before.cpu.get(p, 0.0) - idle.get(p, 0.0) * seconds)
            for p in after.cpu
        },
        records={topic_label(t, prefix): rs for t, rs in records.items()},
    )


def report(mode: str, costs: Costs) -> None:
    """Prints and records the run's costs per 1,000 items (figure names the model reads)."""
    k = 1000 / costs.items
    print(f"\n{mode}: {costs.items:,} items in {costs.seconds:.1f} s")
    record(BENCH, f"items measured ({mode})", costs.items, "items")
    for topic in sorted(costs.events):
        events, size = costs.events[topic] * k, costs.bytes[topic] * k / 1024
        print(f"  kafka {topic:28s} {events:10.2f} events  {size:10.1f} KiB  per 1,000 items")
        record(BENCH, f"kafka events, {topic} ({mode})", events, "events/1k items")
        record(BENCH, f"kafka bytes, {topic} ({mode})", size, "KiB/1k items")
    for coll in sorted(set(costs.writes) | {c for c, b in costs.stored.items() if b > 0}):
        writes, size = costs.writes.get(coll, 0) * k, max(0, costs.stored.get(coll, 0)) * k / 1024
        print(f"  mongo {coll:28s} {writes:10.2f} writes  {size:10.1f} KiB  per 1,000 items")
        if writes:
            record(BENCH, f"mongo writes, {coll} ({mode})", writes, "writes/1k items")
        if size:
            record(BENCH, f"mongo stored, {coll} ({mode})", size, "KiB/1k items")
    for process in sorted(costs.cpu, key=lambda p: -costs.cpu[p]):
        seconds = costs.cpu[process] * k
        print(f"  cpu   {process:28s} {seconds:10.3f} CPU-s per 1,000 items")
        record(BENCH, f"cpu, {process} ({mode})", seconds, "CPU-s/1k items")


# --- the runs ---------------------------------------------------------------------------------


async def wait_completed(partner: PartnerClient, sid: str) -> None:
    async for update in partner.watch(sid):
        if update.submission.state == COMPLETED:
            return
        if update.submission.state in (
            submission_pb2.SUBMISSION_STATE_FAILED,
            submission_pb2.SUBMISSION_STATE_CANCELLED,
        ):
            raise RuntimeError(f"submission {sid} ended {update.submission}")


async def upload_run(bench: BenchStack, rows: list[dict[str, Any]], n: int, batch: int) -> None:
    stack = bench.services
    answers = {a["item_id"]: a["answer"] for a in synthetic_answers(rows, 0.7, seed=2)}
    questions = {str(r["item_id"]): str(r["question"]) for r in rows}

    async def one(i: int) -> None:
        tenant = f"costs-up-{i}"
        await lift_caps(stack, tenant)
        partner = partner_client(stack, tenant)
        sid = (await partner.create(f"costs-up-{i}", "costs-model")).submission.submission_id
        prompts = await partner.prompts(sid)
        pairs = [
            (p.item_id, translate(answers[p.item_id], questions[p.item_id], p.question))
            for p in prompts
        ]
        await partner.upload(sid, chunked(pairs, batch))
        await wait_completed(partner, sid)

    await asyncio.gather(*(one(i) for i in range(n)))


async def api_run(bench: BenchStack, base_url: str, n: int) -> None:
    stack = bench.services

    async def one(i: int) -> None:
        tenant = f"costs-api-{i}"
        await lift_caps(stack, tenant)
        partner = partner_client(stack, tenant)
        created = await partner.create(
            f"costs-api-{i}",
            "costs-model",
            mode=common_pb2.SUBMISSION_MODE_API,
            endpoint=submission_pb2.Endpoint(
                base_url=base_url,
                model="test-model",
                api_key="secret-key",
                max_concurrency=32,
                self_test=True,
            ),
        )
        await wait_completed(partner, created.submission.submission_id)

    await asyncio.gather(*(one(i) for i in range(n)))


def consumer_throughput(
    bootstrap: str, records: Sequence[tuple[bytes, bytes]]
) -> tuple[float, float]:
    """(MB/s, records/s) one kafka-python consumer fetches and decodes from one partition: the
    run's own records (upload mode's responses) produced again into a one-partition topic."""
    if not records:
        raise RuntimeError("no records to measure consumer throughput with")
    name = f"costs-scratch-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=16 << 20)
    total, count = 0, 0
    try:
        while total < 64 << 20 or count < 2000:
            key, value = records[count % len(records)]
            producer.send(name, key=key, value=value)
            total, count = total + len(key) + len(value), count + 1
        producer.flush()
    finally:
        producer.close()
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=16 << 20
    )
    message_type = topics.RESPONSE_RECORDED.message_type
    try:
        tp = TopicPartition(name, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        read = 0
        started = time.perf_counter()
        while read < count:
            for batch in consumer.poll(timeout_ms=1000).values():
                for r in batch:
                    message_type.FromString(r.value)
                    read += 1
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
    return total / seconds / 1e6, count / seconds


async def bank_import(meter: Meter, rows: list[dict[str, Any]]) -> None:
    """Imports rows; records the bytes each bank item stored per collection."""
    admin = AdminClient(
        channel(meter.bench.services.address("rotator"), meter.bench.services.admin_key)
    )
    before = await collection_sizes(meter.client, meter.dbs)
    await admin.import_items([import_item(r) for r in rows], batch=5000)
    after = await collection_sizes(meter.client, meter.dbs)
    k = 1000 / len(rows)
    for coll in sorted(after):
        grown = after[coll] - before.get(coll, 0)
        if grown > 0:
            print(f"  bank  {coll:28s} {grown * k / 1024:10.1f} KiB per 1,000 bank items")
            record(BENCH, f"bank stored, {coll}", grown * k / 1024, "KiB/1k bank items")


async def main(submissions: int, pool: int | None, batch: int) -> None:
    lines, judged_lines = pool_lines()
    size = pool or lines
    judged = round(size * judged_lines / lines)
    print(
        f"pool: {size} items per submission ({judged} judge-scored in API mode, as the LLM track)"
    )
    fake_judge = FakeEndpoint(Script(answer=str, model="judge-a", reply=judge()))
    candidate = FakeEndpoint(Script(answer=model_answer))
    with fake_judge, candidate:
        env = {
            "MEDBENCH_JUDGE__MODELS": (
                f'[{{"model": "judge-a", "base_url": "{fake_judge.base_url}", '
                '"api_key": "secret-key"}]'
            ),
            "MEDBENCH_JUDGE__RETRY_BASE_DELAY_S": "0.01",
        }
        with bench_stack("costs", extra_env=env) as bench:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(bench.mongo_uri)
            meter = Meter(bench, client)
            try:
                stack = bench.services
                admin = AdminClient(channel(stack.address("rotator"), stack.admin_key))
                upload_rows = choice_rows(UPLOAD_DATASETS, size, seed=1)
                api_rows = choice_rows((API_CHOICE_DATASET,), size - judged, seed=3)
                api_rows += judged_rows(judged)
                await bank_import(meter, upload_rows)
                await admin.import_items([import_item(r) for r in api_rows], batch=5000)
                await admin.publish("costs-upload", datasets=UPLOAD_DATASETS)
                await admin.publish(
                    "costs-api",
                    board=taskpool_pb2.BOARD_API,
                    datasets=(API_CHOICE_DATASET, JUDGED_DATASET),
                )
                idle = await idle_cpu(meter)
                print(
                    "idle CPU (CPU-s/s, subtracted): "
                    + ", ".join(f"{p} {v:.3f}" for p, v in sorted(idle.items()))
                )
                n_up = submissions * len(upload_rows)
                up = await measured(
                    meter, n_up, lambda: upload_run(bench, upload_rows, submissions, batch), idle
                )
                report("upload", up)
                n_api = submissions * len(api_rows)
                api = await measured(
                    meter, n_api, lambda: api_run(bench, candidate.base_url, submissions), idle
                )
                report("api", api)
                share = 100 * judged / len(api_rows)
                print(f"  judged share of the API run's items: {share:.1f} %")
                record(BENCH, "judged share of items (api)", share, "%")
                mb_s, per_s = consumer_throughput(
                    bench.kafka.bootstrap, up.records.get("response-recorded", [])
                )
                print(
                    "one partition, one consumer (fetch + decode): "
                    f"{mb_s:.1f} MB/s, {per_s:.0f} records/s"
                )
                record(BENCH, "kafka consumer per partition (fetch + decode)", mb_s, "MB/s")
                record(BENCH, "kafka consumer per partition, records", per_s, "records/s")
            finally:
                await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--submissions", type=int, default=4, help="submissions per mode")
    parser.add_argument("--pool", type=int, help="items per submission (default: the registry's)")
    parser.add_argument("--batch", type=int, default=1000, help="answers per upload message")
    args = parser.parse_args()
    asyncio.run(main(args.submissions, args.pool, args.batch))
