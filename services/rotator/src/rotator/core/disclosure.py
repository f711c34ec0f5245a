"""Disclosing a pool (pure): when a pool's keys may become public.

A pool is live until maintainers disclose it; from then on its submissions' per-item results
are released to their owners, so its keys are as good as public. It may be disclosed only once
no board serves any of its question groups: neither the pool itself nor a current pool holding
one of its groups (anchors carried over, a group served again under the exposure cap). Its
groups are then retired, never to serve again.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from rotator.core.pools import PoolRecord


def disclosure_refusal(
    pool: PoolRecord,
    groups: Collection[str],
    current: Sequence[tuple[PoolRecord, Collection[str]]],
) -> str | None:
    """Why the pool cannot be disclosed now (None: it can). current: every board's current
    pool with its question groups."""
    for serving, serving_groups in current:
        where = f"track {serving.track}, board {serving.board}"
        if serving.pool_id == pool.pool_id:
            return (
                f"pool {pool.pool_id} is the current pool of {where}: a live pool is never "
                f"disclosed; rotate the board first"
            )
        shared = sorted(set(groups) & set(serving_groups))
        if shared:
            named = ", ".join(shared[:3]) + (
                f" and {len(shared) - 3} more" if len(shared) > 3 else ""
            )
            return (
                f"pool {pool.pool_id} shares {len(shared)} question groups ({named}) with "
                f"{serving.pool_id}, the current pool of {where}: disclosing it would publish "
                f"keys still in use; rotate that board until its current pool holds none of them"
            )
    return None
