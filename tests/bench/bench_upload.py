"""Benchmark: a 100,000-item upload-mode evaluation through the local stack.

Prints items/s end to end (upload start to report) and two ratios from the same run:
against an in-process loop scoring the same answers with the same metric and aggregation
code, and against a raw bulk insert of as many documents into the same Mongo-wire server.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

from pymongo import AsyncMongoClient

from medbench.submission.v1 import submission_pb2
from medbench_client.api import AdminClient, channel, chunked
from medbench_client.bank_files import import_item
from medbench_devstack.answers import translate
from rotator.core.synthetic import synthetic_answers, synthetic_items
from tests.bench.local_stack import bench_stack
from tests.bench.results import record
from tests.e2e.harness import partner_client
from tests.reference_scoring import score_in_process


def in_process(rows: list[dict[str, Any]], answers: dict[str, str]) -> tuple[float, float]:
    """Scores and aggregates in one loop; returns (seconds, overall)."""
    started = time.perf_counter()
    report = score_in_process(rows, answers)
    return time.perf_counter() - started, report.overall


async def raw_insert(uri: str, answers: dict[str, str], batch: int) -> float:
    """Bulk-inserts one document per answer; returns seconds."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        collection = client[f"bench_raw_{uuid.uuid4().hex[:6]}"]["answers"]
        docs = [
            {"_id": f"sub:{item_id}", "submission_id": "sub", "item_id": item_id, "answer": answer}
            for item_id, answer in answers.items()
        ]
        started = time.perf_counter()
        for i in range(0, len(docs), batch):
            await collection.insert_many(docs[i : i + batch], ordered=False)
        return time.perf_counter() - started
    finally:
        await client.close()


async def main(n_items: int, batch: int) -> None:
    with bench_stack("upload") as bench:
        stack = bench.services
        rows = list(synthetic_items(n_items, seed=1))
        answers = {a["item_id"]: a["answer"] for a in synthetic_answers(rows, 0.7, seed=2)}
        admin = AdminClient(channel(stack.address("rotator"), stack.admin_key))
        t = time.perf_counter()
        await admin.import_items([import_item(r) for r in rows], batch=5000)
        await admin.publish("bench-pool")
        print(f"setup: imported and published {n_items} items in {time.perf_counter() - t:.1f} s")

        partner = partner_client(stack, "bench")
        created = await partner.create("bench-run", "bench-model")
        sid = created.submission.submission_id
        prompts = await partner.prompts(sid)
        questions = {str(r["item_id"]): str(r["question"]) for r in rows}
        pairs = [
            (
                p.item_id,
                translate(answers[p.item_id], questions[p.item_id], p.question)
                if p.item_id in answers
                else "<A>",
            )
            for p in prompts
        ]

        started = time.perf_counter()
        upload = await partner.upload(sid, chunked(pairs, batch))
        uploaded = time.perf_counter() - started
        async for update in partner.watch(sid):
            if update.submission.state == submission_pb2.SUBMISSION_STATE_COMPLETED:
                break
        report = await partner.report(sid)
        end_to_end = time.perf_counter() - started
        assert upload.accepted_answers == len(pairs) and report.scored_items == n_items

        loop_s, overall = in_process(rows, answers)
        assert abs(overall - report.overall) < 1e-9, (overall, report.overall)
        raw_s = await raw_insert(bench.mongo_uri, answers, batch)

        rate = n_items / end_to_end
        loop_rate, raw_rate = n_items / loop_s, n_items / raw_s
        print(f"items: {n_items}, upload batch: {batch} answers per message")
        print(f"upload accepted after      {uploaded:8.2f} s  ({n_items / uploaded:10.0f} items/s)")
        print(f"end to end (upload->report){end_to_end:8.2f} s  ({rate:10.0f} items/s)")
        print(f"in-process score+aggregate {loop_s:8.2f} s  ({loop_rate:10.0f} items/s)")
        print(f"raw bulk insert (Mongo)    {raw_s:8.2f} s  ({raw_rate:10.0f} items/s)")
        print(f"ratio end-to-end / in-process loop: {rate / loop_rate:.3f}")
        print(f"ratio end-to-end / raw bulk insert: {rate / raw_rate:.3f} (target >= 0.5)")
        record("upload", f"{n_items:,} items uploaded -> report", rate, "items/s")
        record("upload", "end to end / raw bulk insert", rate / raw_rate, "x", 0.5)
        print(f"overall score {report.overall:.2f} (in-process {overall:.2f}: identical)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(main(args.items, args.batch))
