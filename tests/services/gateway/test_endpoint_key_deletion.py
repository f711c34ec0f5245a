"""The gateway deletes an API-mode submission's sealed endpoint key when it learns the
submission ended: COMPLETED (submission.completed, a redelivery too) or FAILED (the dispatcher's
outcome). Real Mongo-wire server; the peers are fakes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from gateway.adapters.mongo_submissions import MongoSubmissions
from gateway.submissions import Submissions
from medbench.common.v1 import common_pb2
from medbench.dispatch.v1 import dispatch_service_pb2
from medbench.submission.v1 import submission_events_pb2
from medbench_storage.endpoint_keys import EndpointKeys
from medbench_storage.secrets import KEY_BYTES, Envelope, LocalKeys

pytestmark = [pytest.mark.integration]
TENANT = "tenant-a"


class Dispatch:
    """The dispatcher's answer to GetDispatch."""

    def __init__(self, state: str, reason: str = "") -> None:
        self.reply = dispatch_service_pb2.GetDispatchResponse(state=state, reason=reason)

    async def status(self, submission_id: str) -> dispatch_service_pb2.GetDispatchResponse:
        return self.reply


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


def completed(sid: str) -> submission_events_pb2.SubmissionCompleted:
    event = submission_events_pb2.SubmissionCompleted(
        submission_id=sid, tenant_id=TENANT, scored_items=3
    )
    event.completed_at.FromDatetime(datetime.now(UTC))
    return event


async def held(keys: EndpointKeys) -> list[str]:
    return sorted(str(d["_id"]) for d in await keys.held())


async def test_completion_deletes_the_key_also_on_redelivery(env: Any) -> None:
    store, keys = env
    subs = Submissions(None, store, None, None)  # type: ignore[arg-type]
    await submission(store, "sub_scoring", "SCORING")
    await submission(store, "sub_done_before", "COMPLETED")  # its key was left by a crash
    await submission(store, "sub_running", "DISPATCHING")
    for sid in ("sub_scoring", "sub_done_before", "sub_running"):
        await keys.put(TENANT, sid, f"sk-{sid}")
    await subs.complete(completed("sub_scoring"))
    assert (await store.get(TENANT, "sub_scoring"))["state"] == "COMPLETED"
    assert await held(keys) == ["sub_done_before", "sub_running"]
    await subs.complete(completed("sub_done_before"))
    assert await held(keys) == ["sub_running"]
    # An upload-mode submission has no key; its completion deletes nothing.
    await submission(store, "sub_upload", "SCORING", common_pb2.SUBMISSION_MODE_UPLOAD)
    await subs.complete(completed("sub_upload"))
    assert await held(keys) == ["sub_running"]


async def test_a_failed_run_deletes_the_key_a_stalled_one_keeps_it(env: Any) -> None:
    store, keys = env
    await submission(store, "sub_failed", "DISPATCHING")
    await submission(store, "sub_stalled", "DISPATCHING")
    for sid in ("sub_failed", "sub_stalled"):
        await keys.put(TENANT, sid, f"sk-{sid}")
    failing = Submissions(
        None,  # type: ignore[arg-type]
        store,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        Dispatch("FAILED", "HTTP 401"),  # type: ignore[arg-type]
    )
    view = await failing._follow_dispatch(await store.get(TENANT, "sub_failed"))  # noqa: SLF001
    assert view[0]["state"] == "FAILED"
    stalling = Submissions(
        None,  # type: ignore[arg-type]
        store,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        Dispatch("STALLED", "2 items failed"),  # type: ignore[arg-type]
    )
    await stalling._follow_dispatch(await store.get(TENANT, "sub_stalled"))  # noqa: SLF001
    assert (await store.get(TENANT, "sub_stalled"))["state_reason"] == "2 items failed"
    assert await held(keys) == ["sub_stalled"]
