"""The gateway deletes an API-mode submission's sealed endpoint key when it learns the
submission ended: COMPLETED (submission.completed, a redelivery too) or FAILED (the dispatcher's
outcome, as a dispatch progress event). Real Mongo-wire server; the peers are fakes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from gateway.adapters.mongo_submissions import MongoSubmissions
from gateway.core.submission import DispatchProgress
from gateway.usecases.submissions import Submissions
from medbench.common.v1 import common_pb2
from medbench_storage.endpoint_keys import EndpointKeys
from medbench_storage.secrets import KEY_BYTES, Envelope, LocalKeys
from medbench_storage.testing import InMemoryOutbox, InMemoryTransactions
from tests.services.gateway.fakes import (
    FakeDispatch,
    FakeReports,
    FakeRotator,
)

pytestmark = [pytest.mark.integration]
TENANT = "tenant-a"


def submissions(store: MongoSubmissions) -> Submissions:
    outbox = InMemoryOutbox()
    return Submissions(
        store, InMemoryTransactions(outbox), outbox, FakeRotator(), FakeReports(), FakeDispatch()
    )


def progress(sid: str, state: str, reason: str) -> DispatchProgress:
    return DispatchProgress(sid, TENANT, state, reason, 1, 2, sequence=1)


@pytest.fixture
async def env(servers: Any, unique: str) -> AsyncIterator[tuple[MongoSubmissions, EndpointKeys]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri, tz_aware=True)
    db, sealed = client[f"gwkeys_{unique}"], client[f"gwkeys_{unique}_sealed"]
    keys = EndpointKeys(sealed, Envelope(LocalKeys({"k1": os.urandom(KEY_BYTES)})))
    try:
        yield MongoSubmissions(db, keys), keys
    finally:
        await client.drop_database(db.name)
        await client.drop_database(sealed.name)
        await client.close()


async def submission(
    store: MongoSubmissions, sid: str, state: str, mode: int = common_pb2.SUBMISSION_MODE_API
) -> None:
    now = datetime.now(UTC)
    doc: dict[str, Any] = {
        "_id": sid,
        "request_id": sid,
        "model": {"name": "m"},
        "track": common_pb2.TRACK_LLM,
        "mode": mode,
        "state": state,
        "state_reason": "",
        "pool_id": "p",
        "expected": 3,
        "canaries": 0,
        "answered": 0,
        "created_at": now,
        "updated_at": now,
    }
    if mode == common_pb2.SUBMISSION_MODE_API:
        doc["endpoint"] = {"base_url": "https://e/v1", "model": "m", "max_concurrency": 1,
                           "self_test": False}  # fmt: skip
        doc["decoding"] = {"temperature": 0.7, "max_tokens": 512, "context_window": 2048,
                           "top_p": None}  # fmt: skip
    await store._db.submissions.insert_one({**doc, "tenant_id": TENANT})  # noqa: SLF001


async def complete(subs: Submissions, sid: str) -> None:
    await subs.complete(TENANT, sid, 3, datetime.now(UTC))


async def held(keys: EndpointKeys) -> list[str]:
    return sorted(str(d["_id"]) for d in await keys.held())


async def test_completion_deletes_the_key_also_on_redelivery(env: Any) -> None:
    store, keys = env
    subs = submissions(store)
    await submission(store, "sub_scoring", "SCORING")
    await submission(store, "sub_done_before", "COMPLETED")  # its key was left by a crash
    await submission(store, "sub_running", "DISPATCHING")
    for sid in ("sub_scoring", "sub_done_before", "sub_running"):
        await keys.put(TENANT, sid, f"sk-{sid}")
    await complete(subs, "sub_scoring")
    assert (await store.get(TENANT, "sub_scoring"))["state"] == "COMPLETED"
    assert await held(keys) == ["sub_done_before", "sub_running"]
    await complete(subs, "sub_done_before")
    assert await held(keys) == ["sub_running"]
    # An upload-mode submission has no key; its completion deletes nothing.
    await submission(store, "sub_upload", "SCORING", common_pb2.SUBMISSION_MODE_UPLOAD)
    await complete(subs, "sub_upload")
    assert await held(keys) == ["sub_running"]


async def test_a_failed_run_deletes_the_key_a_stalled_one_keeps_it(env: Any) -> None:
    store, keys = env
    await submission(store, "sub_failed", "DISPATCHING")
    await submission(store, "sub_stalled", "DISPATCHING")
    for sid in ("sub_failed", "sub_stalled"):
        await keys.put(TENANT, sid, f"sk-{sid}")
    subs = submissions(store)
    await subs.apply_dispatch_progress(progress("sub_failed", "FAILED", "HTTP 401"))
    assert (await store.get(TENANT, "sub_failed"))["state"] == "FAILED"
    await subs.apply_dispatch_progress(progress("sub_stalled", "STALLED", "2 items failed"))
    assert (await store.get(TENANT, "sub_stalled"))["state_reason"] == "2 items failed"
    assert await held(keys) == ["sub_stalled"]
