"""KeyRetention: no endpoint key outlives the run that needs it.

A run that ends (DONE or FAILED) deletes its key at once (Dispatcher._end). A STALLED run keeps
its key for a resume, for at most the retention (MEDBENCH_SECRETS__STALLED_RETENTION_DAYS);
after it the run fails with that reason (announced to the gateway like every end) and its key is
deleted. The sweep also deletes keys a crash left behind between a run's end and the delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from dispatcher.core.jobs import ENDED, FAILED, Progress, stalled_too_long
from dispatcher.core.ports import JobStore, Outbox, SealedKeys, Transactions
from dispatcher.usecases.progress import progress_event

log = logging.getLogger(__name__)

_STATE_BATCH = 500

__all__ = ["KeyRetention", "stalled_too_long"]


class KeyRetention:
    """A worker: every interval_s, ends stalled runs past the retention and deletes the keys
    of runs that are over."""

    name = "key-retention"

    def __init__(
        self,
        jobs: JobStore,
        keys: SealedKeys,
        transactions: Transactions,
        outbox: Outbox,
        retention_days: float,
        interval_s: float = 300.0,
    ) -> None:
        self._jobs = jobs
        self._keys = keys
        self._transactions = transactions
        self._outbox = outbox
        self._retention_days = retention_days
        self._interval_s = interval_s
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def sweep(self, now: datetime | None = None) -> tuple[int, int]:
        """(stalled runs failed, leftover keys deleted)."""
        now = now or datetime.now(UTC)
        cutoff = now - timedelta(days=self._retention_days)
        reason = stalled_too_long(self._retention_days)
        expired = 0
        for job in await self._jobs.stalled_before(cutoff):

            async def commit(tx: Any, job: Any = job) -> bool:
                if not await self._jobs.fail_stalled(tx, job, reason):
                    return False  # resumed or changed meanwhile
                sequence = await self._jobs.next_sequence(tx, job.submission_id)
                progress = Progress(
                    job.submission_id,
                    job.tenant_id,
                    FAILED,
                    reason,
                    job.answered or 0,
                    job.infra_failed or 0,
                )
                await self._outbox.add(tx, [progress_event(progress, sequence, now)])
                return True

            if await self._transactions.run(commit):
                self._outbox.notify()
                await self._keys.delete(job.submission_id)
                expired += 1
                log.warning(
                    "dispatch of %s stalled past the key retention: FAILED", job.submission_id
                )
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
