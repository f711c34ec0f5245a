"""MongoPoolKeys: the sealed answer keys of a frozen pool, cached per pool (pools are immutable).

Only the scorers read these (the rotator writes them): they are the ground truth.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase


@dataclass(frozen=True)
class PoolKey:
    """The sealed key of one pool item. Never leaves the scorer."""

    item_id: str
    dataset: str
    dimension: str
    group_id: str
    metric: str
    rule: str
    reference: tuple[str, ...]
    key_points: tuple[str, ...] = ()
    rubric_id: str = ""
    prompt: str = ""
    """The prompt as the judge sees it (judge-scored items only)."""
    image_ids: tuple[str, ...] | None = None
    """Content ids (sha256) of the item's bank images, in the item's order (judge-scored items
    only; () when it has none). None for a pool frozen before the keys recorded them."""


class UnknownPool(Exception):
    """No sealed keys are stored for the pool."""


class MongoPoolKeys:
    """Reads the sealed pool_keys chunks; keeps a few pools in memory."""

    def __init__(self, sealed: AsyncDatabase[dict[str, Any]], cached_pools: int = 4) -> None:
        self._sealed = sealed
        self._cache: OrderedDict[str, tuple[list[PoolKey], dict[str, str]]] = OrderedDict()
        self._cached_pools = cached_pools
        self._lock = asyncio.Lock()

    async def keys(self, pool_id: str) -> list[PoolKey]:
        """Keys indexed by ordinal."""
        return (await self._pool(pool_id))[0]

    async def coverage(self, pool_id: str) -> dict[str, str]:
        """Dataset -> dimension of every dataset of the pool's track (in the pool's registry
        version): what a report on the pool must cover. Empty for a pool frozen before the
        rotator recorded it."""
        return (await self._pool(pool_id))[1]

    async def _pool(self, pool_id: str) -> tuple[list[PoolKey], dict[str, str]]:
        async with self._lock:
            found = self._cache.get(pool_id)
            if found is not None:
                self._cache.move_to_end(pool_id)
                return found
            keys: list[PoolKey] = []
            coverage: dict[str, str] = {}
            async for chunk in self._sealed.pool_keys.find({"pool_id": pool_id}).sort("chunk", 1):
                # The first chunk carries the coverage (pools frozen since it is recorded).
                coverage.update(
                    (dataset, dimension) for dataset, dimension in chunk.get("coverage", ())
                )
                for k in chunk["keys"]:
                    if k["ordinal"] != len(keys):
                        raise UnknownPool(f"pool {pool_id}: keys are not contiguous at {len(keys)}")
                    keys.append(
                        PoolKey(
                            k["item_id"],
                            k["dataset"],
                            k["dimension"],
                            k["group_id"],
                            k["metric"],
                            k["rule"],
                            tuple(k["reference"]),
                            tuple(k.get("key_points", ())),
                            k.get("rubric_id", ""),
                            k.get("prompt", ""),
                            tuple(k["image_ids"]) if "image_ids" in k else None,
                        )
                    )
            if not keys:
                raise UnknownPool(f"no sealed keys for pool {pool_id}")
            self._cache[pool_id] = (keys, coverage)
            while len(self._cache) > self._cached_pools:
                self._cache.popitem(last=False)
            return keys, coverage
