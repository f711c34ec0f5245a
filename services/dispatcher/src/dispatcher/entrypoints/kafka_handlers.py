"""Kafka handlers of the dispatcher."""

from __future__ import annotations

from dispatcher.entrypoints import convert
from dispatcher.usecases.jobs import DispatchJobs
from medbench.submission.v1 import submission_events_pb2
from medbench_messaging.consumer import Delivery


async def on_submission_created(
    event: submission_events_pb2.SubmissionCreated,
    delivery: Delivery,
    *,
    jobs: DispatchJobs,
) -> None:
    """Records a dispatch job for every API-mode submission (idempotent)."""
    await jobs.take(convert.job_from_created(event))
