"""The stuck-submission gauge, against the real Mongo-wire server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from gateway.adapters.mongo_stuck import StuckSweeper
from tests.conftest import Servers

pytestmark = [pytest.mark.integration]


async def test_only_submissions_past_their_lease_without_a_reason_count(
    servers: Servers, unique: str
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri, tz_aware=True)
    db = client[f"stuck_{unique}"]
    old = datetime.now(UTC) - timedelta(hours=2)
    new = datetime.now(UTC)
    rows = [
        ("a", "SCORING", "t1", old, ""),  # stuck
        ("b", "SCORING", "t1", old, ""),  # stuck
        ("c", "SCORING", "t2", new, ""),  # recent
        ("d", "DISPATCHING", "t2", old, ""),  # stuck: no progress, no reason
        ("e", "DISPATCHING", "t2", old, "3 items failed for infrastructure reasons"),  # stalled
        ("f", "AWAITING_ANSWERS", "t3", old, ""),  # waits on the partner
        ("g", "COMPLETED", "t3", old, ""),
    ]
    try:
        await db.submissions.insert_many(
            [
                {"_id": i, "state": st, "tenant_id": t, "updated_at": at, "state_reason": why}
                for i, st, t, at, why in rows
            ]
        )
        counts = await StuckSweeper(db, lease_s=1800).sweep()
        assert counts == {("SCORING", "t1"): 2, ("DISPATCHING", "t2"): 1}
        sample = REGISTRY.get_sample_value(
            "medbench_submissions_stuck", {"state": "SCORING", "tenant": "t1"}
        )
        assert sample == 2
        await db.submissions.update_many({}, {"$set": {"state": "COMPLETED"}})
        assert await StuckSweeper(db).sweep() == {}
        gone = REGISTRY.get_sample_value(
            "medbench_submissions_stuck", {"state": "SCORING", "tenant": "t1"}
        )
        assert gone is None
    finally:
        await client.close()
