"""How long the dispatcher keeps a run's endpoint key: deleted when the run is DONE or FAILED,
kept while it is STALLED (a resume needs it) until the retention ends, and a run whose key is
gone or does not open fails with a reason saying so. Real Mongo-wire server; the rotator is a
fake with no prompts to send."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from dispatcher.adapters.failures import is_outage, load_failure
from dispatcher.adapters.grpc_rotator_prompts import RotatorPrompts
from dispatcher.adapters.mongo_jobs import MongoJobs
from dispatcher.core.jobs import KEY_NOT_HELD, KEY_UNREADABLE
from dispatcher.usecases.retention import KeyRetention, stalled_too_long
from dispatcher.usecases.runner import Dispatcher
from medbench_storage.endpoint_keys import EndpointKeys
from medbench_storage.secrets import KEY_BYTES, Envelope, LocalKeys
from medbench_storage.testing import InMemoryOutbox, InMemoryTransactions
from tests.services.dispatcher.fakes import (
    NoImages,
    progress_events,
)

pytestmark = [pytest.mark.integration]


class NoPrompts:
    """A rotator whose pools have nothing left to send."""

    def GetPrompts(self, request: Any) -> AsyncIterator[Any]:  # noqa: N802
        async def stream() -> AsyncIterator[Any]:
            return
            yield

        return stream()


class NoCalls:
    async def chat(self, *args: Any) -> Any:
        raise AssertionError("no endpoint call is expected")


@pytest.fixture
async def stores(servers: Any, unique: str) -> AsyncIterator[tuple[MongoJobs, EndpointKeys, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri, tz_aware=True)
    db, sealed = client[f"lifetime_{unique}"], client[f"lifetime_{unique}_sealed"]
    keys = EndpointKeys(sealed, Envelope(LocalKeys({"k1": os.urandom(KEY_BYTES)})))
    try:
        yield MongoJobs(db, keys), keys, db
    finally:
        await client.drop_database(db.name)
        await client.drop_database(sealed.name)
        await client.close()


def job_doc(sid: str, state: str = "RUNNING", **extra: Any) -> dict[str, Any]:
    return {
        "_id": sid,
        "tenant_id": "tenant-a",
        "pool_id": "p",
        "expected": 1,
        "state": state,
        "reason": "",
        "endpoint": {"base_url": "http://e/v1", "model": "m", "max_concurrency": 2},
        "decoding": {"temperature": 0.0, "max_tokens": 16, "context_window": 2048},
        "updated_at": datetime.now(UTC),
        **extra,
    }


def dispatcher(jobs: MongoJobs) -> Dispatcher:
    """A dispatcher over the real job store; the rotator has nothing to send, the outbox is in
    memory (this test is about keys)."""
    outbox = InMemoryOutbox()
    tx = InMemoryTransactions(outbox, bare=True)
    return Dispatcher(
        jobs, NoCalls(), RotatorPrompts(NoPrompts()), NoImages(),  # type: ignore[arg-type]
        tx, outbox, outage=is_outage, load_failure=load_failure,
    )  # fmt: skip


async def run_to_end(d: Dispatcher, jobs: MongoJobs, sids: list[str]) -> None:
    """One refresh, the prompt reads, and the finishing step, until no job is RUNNING."""
    await d._refresh()  # noqa: SLF001 - the steps of the loop, without the loop
    deadline = time.monotonic() + 10
    while any(d.job(s) is not None and not d.job(s).loaded for s in sids):  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "prompt reads did not end"
        await asyncio.sleep(0.01)
    await d._finish_done()  # noqa: SLF001
    assert all([await jobs.state(s) != "RUNNING" for s in sids])


async def test_done_deletes_the_key_and_stalled_keeps_it(stores: Any) -> None:
    jobs, keys, db = stores
    for sid in ("sub_done", "sub_stalled"):
        await jobs.upsert_job(job_doc(sid))
        await keys.put("tenant-a", sid, f"sk-{sid}")
    # One item of the stalled run failed for infrastructure reasons: it can be resumed.
    await db.responses.insert_one(
        {"_id": "sub_stalled:i1", "submission_id": "sub_stalled", "item_id": "i1",
         "status": "infra_failed", "batched": ""}
    )  # fmt: skip
    d = dispatcher(jobs)
    await run_to_end(d, jobs, ["sub_done", "sub_stalled"])
    assert await jobs.state("sub_done") == "DONE"
    assert await jobs.state("sub_stalled") == "STALLED"
    assert [d["_id"] for d in await keys.held()] == ["sub_stalled"]
    assert await keys.get("tenant-a", "sub_stalled") == "sk-sub_stalled"


async def test_a_failed_run_deletes_its_key(stores: Any) -> None:
    jobs, keys, _ = stores
    await jobs.upsert_job(job_doc("sub_failed"))
    await keys.put("tenant-a", "sub_failed", "sk-f")
    d = dispatcher(jobs)
    await d._refresh()  # noqa: SLF001
    job = d.job("sub_failed")
    assert job is not None and job.api_key == "sk-f"
    job.failed = "HTTP 401"
    await run_to_end(d, jobs, ["sub_failed"])
    failed = await jobs.job("sub_failed")
    assert failed is not None and failed.reason == "HTTP 401"
    assert await keys.held() == []


async def test_a_run_whose_key_is_gone_or_does_not_open_fails_saying_so(stores: Any) -> None:
    jobs, keys, db = stores
    await jobs.upsert_job(job_doc("sub_gone"))
    await jobs.upsert_job(job_doc("sub_copied"))
    await keys.put("tenant-a", "sub_other", "sk-other")
    # A sealed key copied under another submission is refused (and not kept).
    sealed = keys._collection  # noqa: SLF001
    copied = await sealed.find_one({"_id": "sub_other"})
    await sealed.insert_one({**copied, "_id": "sub_copied"})
    d = dispatcher(jobs)
    await d._refresh()  # noqa: SLF001
    gone, copied_job = await jobs.job("sub_gone"), await jobs.job("sub_copied")
    assert gone is not None and (gone.state, gone.reason) == ("FAILED", KEY_NOT_HELD)
    assert copied_job is not None
    assert (copied_job.state, copied_job.reason) == ("FAILED", KEY_UNREADABLE)
    assert [d["_id"] for d in await keys.held()] == ["sub_other"]


async def test_retention_fails_long_stalled_runs_and_deletes_leftover_keys(stores: Any) -> None:
    jobs, keys, _ = stores
    now = datetime.now(UTC)
    old = now - timedelta(days=8)
    await jobs.upsert_job(job_doc("sub_old_stall", "STALLED", updated_at=old))
    await jobs.upsert_job(job_doc("sub_new_stall", "STALLED", updated_at=now))
    await jobs.upsert_job(job_doc("sub_running", "RUNNING", updated_at=old))
    await jobs.upsert_job(job_doc("sub_done", "DONE", updated_at=now))  # a crash left its key
    for sid in ("sub_old_stall", "sub_new_stall", "sub_running", "sub_done", "sub_no_job_yet"):
        await keys.put("tenant-a", sid, f"sk-{sid}")

    outbox = InMemoryOutbox()
    tx = InMemoryTransactions(outbox, bare=True)
    retention = KeyRetention(jobs, keys, tx, outbox, retention_days=7)
    assert await retention.sweep(now) == (1, 1)
    failed = await jobs.job("sub_old_stall")
    assert failed is not None and failed.state == "FAILED"
    assert failed.reason == stalled_too_long(7) and "7 days" in failed.reason
    (announced,) = progress_events(outbox)
    assert (announced.submission_id, announced.state) == ("sub_old_stall", "FAILED")
    assert await jobs.state("sub_new_stall") == "STALLED"
    held = sorted(d["_id"] for d in await keys.held())
    assert held == ["sub_new_stall", "sub_no_job_yet", "sub_running"]
    assert await retention.sweep(now) == (0, 0)

    # A resume between the read and the write wins: the run is not failed.
    await jobs.upsert_job(job_doc("sub_resumed", "STALLED", updated_at=old))
    (stale,) = [d for d in await jobs.stalled_before(now) if d.submission_id == "sub_resumed"]
    assert await jobs.resume("sub_resumed") == 0
    assert not await jobs.fail_stalled(None, stale, "too late")
    assert await jobs.state("sub_resumed") == "RUNNING"
