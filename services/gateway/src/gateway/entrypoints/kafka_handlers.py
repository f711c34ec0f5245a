"""Kafka handlers of the gateway."""

from __future__ import annotations

from gateway.submissions import Submissions
from medbench.submission.v1 import submission_events_pb2
from medbench_messaging.consumer import Delivery


async def on_submission_completed(
    event: submission_events_pb2.SubmissionCompleted,
    delivery: Delivery,
    *,
    submissions: Submissions,
) -> None:
    """Marks the submission COMPLETED (idempotent)."""
    await submissions.complete(event)
