"""`make chaos`: the chaos runs at full size, with the table printed and written out.

python -m tests.chaos --items 20000 --modes upload api
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

from tests.chaos.rig import FAULTS, ChaosRig, ModeResult, table

OUT = Path(".tmp/chaos/CHAOS.md")


async def main(items: int, modes: list[str], seed: int, work: Path) -> list[ModeResult]:
    # A SIGTERM (timeout, make interrupted) cancels the run, so the rig still stops its
    # servers and services on the way out.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with ChaosRig(work, items, seed) as rig:
        await rig.load()
        results = []
        for mode in modes:
            started = time.monotonic()
            result = await rig.mode(mode, FAULTS)
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medbench-chaos-") as work:
        results = asyncio.run(main(args.items, args.modes, args.seed, Path(work)))
    text = table(results)
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        f"# Chaos run\n\n{args.items:,} items per mode, seed {args.seed}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}\n\n"
        f"{text}\n"
    )
    print(f"written to {OUT}")
    sys.exit(0 if all(r.ok for r in results) else 1)
