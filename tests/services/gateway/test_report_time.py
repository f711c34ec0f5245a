"""The time from a submission's last answer to its report (the report-time SLO's histogram)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from tests.services.gateway.test_usecases import T, World, progress


def observed(mode: str, le: str) -> float:
    labels = {"mode": mode, "le": le}
    return REGISTRY.get_sample_value("medbench_report_seconds_bucket", labels) or 0.0


@pytest.mark.parametrize("api", [False, True], ids=["upload", "api"])
async def test_completion_observes_the_seconds_since_the_last_answer_once(api: bool) -> None:
    w = World(items=4)
    mode = "api" if api else "upload"
    if api:
        sid = await w.api_mode()
        await w.submissions.apply_dispatch_progress(progress(sid, "DONE", 4, 1))
    else:
        sid = await w.upload_mode()
        answers = [(f"item-{i}", "A") for i in range(4)]
        await w.submissions.upload(T, sid, "b1", answers, final=True)
    final_at = w.store.records[(T, sid)]["answers_final_at"]
    within_10m, within_15m = observed(mode, "600.0"), observed(mode, "900.0")

    await w.submissions.complete(T, sid, 4, final_at + timedelta(minutes=12))
    # 12 minutes: above the 600 s bucket, inside the 900 s one.
    assert observed(mode, "600.0") == within_10m
    assert observed(mode, "900.0") == within_15m + 1
    # A redelivered completion is not observed again.
    await w.submissions.complete(T, sid, 4, final_at + timedelta(minutes=30))
    assert observed(mode, "900.0") == within_15m + 1
