"""Kafka handlers of the dispatcher."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from dispatcher.adapters.mongo_jobs import MongoJobs
from medbench.common.v1 import common_pb2
from medbench.submission.v1 import submission_events_pb2
from medbench_messaging.consumer import Delivery

log = logging.getLogger(__name__)


async def on_submission_created(
    event: submission_events_pb2.SubmissionCreated,
    delivery: Delivery,
    *,
    jobs: MongoJobs,
    notify: object = None,
) -> None:
    """Records a dispatch job for every API-mode submission (idempotent upsert)."""
    sub = event.submission
    if sub.mode != common_pb2.SUBMISSION_MODE_API:
        return
    d = sub.decoding
    await jobs.upsert_job(
        {
            "_id": sub.submission_id,
            "tenant_id": sub.tenant_id,
            "pool_id": sub.pool_id,
            "track": sub.track,
            "expected": sub.progress.expected_items,
            "state": "RUNNING",
            "reason": "",
            "endpoint": {
                "base_url": sub.endpoint.base_url,
                "model": sub.endpoint.model,
                "max_concurrency": sub.endpoint.max_concurrency,
            },
            "self_test": sub.endpoint.self_test,
            "decoding": {
                "temperature": d.temperature,
                "max_tokens": d.max_tokens,
                "context_window": d.context_window,
                "top_p": d.top_p if d.HasField("top_p") else None,
            },
            "calls": 0,
            "batches": 0,
            "created_at": datetime.now(UTC),
        }
    )
    if callable(notify):
        notify()
    log.info("dispatch job recorded for %s", sub.submission_id)
