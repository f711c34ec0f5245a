"""DispatchJobs: what the dispatcher is asked about its jobs: take a new API-mode submission,
report where a dispatch stands, resume a stalled one."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dispatcher.core.jobs import ENDED, RUNNING, JobSpec, Progress
from dispatcher.core.ports import JobStore, Outbox, Transactions
from dispatcher.usecases.progress import progress_event
from dispatcher.usecases.runner import Dispatcher
from medbench_runtime.errors import FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispatchStatus:
    """Where one dispatch stands (state "" when the submission has no dispatch job)."""

    state: str = ""
    reason: str = ""
    answered: int = 0
    infra_failed: int = 0
    calls: int = 0
    concurrency: int = 0


class DispatchJobs:
    """The dispatch jobs, as the gateway and operators see them."""

    def __init__(
        self,
        jobs: JobStore,
        dispatcher: Dispatcher,
        transactions: Transactions,
        outbox: Outbox,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._jobs = jobs
        self._dispatcher = dispatcher
        self._transactions = transactions
        self._outbox = outbox
        self._clock = clock

    async def take(self, job: JobSpec | None) -> None:
        """Records a dispatch job for an API-mode submission (None: an upload-mode one, nothing
        to do). Idempotent: a redelivered submission.created changes nothing."""
        if job is None:
            return
        await self._jobs.add(job, self._clock())
        self._dispatcher.notify()
        log.info("dispatch job recorded for %s", job.submission_id)

    async def status(self, submission_id: str) -> DispatchStatus:
        if not submission_id:
            raise InvalidArgument("submission_id is required")
        stored = await self._jobs.job(submission_id)
        if stored is None:
            return DispatchStatus()
        live = self._dispatcher.job(submission_id)
        if live is not None:
            answered, failed = live.answered, live.infra_failed
        elif stored.answered is not None:
            answered, failed = stored.answered, stored.infra_failed or 0
        else:  # waiting to be picked up, or resumed: count what is recorded
            answered, failed = await self._jobs.counts(submission_id)
        return DispatchStatus(
            state=stored.state,
            reason=stored.reason,
            answered=answered,
            infra_failed=failed,
            calls=stored.calls + (live.calls if live else 0),
            concurrency=live.limit.limit if live else 0,
        )

    async def resume(self, submission_id: str) -> int:
        """Sends a STALLED run's infrastructure-failed items again; how many. Idempotent (a
        RUNNING run: 0); FAILED_PRECONDITION when the run is over."""
        if not submission_id:
            raise InvalidArgument("submission_id is required")
        stored = await self._jobs.job(submission_id)
        if stored is None:
            raise NotFound(f"no dispatch for submission {submission_id}")
        if stored.state in ENDED:
            raise FailedPrecondition(
                f"submission {submission_id} is {stored.state}: nothing to resume"
                + (f" ({stored.reason})" if stored.reason else "")
            )
        resumed = await self._jobs.resume(submission_id)
        if resumed:
            # The gateway learns that the run goes on (the stall reason and failures are gone).
            answered, _ = await self._jobs.counts(submission_id)
            now = self._clock()

            async def commit(tx: Any) -> None:
                sequence = await self._jobs.next_sequence(tx, submission_id)
                progress = Progress(submission_id, stored.tenant_id, RUNNING, "", answered, 0)
                await self._outbox.add(tx, [progress_event(progress, sequence, now)])

            await self._transactions.run(commit)
            self._outbox.notify()
        self._dispatcher.notify()
        return resumed
