"""Kafka handlers of the gateway: one line each, the use case decides."""

from __future__ import annotations

from gateway.entrypoints import convert
from gateway.usecases.submissions import Submissions
from medbench.dispatch.v1 import dispatch_events_pb2
from medbench.submission.v1 import submission_events_pb2
from medbench_messaging.consumer import Delivery


async def on_submission_completed(
    event: submission_events_pb2.SubmissionCompleted,
    delivery: Delivery,
    *,
    submissions: Submissions,
) -> None:
    """Marks the submission COMPLETED (idempotent)."""
    await submissions.complete(
        event.tenant_id,
        event.submission_id,
        event.scored_items,
        convert.completed_at(event.completed_at),
    )


async def on_dispatch_progressed(
    event: dispatch_events_pb2.DispatchProgressed,
    delivery: Delivery,
    *,
    submissions: Submissions,
) -> None:
    """Applies the dispatcher's progress to an API-mode submission (idempotent, never
    backwards)."""
    await submissions.apply_dispatch_progress(convert.dispatch_progress(event))
