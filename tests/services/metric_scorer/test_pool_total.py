"""A pool's expected score count is counted once per key list, not once per batch."""

from __future__ import annotations

from collections.abc import Sequence

from medbench_storage.pool_keys import PoolKey
from metric_scorer.core.components import HasMetric, PoolTotals, expected_scores


def key(n: int, metric: str) -> PoolKey:
    return PoolKey(f"i{n}", "D", "dim", f"i{n}", metric, "mean", ("A",), ("p",))


def test_the_count_is_kept_per_key_list() -> None:
    pool = [key(0, "choice_single"), key(1, "key_point_recall+judge"), key(2, "judge")]
    # Judged key points ride on the judge's part; matched lexically, they are a part of their own.
    assert expected_scores(pool, judge_key_points=True) == 3
    assert expected_scores(pool, judge_key_points=False) == 4
    counted: list[int] = []

    def counting(keys: Sequence[HasMetric]) -> int:
        counted.append(len(keys))
        return expected_scores(keys, judge_key_points=False)

    totals = PoolTotals(count=counting)
    assert [totals.total("p1", pool) for _ in range(3)] == [4, 4, 4]
    assert counted == [3]
    # A reloaded key list (the key cache dropped the pool) is counted again.
    reloaded = list(pool[:1])
    assert totals.total("p1", reloaded) == 1 and counted == [3, 1]
    for n in range(totals.kept + 2):
        totals.total(f"other{n}", pool)
    assert len(totals) == totals.kept
