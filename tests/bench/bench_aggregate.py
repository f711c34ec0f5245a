"""Benchmark: building one report from 700,000 stored item scores, and the bootstrap alone.

The item scores are stored as the aggregator stores them (one document per scored batch of 500)
in the real Mongo-wire server; the timed part is what completing a submission does: read every
batch, merge each item's components, aggregate datasets, dimensions and overall, and bootstrap
the intervals (1,000 resamples). Prints the time and the process's peak RSS; then 1,000
resamples over 10,000 units on their own.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from aggregator.adapters.mongo_scores import MongoScores
from aggregator.adapters.score_codec import entries, pack
from aggregator.core.parts import bootstrap_units, merge_entries
from aggregator.core.report import build_report
from aggregator.core.uncertainty import bench as bootstrap_bench
from aggregator.core.uncertainty import bootstrap_report
from medbench_devstack.mongo import MongoWireServer
from tests.bench.results import record

BATCH = 500
DATASETS = [(f"DS{d:02d}", f"dim{d % 5}") for d in range(36)]


def batch_docs(n_items: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    docs = []
    for start in range(0, n_items, BATCH):
        scores = []
        for i in range(start, min(n_items, start + BATCH)):
            dataset, dimension = DATASETS[i % len(DATASETS)]
            score = float(rng.random() < 0.7)
            scores.append(
                {
                    "item_id": f"it{i:07d}",
                    "dataset": dataset,
                    "dimension": dimension,
                    "group_id": f"it{i:07d}",
                    "component": "metric",
                    "metric": "choice_single",
                    "score": score,
                    "parsed": "A",
                    "components": [["choice_single", score]],
                    "merge_rule": "mean",
                    "counts": [0, 0, 0],
                }
            )
        docs.append(
            {
                "_id": f"bench:b{start:07d}:metric",
                "submission_id": "bench",
                "batch_id": f"b{start:07d}",
                "n": len(scores),
                "scorer_version": "bench",
                **pack(scores),  # as the aggregator stores a batch
            }
        )
    return docs


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main(n_items: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="medbench-bench-aggregate-"))
    mongo = MongoWireServer(work / "mongo", sync_on_commit=False)
    mongo.start()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo.uri)
    try:
        db = client["bench_aggregate"]
        docs = batch_docs(n_items)
        for i in range(0, len(docs), 20):
            await db.score_batches.insert_many(docs[i : i + 20])
        del docs
        await db.score_batches.create_index("submission_id")
        rss_before = peak_rss_mib()
        started = time.perf_counter()
        batches = await MongoScores(db).batches("bench")
        read = time.perf_counter() - started
        items = {(e.item_id, e.component): e for b in batches for e in entries(b)}
        merged = merge_entries(items.values())
        report = build_report([item for item, _ in merged], {})
        intervals = bootstrap_report(bootstrap_units(merged, {}))
        elapsed = time.perf_counter() - started
        print(
            f"report from {len(items):,} stored item scores ({len(batches):,} batch documents): "
            f"{elapsed:.1f} s (target <= 10 s; {read:.1f} s reading MongoDB), overall "
            f"{report.overall:.2f} [{intervals.overall.low:.2f}, {intervals.overall.high:.2f}]; "
            f"peak RSS {peak_rss_mib():.0f} MiB (before: {rss_before:.0f} MiB)"
        )
        record("aggregate", f"report from {len(items):,} item scores", elapsed, "s", 10, False)
        record("aggregate", "report peak RSS", peak_rss_mib(), "MiB")
    finally:
        await client.close()
        mongo.stop()
    seconds = bootstrap_bench(10_000, 1000)
    print(f"bootstrap: 1,000 resamples over 10,000 units in {seconds:.2f} s (target <= 2 s)")
    record("aggregate", "bootstrap 1,000 x 10,000 units", seconds, "s", 2, False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=700_000)
    args = parser.parse_args()
    asyncio.run(main(args.items))
