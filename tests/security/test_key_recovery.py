"""Key recovery at a small scale (issue 22, item 4): adversaries play one pool through the public
API of the real stack, each its own tenant within its quotas, and none may read back more of the
hidden pool's keys than the best constant answer gives, plus 5 percentage points, on any dataset
(README "Security"). `tests/bench/bench_key_recovery.py` plays as long as the default quotas let
it.

The pool is built as a cycle's pool is (RotatePool: 30 question groups per dataset) from a
synthetic multiple-choice bank, so one recovered question is 1/30 of a dataset, not a third of
it as in the sample bank. The keys are the bank rows this test imports
(tests/security/key_recovery.py: Truth), never anything the platform says; the first test
checks them against the platform's own scoring."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from medbench_devstack.services import ServiceStack
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
from tests.e2e.harness import partner_key
from tests.security.key_recovery import (
    TARGET_POINTS,
    Truth,
    attack,
    honest_run,
    make_adversaries,
    synthetic_pool,
    table,
    whole_cycle,
    worst,
)

pytestmark = [pytest.mark.e2e]

# A bank large enough for 30 groups in each of the generator's five datasets on the upload board
# (each group belongs to one board).
BANK_ITEMS = 2500
# Submissions each adversary may make here; the platform's quotas may stop it sooner. Constant
# letters needs four to try every letter of five-option items.
ROUNDS = {
    "constant letters": 4,
    "group differencing": 3,
    "dimension differencing": 3,
    "combined": 3,
    "live probing": 4,
}


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    with running_stack(servers, tmp_path_factory, "keyrec") as services:
        yield services


@pytest.fixture(scope="module")
async def pool(stack: ServiceStack) -> tuple[list[dict[str, Any]], Truth, list[str]]:
    rows, made = await synthetic_pool(stack.address("rotator"), stack.admin_key, BANK_ITEMS, 22)
    return rows, Truth(rows), sorted(d.dataset for d in made.datasets)


async def test_the_harness_keys_are_the_platforms(
    stack: ServiceStack, pool: tuple[list[dict[str, Any]], Truth, list[str]]
) -> None:
    """Answering the harness's key of every shown bank item gets exactly those items right in
    every dataset: the keys it measures against are the platform's, in the tenant's order."""
    _, truth, datasets = pool
    key = await asyncio.to_thread(partner_key, stack, "keyrec-honest")
    found = await honest_run(
        stack.address("gateway"), key, truth, stack.address("aggregator"), stack.admin_key, 60
    )
    assert sorted(d.dataset for d in found) == datasets
    assert [(d.dataset, d.right) for d in found] == [(d.dataset, d.bank_items) for d in found]
    assert all(d.bank_items >= 30 for d in found), found


async def test_no_adversary_recovers_keys_beyond_chance(
    stack: ServiceStack, pool: tuple[list[dict[str, Any]], Truth, list[str]]
) -> None:
    _, truth, datasets = pool
    adversaries = make_adversaries("keyrec-adv", ROUNDS)
    keys = {a.tenant: await asyncio.to_thread(partner_key, stack, a.tenant) for a in adversaries}
    # Days of the cycle played at once (the per-pool cap stays): more rounds than a day allows.
    assert await whole_cycle(stack.address("gateway"), stack.admin_key, keys) >= max(
        ROUNDS.values()
    )
    results = await attack(truth, stack.address("gateway"), keys, adversaries, timeout_s=60)
    text = table(results)
    print(text)
    for result in results:
        assert result.submissions == ROUNDS[result.adversary] or "finished" in result.stopped, text
        assert sorted(f.dataset for f in result.datasets) == datasets, text
        # The harness reads soundly: no adversary ruled out a key that is the truth.
        assert result.ruled_out_true_keys == 0, text
    found = worst(results).overall
    assert found is not None
    figure, who = found
    assert figure.beyond <= TARGET_POINTS, (
        f"{who} recovered {figure.beyond:.1f} points beyond chance on {figure.dataset} "
        f"(target <= {TARGET_POINTS})\n{text}"
    )
