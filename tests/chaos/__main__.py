"""`make chaos`: the chaos runs at full size, with the table printed and written out.

python -m tests.chaos --items 20000 --modes upload api [--kafka cluster]

--kafka cluster: a 3-node KRaft cluster instead of one broker, the cluster's faults
(rig.CLUSTER_FAULTS), and two replicas of every service when the devstack runs replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

from tests.chaos.rig import (
    CLUSTER_FAULTS,
    CLUSTER_REPLICAS,
    FAULTS,
    ChaosRig,
    ModeResult,
    stack_has_replicas,
    table,
)

OUT = Path(".tmp/chaos/CHAOS.md")


async def main(
    items: int, modes: list[str], seed: int, work: Path, kafka: str, replicas: int
) -> list[ModeResult]:
    # A SIGTERM (timeout, make interrupted) cancels the run, so the rig still stops its
    # servers and services on the way out.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    faults = CLUSTER_FAULTS if kafka == "cluster" else FAULTS
    with ChaosRig(work, items, seed, kafka=kafka, replicas=replicas) as rig:
        await rig.load()
        results = []
        for mode in modes:
            started = time.monotonic()
            result = await rig.mode(mode, faults)
            print(
                f"{mode}: {'ok' if result.ok else 'FAILED'} in {time.monotonic() - started:.0f} s"
            )
            results.append(result)
        return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--modes", nargs="+", default=["upload", "api"])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--kafka", choices=["broker", "cluster"], default="broker")
    parser.add_argument(
        "--replicas",
        type=int,
        default=None,
        help=f"processes per service (default: {CLUSTER_REPLICAS} on the cluster when the "
        "devstack runs replicas, else 1)",
    )
    args = parser.parse_args()
    replicas = args.replicas
    if replicas is None:
        replicas = CLUSTER_REPLICAS if args.kafka == "cluster" and stack_has_replicas() else 1
    with tempfile.TemporaryDirectory(prefix="medbench-chaos-") as work:
        results = asyncio.run(
            main(args.items, args.modes, args.seed, Path(work), args.kafka, replicas)
        )
    text = table(results)
    print(text)
    kafka = (
        "one Kafka broker" if args.kafka == "broker" else "a 3-node Kafka cluster (RF 3, min ISR 2)"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        f"# Chaos run\n\n{args.items:,} items per mode on {kafka}, {replicas} process(es) per "
        f"service, seed {args.seed}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}\n\n"
        f"{text}\n"
    )
    print(f"written to {OUT}")
    sys.exit(0 if all(r.ok for r in results) else 1)
