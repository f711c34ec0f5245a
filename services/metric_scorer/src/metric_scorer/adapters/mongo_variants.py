"""MongoVariants: each download's option orders (sealed), cached per submission."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from metric_scorer.core.ports import Orders


class MongoVariants:
    """Reads the rotator's sealed `variants`; a submission's variant never changes."""

    def __init__(self, sealed: AsyncDatabase[dict[str, Any]], cached: int = 64) -> None:
        self._sealed = sealed
        self._cache: OrderedDict[str, Orders] = OrderedDict()
        self._cached = cached
        self._lock = asyncio.Lock()

    async def orders(self, submission_id: str) -> Orders:
        """item_id -> order shown to this submission's tenant (empty: canonical order)."""
        async with self._lock:
            found = self._cache.get(submission_id)
            if found is not None:
                self._cache.move_to_end(submission_id)
                return found
            doc = await self._sealed.variants.find_one({"_id": submission_id}, {"orders": 1})
            orders = (
                {}
                if doc is None
                else {
                    item_id: tuple(map(int, order.split(","))) for item_id, order in doc["orders"]
                }
            )
            self._cache[submission_id] = orders
            while len(self._cache) > self._cached:
                self._cache.popitem(last=False)
            return orders
