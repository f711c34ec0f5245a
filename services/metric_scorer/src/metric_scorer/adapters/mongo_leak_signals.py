"""MongoLeakSignals: canaries answered with their original's right answer, in the sealed
database (`leak_signals`), for maintainers; never read by anything a partner reaches."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from medbench_storage.indexes import IndexSpec, asc
from metric_scorer.core.canary import LeakSignal

SEALED_INDEXES = (
    IndexSpec("leak_signals", asc("tenant_id", "pool_id")),
    # Maintainers read them newest first (the rotator's ListLeakSignals).
    IndexSpec("leak_signals", (("recorded_at", -1),)),
)


class MongoLeakSignals:
    """LeakSignals: one document per (submission, item); a redelivered batch rewrites the same
    document and keeps the first time it was seen."""

    def __init__(self, sealed: AsyncDatabase[dict[str, Any]]) -> None:
        self._sealed = sealed

    async def record(self, signals: Sequence[LeakSignal]) -> None:
        now = datetime.now(UTC)
        for s in signals:
            await self._sealed.leak_signals.update_one(
                {"_id": f"{s.submission_id}:{s.item_id}"},
                {
                    "$set": {
                        "submission_id": s.submission_id,
                        "tenant_id": s.tenant_id,
                        "pool_id": s.pool_id,
                        "item_id": s.item_id,
                        "dataset": s.dataset,
                        "kind": s.kind,
                        "matched": s.matched,
                    },
                    "$setOnInsert": {"recorded_at": now},
                },
                upsert=True,
            )
