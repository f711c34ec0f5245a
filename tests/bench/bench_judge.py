"""Benchmark: the judge panel against a simulated judge (1 s per call, declared cap 32).

Prints judged items/s as a ratio of the ideal 32/s (all items at once, and in the Kafka
handler's batches of 200), and the cache-hit path in items/s (the same answers again: prompts
built and hashed, one cache read per batch, verdicts parsed, injection checked). The cache is
the real Mongo-wire server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pymongo import AsyncMongoClient

from judge_scorer.adapters.judge_client import JudgeClient
from judge_scorer.adapters.mongo_judge import MongoJudge
from judge_scorer.core.rubric import load_rubrics
from judge_scorer.settings import JudgeModel, JudgeSettings
from judge_scorer.usecases.panel import JudgeInput, Panel
from medbench_devstack.mongo import MongoWireServer
from medbench_devstack.ports import free_port
from medbench_runtime.http_client import HttpClient
from medbench_runtime.openai_endpoint import OpenAIEndpoint
from tests.bench.results import record

LATENCY_S = 1.0
CAP = 32
VERDICT = json.dumps({"score": 7, "key_points_covered": [1, 2], "rationale": "覆盖两个要点"})
POINTS = ("低盐饮食", "规律服药", "监测血压")


def inputs(n: int, tag: str) -> list[JudgeInput]:
    rubric = load_rubrics().for_dataset("MedHC")
    return [
        JudgeInput(
            rubric,
            "高血压患者日常生活中应注意什么？",
            "低盐饮食，规律服药，监测血压。",
            POINTS,
            f"回答{tag}-{i}：应当低盐饮食、规律服药，并定期监测血压。" * 3,
        )
        for i in range(n)
    ]


async def timed(panel: Panel, items: list[JudgeInput], batch: int, overlap: int = 1) -> float:
    """Judges items in batches, ``overlap`` batches at a time (the judge requests a scorer
    replica handles at once)."""
    slots = asyncio.Semaphore(overlap)

    async def one(part: list[JudgeInput]) -> None:
        async with slots:
            results = await panel.judge(part)
        assert all(r.score is not None for r in results)

    started = time.perf_counter()
    await asyncio.gather(*(one(items[i : i + batch]) for i in range(0, len(items), batch)))
    return time.perf_counter() - started


async def main(n: int, hits: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="medbench-bench-judge-"))
    mongo = MongoWireServer(work / "mongo")
    mongo.start()
    port = free_port()
    judge_server = subprocess.Popen(  # noqa: ASYNC220 - a benchmark fixture, started once
        [
            sys.executable,
            "-m",
            "tests.bench.sim_endpoint",
            "--port",
            str(port),
            "--latency-s",
            str(LATENCY_S),
            "--reply",
            VERDICT,
        ]
    )
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo.uri)
    try:
        settings = JudgeSettings()
        endpoint = OpenAIEndpoint(HttpClient(), timeout_s=30)
        model = JudgeModel(
            model="sim-judge", base_url=f"http://127.0.0.1:{port}/v1", max_concurrency=CAP
        )
        store = MongoJudge(client["bench_judge"])
        panel = Panel([JudgeClient(model, endpoint, settings)], store, concurrency=256)
        await panel.judge(inputs(1, "warm"))  # connections, server start-up
        ideal = CAP / LATENCY_S
        print(
            f"simulated judge (own process): {LATENCY_S:.0f} s per call, cap {CAP}, "
            f"ideal {ideal:.0f} items/s"
        )
        for label, batch, overlap, tag in (
            ("all at once", n, 1, "a"),
            ("requests of 200, one at a time", 200, 1, "b"),
            ("requests of 200, 4 at a time as the service runs", 200, 4, "c"),
        ):
            elapsed = await timed(panel, inputs(n, tag), batch, overlap)
            rate = n / elapsed
            # Requests handled strictly one after another cannot beat whole rounds of calls:
            # a request of 200 at cap 32 takes 7 rounds of 1 s (the last a quarter full), so the
            # mode's ideal is n over the rounds its requests need (0.87 of the cap's for 640
            # items); overlapping requests fill the rounds and have the cap's ideal.
            rounds = sum(math.ceil(min(batch, n - start) / CAP) for start in range(0, n, batch))
            mode_ideal = ideal if overlap > 1 else n / (rounds * LATENCY_S)
            print(
                f"judged {n} items ({label}): {elapsed:.1f} s, {rate:.1f} items/s = "
                f"{rate / ideal:.2f} x the cap's ideal, {rate / mode_ideal:.2f} x this mode's "
                f"({mode_ideal:.1f} items/s; target >= 0.9)"
            )
            record("judge", f"throughput / ideal ({label})", rate / mode_ideal, "x", 0.9)
        cached = inputs(n, "a")
        repeats = max(1, hits // n)
        elapsed = await timed(panel, cached * repeats, 500)
        rate = n * repeats / elapsed
        print(
            f"cache-hit path: {n * repeats} items in {elapsed:.2f} s = {rate:,.0f} items/s "
            f"(target >= 10,000)"
        )
        record("judge", "cache-hit path", rate, "items/s", 10_000)
    finally:
        await client.close()
        judge_server.terminate()
        judge_server.wait(10)
        mongo.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=640)
    parser.add_argument("--hits", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(main(args.items, args.hits))
