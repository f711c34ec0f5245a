"""MongoLeakSignals: the leak signals the metric scorer records in the sealed database
(`leak_signals`: its collection and its indexes), read for maintainers."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from rotator.core.leaktrace import LeakSignal


class MongoLeakSignals:
    """LeakSignals over the sealed `leak_signals` collection (read only)."""

    def __init__(self, sealed: AsyncDatabase[dict[str, Any]]) -> None:
        self._sealed = sealed

    async def signals(self, tenant_id: str, pool_id: str, limit: int) -> list[LeakSignal]:
        query = {k: v for k, v in (("tenant_id", tenant_id), ("pool_id", pool_id)) if v}
        cursor = self._sealed.leak_signals.find(query).sort([("recorded_at", -1), ("_id", 1)])
        return [
            LeakSignal(
                d["submission_id"],
                d["tenant_id"],
                d["pool_id"],
                d["item_id"],
                d["dataset"],
                d["kind"],
                d["matched"],
                d["recorded_at"],
            )
            async for d in cursor.limit(limit)
        ]
