"""StuckSweeper (an adapter, not a use case: it decides nothing any other part acts on; it
counts with two MongoDB queries and exports the counts as gauges, and is tested against the
real query): exports how many submissions are in each state, how many sit in a state past its
lease, and how many quarantined events (dead letters among them) wait for a maintainer.

These are counts for the whole deployment: every gateway replica exports the same values, so
alerts and dashboards read them with `max by`, never `sum` (one dead letter reads as one with
three replicas).

The dead letters' depth is the quarantine's held entries, not the dead-letter topic's offsets
(end minus beginning never falls): `quarantine retry` and `quarantine drop` resolve an entry,
and the depth falls by one at the next sweep (alert MedbenchDeadLettersPresent).

A submission SCORING for longer than the lease has every answer in and no report: a scorer,
the aggregator or a broker needs attention (alert MedbenchSubmissionsStuck). A DISPATCHING one
past the lease with no stall reason has not moved either. AWAITING_ANSWERS waits on the
partner and is never stuck; a stalled API run (infrastructure failures) waits on its resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Gauge
from pymongo.asynchronous.database import AsyncDatabase

from medbench_storage.quarantine import COLLECTION as QUARANTINE
from medbench_storage.quarantine import HELD

log = logging.getLogger(__name__)

STUCK = Gauge(
    "medbench_submissions_stuck",
    "Submissions in a state past its lease (no progress), by state and tenant.",
    ["state", "tenant"],
)


BY_STATE = Gauge("medbench_submissions", "Submissions by state (every sweep).", ["state"])
QUARANTINE_HELD = Gauge(
    "medbench_quarantine_held",
    "Quarantined events waiting for a retry or a drop, by source (consumer: dead letters; "
    "outbox) and topic (every sweep; falls when a maintainer retries or drops one).",
    ["source", "topic"],
)
STATES = (
    "AWAITING_ANSWERS",
    "DISPATCHING",
    "SCORING",
    "AGGREGATING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
)


class StuckSweeper:
    """A worker: counts stuck submissions every ``interval_s``."""

    name = "stuck-sweeper"

    def __init__(
        self, db: AsyncDatabase[dict[str, Any]], lease_s: float = 1800, interval_s: float = 60
    ) -> None:
        self._db = db
        self._lease = timedelta(seconds=lease_s)
        self._interval_s = interval_s
        self._stopping = asyncio.Event()
        self._held: dict[tuple[str, str], int] = {}

    def stop(self) -> None:
        self._stopping.set()

    async def sweep(self) -> dict[tuple[str, str], int]:
        """Counts and exports the stuck submissions; returns the counts."""
        cutoff = datetime.now(UTC) - self._lease
        query = {
            "updated_at": {"$lt": cutoff},
            "$or": [
                {"state": "SCORING"},
                {"state": "DISPATCHING", "state_reason": {"$in": ["", None]}},
            ],
        }
        counts: dict[tuple[str, str], int] = {}
        async for doc in self._db.submissions.find(query, {"state": 1, "tenant_id": 1}):
            key = (doc["state"], doc["tenant_id"])
            counts[key] = counts.get(key, 0) + 1
        STUCK.clear()
        for (state, tenant), n in counts.items():
            STUCK.labels(state, tenant).set(n)
        for state in STATES:
            BY_STATE.labels(state).set(await self._db.submissions.count_documents({"state": state}))
        await self.held()
        return counts

    async def held(self) -> dict[tuple[str, str], int]:
        """Counts and exports the held quarantine entries by source and topic (a pair none is
        held of any more is removed, not left at its last value); returns the counts."""
        pipeline: list[dict[str, Any]] = [
            {"$match": {"status": HELD}},
            {"$group": {"_id": {"source": "$source", "topic": "$topic"}, "n": {"$sum": 1}}},
        ]
        counts: dict[tuple[str, str], int] = {}
        async for row in await self._db[QUARANTINE].aggregate(pipeline):
            counts[(row["_id"]["source"], row["_id"]["topic"])] = row["n"]
        for source, topic in set(self._held) - set(counts):
            QUARANTINE_HELD.remove(source, topic)
        for (source, topic), n in counts.items():
            QUARANTINE_HELD.labels(source, topic).set(n)
        self._held = counts
        return counts

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - a metric, never a reason to stop serving
                log.warning("stuck-submission sweep failed: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval_s)
