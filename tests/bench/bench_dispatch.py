"""Benchmark: API-mode dispatch against a simulated endpoint (200 ms per call, declared cap 64).

Prints achieved requests/s as a ratio of the ideal 320/s, the same under 10% 429s and 5% 5xx
(completion time and retries), and the dispatcher's CPU time per 1,000 calls.

The rate is the run's: the item calls counted at the endpoint, from the first to the last
(plus one call's latency). CreateSubmission's preflight call comes before the run, and the time
from CreateSubmission's reply to the first item call is the submission's start-up, printed on
its own line together with the rate over the whole span, preflight included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from medbench.common.v1 import common_pb2
from medbench.dispatch.v1 import dispatch_service_pb2, dispatch_service_pb2_grpc
from medbench.submission.v1 import submission_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client.api import AdminClient, channel
from medbench_client.bank_files import import_item
from medbench_devstack.ports import free_port
from rotator.core.synthetic import synthetic_items
from tests.bench.local_stack import BenchStack, bench_stack
from tests.bench.results import record
from tests.e2e.harness import partner_client

LATENCY_S = 0.2
CAP = 64


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_run(
    bench: BenchStack,
    name: str,
    rate_429: float = 0.0,
    rate_5xx: float = 0.0,
) -> dict[str, float]:
    """One submission against a fresh simulated endpoint process."""
    port = free_port()
    endpoint = subprocess.Popen(  # noqa: ASYNC220 - a benchmark fixture, started once
        [
            sys.executable,
            "-m",
            "tests.bench.sim_endpoint",
            "--port",
            str(port),
            "--latency-s",
            str(LATENCY_S),
            "--rate-429",
            str(rate_429),
            "--rate-5xx",
            str(rate_5xx),
        ]
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    stack = bench.services
    pids = {**bench.pids(), "endpoint": endpoint.pid}
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(100):
                try:
                    await http.get(base_url + "/models")
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
            dispatch = dispatch_service_pb2_grpc.DispatcherServiceStub(
                channel(stack.address("dispatcher"), stack.admin_key)
            )
            partner = partner_client(stack, f"bench-{name}")
            cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
            started = time.monotonic()
            created = await partner.create(
                name,
                "bench-model",
                mode=common_pb2.SUBMISSION_MODE_API,
                endpoint=submission_pb2.Endpoint(
                    base_url=base_url, model="test-model", api_key="k", max_concurrency=CAP
                ),
            )
            sid = created.submission.submission_id
            # The preflight ran inside CreateSubmission: every call after this is the run's.
            accepted = time.monotonic()
            while True:
                status = await dispatch.GetDispatch(
                    dispatch_service_pb2.GetDispatchRequest(submission_id=sid)
                )
                if status.state in ("DONE", "STALLED", "FAILED"):
                    break
                await asyncio.sleep(0.2)
            elapsed = time.monotonic() - started
            cpu = {name: cpu_s(pid) - cpu_before[name] for name, pid in pids.items()}
            stats = (await http.get(base_url + "/stats")).json()
            run = (await http.get(f"{base_url}/stats?since={accepted}")).json()
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(bench.mongo_uri)
            try:
                db = client[stack.env("dispatcher")["MEDBENCH_MONGO__DATABASE"]]
                docs = await db.responses.find({"submission_id": sid}, {"latency_ms": 1}).to_list()
                latencies = sorted(d["latency_ms"] for d in docs)
            finally:
                await client.close()
    finally:
        endpoint.terminate()
        endpoint.wait(10)
    if run["calls"] != status.calls:
        raise RuntimeError(
            f"the endpoint saw {run['calls']} calls after CreateSubmission answered, the "
            f"dispatcher made {status.calls}: the run's window cannot be told apart"
        )
    return {
        "elapsed": elapsed,
        "window": run["last"] - run["first"] + LATENCY_S,
        "span": stats["last"] - stats["first"] + LATENCY_S,
        "start": run["first"] - accepted,
        "calls": run["calls"],
        "all_calls": stats["calls"],
        "answered": status.answered_items,
        "infra_failed": status.infra_failed_items,
        **{f"cpu_{name}": seconds for name, seconds in cpu.items()},
        "throttled": stats["throttled"],
        "concurrency": run["inflight_sum"] / max(1, run["calls"]),
        "errors": stats["errors"],
        "latency_p50": latencies[len(latencies) // 2],
        "latency_p99": latencies[int(len(latencies) * 0.99)],
    }


async def main(n_items: int, clean_only: bool) -> None:
    with bench_stack("dispatch") as bench:
        stack = bench.services
        admin = AdminClient(channel(stack.address("rotator"), stack.admin_key))
        await admin.import_items(
            [import_item(r) for r in synthetic_items(n_items, seed=3)], batch=5000
        )
        await admin.publish("dispatch-pool", board=taskpool_pb2.BOARD_API)
        ideal = CAP / LATENCY_S
        clean = await one_run(bench, "clean")
        rate = clean["calls"] / clean["window"]
        span_rate = clean["all_calls"] / clean["span"]
        print(
            f"simulated endpoint (own process): {LATENCY_S * 1000:.0f} ms per call, declared "
            f"cap {CAP}, ideal {ideal:.0f} requests/s; {n_items} items"
        )
        print(
            f"clean run: {clean['answered']:.0f} answered, {clean['calls']:.0f} calls, "
            f"{rate:.0f} requests/s = {rate / ideal:.2f} x ideal (target >= 0.9); "
            f"submission dispatched in {clean['elapsed']:.1f} s"
        )
        print(
            f"start-up: first item call {clean['start'] * 1000:.0f} ms after CreateSubmission "
            f"answered (preflight done); from the preflight call to the last call "
            f"{span_rate:.0f} requests/s = {span_rate / ideal:.2f} x ideal"
        )
        print(
            f"call latency seen by the dispatcher: p50 {clean['latency_p50']:.0f} ms, "
            f"p99 {clean['latency_p99']:.0f} ms (the endpoint sleeps {LATENCY_S * 1000:.0f} ms); "
            f"requests in flight at the endpoint when one arrives: {clean['concurrency']:.1f} "
            f"(cap {CAP})"
        )
        record(
            "dispatch",
            "requests/s over the run / ideal (200 ms endpoint, cap 64)",
            rate / ideal,
            "x",
            0.9,
        )
        record("dispatch", "the same, preflight and start-up included", span_rate / ideal, "x")
        record("dispatch", "call latency p50 (endpoint sleeps 200 ms)", clean["latency_p50"], "ms")
        record(
            "dispatch",
            "CreateSubmission answered -> first item call",
            clean["start"] * 1000,
            "ms",
            higher_is_better=False,
        )
        per_1000 = {
            k.removeprefix("cpu_"): v * 1000 / clean["calls"]
            for k, v in clean.items()
            if k.startswith("cpu_")
        }
        print(
            "CPU seconds per 1,000 calls: "
            + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per_1000.items(), key=lambda kv: -kv[1]))
        )
        if clean_only:
            return
        noisy = await one_run(bench, "noisy", rate_429=0.10, rate_5xx=0.05)
        rate = noisy["calls"] / noisy["window"]
        print(
            f"10% 429 + 5% 5xx: {noisy['answered']:.0f} answered, {noisy['infra_failed']:.0f} "
            f"infra-failed, in {noisy['elapsed']:.1f} s; {noisy['calls']:.0f} calls "
            f"({noisy['calls'] - noisy['answered']:.0f} retries: {noisy['throttled']:.0f} x 429, "
            f"{noisy['errors']:.0f} x 5xx), {rate:.0f} requests/s = {rate / ideal:.2f} x ideal"
        )
        record("dispatch", f"{n_items:,} items with 10% 429 + 5% 5xx", noisy["elapsed"], "s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--clean-only", action="store_true", help="skip the 429/5xx run")
    args = parser.parse_args()
    asyncio.run(main(args.items, args.clean_only))
