"""Kafka handlers of the dispatcher."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from medbench.common.v1 import common_pb2
from medbench.submission.v1 import submission_events_pb2
from medbench_messaging.consumer import Delivery

log = logging.getLogger(__name__)


async def on_submission_created(
    event: submission_events_pb2.SubmissionCreated,
    delivery: Delivery,
    *,
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    """Records every submission it has seen (idempotent upsert); only API-mode ones need calls,
    and the gateway does not accept those yet, so upload-mode ones are recorded as not needed."""
    sub = event.submission
    needed = sub.mode == common_pb2.SUBMISSION_MODE_API
    await db.dispatch_jobs.update_one(
        {"_id": sub.submission_id},
        {
            "$setOnInsert": {
                "tenant_id": sub.tenant_id,
                "pool_id": sub.pool_id,
                "state": "PENDING" if needed else "NOT_NEEDED",
                "seen_at": datetime.now(UTC),
            }
        },
        upsert=True,
    )
    log.info("submission %s: dispatch %s", sub.submission_id, "pending" if needed else "not needed")
