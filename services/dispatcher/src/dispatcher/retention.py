"""KeyRetention: no endpoint key outlives the run that needs it.

A run that ends (DONE or FAILED) deletes its key at once (Dispatcher._finish_done). A STALLED
run keeps its key for a resume, for at most the retention
(MEDBENCH_SECRETS__STALLED_RETENTION_DAYS); after it the run fails with that reason and its key
is deleted. The sweep also deletes keys a crash left behind between a run's end and the delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from dispatcher.adapters.mongo_jobs import MongoJobs
from medbench_storage.endpoint_keys import EndpointKeys

log = logging.getLogger(__name__)

ENDED = ("DONE", "FAILED")
_STATE_BATCH = 500


def stalled_too_long(days: float) -> str:
    return (
        f"stalled for more than {days:g} days without a resume: its endpoint API key was "
        f"deleted; create a new submission"
    )


class KeyRetention:
    """A worker: every interval_s, ends stalled runs past the retention and deletes the keys
    of runs that are over."""

    name = "key-retention"

    def __init__(
        self,
        jobs: MongoJobs,
        keys: EndpointKeys,
        retention_days: float,
        interval_s: float = 300.0,
    ) -> None:
        self._jobs = jobs
        self._keys = keys
        self._retention_days = retention_days
        self._interval_s = interval_s
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def sweep(self, now: datetime | None = None) -> tuple[int, int]:
        """(stalled runs failed, leftover keys deleted)."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self._retention_days)
        expired = 0
        for doc in await self._jobs.stalled_before(cutoff):
            if await self._jobs.fail_stalled(doc, stalled_too_long(self._retention_days)):
                await self._keys.delete(doc["_id"])
                expired += 1
                log.warning("dispatch of %s stalled past the key retention: FAILED", doc["_id"])
        held = [str(d["_id"]) for d in await self._keys.held()]
        leftovers = 0
        for i in range(0, len(held), _STATE_BATCH):
            states = await self._jobs.states(held[i : i + _STATE_BATCH])
            for submission_id, state in states.items():
                if state in ENDED and await self._keys.delete(submission_id):
                    leftovers += 1
        if leftovers:
            log.info("deleted %d endpoint keys of runs that were over", leftovers)
        return expired, leftovers

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - the next sweep tries again
                log.warning("endpoint key retention sweep failed: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval_s)
