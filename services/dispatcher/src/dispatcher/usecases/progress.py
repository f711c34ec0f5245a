"""The dispatch progress event: what the gateway learns about a run, and only this way.

Every event of a submission carries the next number of a sequence stored with its job, taken
in the transaction that stores what the event reports: the gateway applies an event only when
its sequence is above the last it applied, so a redelivered or late event never moves a
submission backwards."""

from __future__ import annotations

from datetime import datetime

from dispatcher.core.jobs import Progress
from dispatcher.core.ports import Event
from medbench.dispatch.v1 import dispatch_events_pb2
from medbench_messaging import topics
from medbench_runtime.timestamps import timestamp


def progress_event(progress: Progress, sequence: int, at: datetime) -> Event:
    """The DispatchProgressed event of progress, numbered sequence."""
    event = dispatch_events_pb2.DispatchProgressed(
        event_id=f"{progress.submission_id}:dispatch:{sequence}",
        submission_id=progress.submission_id,
        tenant_id=progress.tenant_id,
        state=progress.state,
        reason=progress.reason,
        answered_items=progress.answered,
        infra_failed_items=progress.infra_failed,
        sequence=sequence,
        at=timestamp(at),
        answer_digests=progress.answer_digests,
    )
    return Event(event.event_id, topics.DISPATCH_PROGRESSED, event, key=progress.submission_id)
