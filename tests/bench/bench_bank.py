"""Benchmark: a 700,000-item synthetic bank through the rotator.

Prints the import rate (items/s through ImportTasks into the local stack), the RotatePool
time over the whole bank, and the rotator's peak resident memory (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

from medbench.common.v1 import common_pb2
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_client.api import channel
from medbench_client.bank_files import import_item
from medbench_devstack.services import ServiceSpec
from rotator.core.synthetic import synthetic_items
from tests.bench.local_stack import bench_stack
from tests.bench.results import record


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


async def main(n_items: int, batch: int) -> None:
    with bench_stack("bank", [ServiceSpec("rotator", "rotator")]) as bench:
        stack = bench.services
        pid = stack.process("rotator").pid
        assert pid is not None
        stub = taskpool_service_pb2_grpc.TaskPoolServiceStub(
            channel(stack.address("rotator"), stack.admin_key)
        )
        rows = synthetic_items(n_items, seed=7)

        async def messages() -> AsyncIterator[taskpool_service_pb2.ImportTasksRequest]:
            while chunk := list(itertools.islice(rows, batch)):
                yield taskpool_service_pb2.ImportTasksRequest(items=[import_item(r) for r in chunk])

        started = time.perf_counter()
        imported = await stub.ImportTasks(messages())
        import_s = time.perf_counter() - started
        assert imported.imported == n_items and not imported.rejected, imported.rejected[:3]
        before = memory_kib(pid)

        started = time.perf_counter()
        rotated = await stub.RotatePool(
            taskpool_service_pb2.RotatePoolRequest(
                track=common_pb2.TRACK_LLM, board=taskpool_pb2.BOARD_UPLOAD, cycle="bench"
            )
        )
        rotate_s = time.perf_counter() - started
        after = memory_kib(pid)
        pool = rotated.pool
        print(
            f"bank: {n_items} items, imported in {import_s:.1f} s "
            f"({n_items / import_s:,.0f} items/s; target >= 2,000)"
        )
        print(
            f"RotatePool over the bank: {rotate_s:.1f} s (target <= 60 s): pool {pool.pool_id} "
            f"with {pool.item_count} items in {pool.group_count} groups over "
            f"{len(pool.datasets)} datasets"
        )
        record("bank", f"import of {n_items:,} items", n_items / import_s, "items/s", 2_000)
        record("bank", "RotatePool over the bank", rotate_s, "s", 60, False)
        record("bank", "rotator peak RSS", after["VmHWM"] / 1024, "MiB", 1024, False)
        print(
            f"rotator memory: RSS {before['VmRSS'] / 1024:.0f} MiB before rotation, "
            f"{after['VmRSS'] / 1024:.0f} MiB after; peak (VmHWM) "
            f"{after['VmHWM'] / 1024:.0f} MiB (target <= 1,024 MiB)"
        )
        print(
            "rotator log:",
            [line for line in stack.process("rotator").tail(200).splitlines() if "rotated" in line][
                -1:
            ],
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=700_000)
    parser.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args()
    asyncio.run(main(args.items, args.batch))
