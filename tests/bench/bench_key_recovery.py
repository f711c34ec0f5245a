"""Benchmark: key recovery over a whole pool at the default quotas (issue 22, item 4).

A synthetic multiple-choice bank (rotator.core.synthetic: single-choice datasets with five
option permutations per question, a mixed dataset, a multiple-choice one) is imported into a
fresh local stack and rotated into a real pool of the LLM track's upload board (30 question
groups per dataset). One honest tenant checks the harness's keys against the platform's
scoring (every bank item right), then the adversaries of tests/security/key_recovery.py play
the pool side by side, each its own tenant at the platform's default quotas (nothing
overridden but one: a whole cycle is played at once, each adversary's per-day cap raised to
the per-pool cap, hidden_per_cycle, which stays the default), each until it has learnt all it
can, has spent --rounds submissions (default 60: more than the per-pool cap, so the platform's
refusal ends them) or the platform refuses a create.

Prints per adversary and dataset the per-item key accuracy, the best constant answer's
(chance) and the difference (recovered beyond chance, points), then the worst case per dataset;
records the worst case (target <= 5 points) and how many submissions the quotas allowed.

--aggregates-only: adversaries never read GetItemResults (what the reports alone give, e.g. with
per-item results withheld); recorded under figures of their own, without a target.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence

from medbench_client.api import provision_key
from tests.bench.local_stack import bench_stack
from tests.bench.results import record
from tests.security.key_recovery import (
    ADVERSARIES,
    TARGET_POINTS,
    Result,
    Truth,
    attack,
    honest_run,
    make_adversaries,
    synthetic_pool,
    table,
    whole_cycle,
    worst,
)


def record_results(results: Sequence[Result], aggregates_only: bool, rounds: int) -> None:
    """The table's rows: the worst dataset over every adversary (target <= 5 points) and the
    submissions the platform let the adversaries make."""
    overall = worst(results).overall
    if overall is None:
        return
    figure, who = overall
    suffix = f", aggregates only, {rounds} submissions at most" if aggregates_only else ""
    record(
        "key recovery",
        f"keys recovered beyond chance, worst dataset ({len(results)} adversaries, default "
        f"quotas, a whole cycle{suffix})",
        max(figure.beyond, 0.0),
        "points",
        None if aggregates_only else TARGET_POINTS,
        higher_is_better=False,
    )
    record(
        "key recovery",
        f"submissions each adversary made before the quotas or its rounds ended it{suffix}",
        max(r.submissions for r in results),
        "submissions",
    )
    print(f"worst: {figure.beyond:+.1f} points beyond chance ({figure.dataset}, {who})")


async def main(n_items: int, rounds: int, aggregates_only: bool, seed: int) -> None:
    with bench_stack("keyrec") as bench:
        stack = bench.services
        gateway = stack.address("gateway")
        rows, pool = await synthetic_pool(stack.address("rotator"), stack.admin_key, n_items, seed)
        truth = Truth(rows)
        print(
            f"pool {pool.pool_id}: {pool.item_count} items in {pool.group_count} groups over "
            f"{len(pool.datasets)} datasets (bank of {n_items} synthetic items)"
        )

        def key(tenant: str) -> str:
            return provision_key(gateway, stack.admin_key, tenant)

        honest = await asyncio.to_thread(key, "keyrec-honest")
        found = await honest_run(
            gateway, honest, truth, stack.address("aggregator"), stack.admin_key
        )
        assert all(d.right == d.bank_items for d in found), f"the harness's keys are wrong: {found}"
        print(
            "honest tenant answering the harness's keys, right/bank items (score): "
            + ", ".join(f"{d.dataset} {d.right}/{d.bank_items} ({d.score:.1f})" for d in found)
        )

        adversaries = make_adversaries(
            "keyrec-adv", rounds, ADVERSARIES, use_item_results=not aggregates_only
        )
        keys = {a.tenant: await asyncio.to_thread(key, a.tenant) for a in adversaries}
        per_cycle = await whole_cycle(gateway, stack.admin_key, keys)
        print(f"each adversary may run the pool {per_cycle} times (a whole cycle's cap)")
        started = time.perf_counter()
        results = await attack(truth, gateway, keys, adversaries, timeout_s=300)
        print(table(results))
        print(
            f"{sum(r.submissions for r in results)} submissions in "
            f"{time.perf_counter() - started:.0f} s"
        )
        ruled_out = sum(r.ruled_out_true_keys for r in results)
        assert not ruled_out, f"the harness ruled out {ruled_out} true keys"
        record_results(results, aggregates_only, rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=3000, help="synthetic bank size")
    parser.add_argument("--rounds", type=int, default=60, help="submissions per adversary, most")
    parser.add_argument("--aggregates-only", action="store_true")
    parser.add_argument("--seed", type=int, default=22)
    args = parser.parse_args()
    asyncio.run(main(args.items, args.rounds, args.aggregates_only, args.seed))
