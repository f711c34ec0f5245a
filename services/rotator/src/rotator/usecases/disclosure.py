"""Disclosing a pool: its per-item results released, its question groups retired for ever
(rules: core/disclosure.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from medbench_runtime.errors import FailedPrecondition, NotFound
from rotator.core.bank import check_id
from rotator.core.disclosure import disclosure_refusal
from rotator.core.pools import PoolRecord
from rotator.core.ports import CurrentPools, PoolStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Disclosed:
    """A disclosed pool, its retired groups, and whether this call disclosed it."""

    pool: PoolRecord
    retired_groups: int
    newly: bool


class PoolDisclosure:
    """Discloses pools that no board serves any more."""

    def __init__(
        self,
        pools: PoolStore,
        current: CurrentPools,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pools = pools
        self._current = current
        self._clock = clock

    async def disclose(self, pool_id: str) -> Disclosed:
        """Marks the pool disclosed and retires its question groups, or FailedPrecondition
        while a board serves the pool or one of its groups; idempotent (a disclosed pool is
        returned as it is)."""
        check_id("pool_id", pool_id)
        pool = await self._pools.find_pool(pool_id)
        if pool is None:
            raise NotFound(f"pool {pool_id!r} not found")
        groups = await self._group_set(pool_id)
        if pool.disclosed_at is not None:
            return Disclosed(pool, len(groups), newly=False)
        current = await self._pools.current_pools()
        serving = [(c, await self._group_set(c.pool_id)) for c in current]
        refusal = disclosure_refusal(pool, groups, serving)
        if refusal is not None:
            raise FailedPrecondition(refusal)
        now = self._clock()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # as MongoDB keeps it
        # Atomic with the check: the commit holds only while the current pools are those read.
        at = await self._current.disclose(
            pool, groups, {(c.track, c.board): c.pool_id for c in current}, now
        )
        log.info("disclosed pool %s: %d question groups retired", pool_id, len(groups))
        # Another call may have committed first: then its time stands, and this one did nothing.
        return Disclosed(replace(pool, disclosed_at=at), len(groups), newly=at == now)

    async def _group_set(self, pool_id: str) -> set[str]:
        return {g for listed in (await self._pools.pool_groups(pool_id)).values() for g in listed}
