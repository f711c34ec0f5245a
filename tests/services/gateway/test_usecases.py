"""The gateway's use cases with in-memory fakes of their ports (no stack): creating,
uploading, viewing, and applying what the dispatcher and the aggregator report."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.core import submission as rules
from gateway.core.submission import CreateRequest, DispatchProgress, EndpointRequest, ModelInfo
from gateway.entrypoints import convert
from gateway.usecases.submissions import Submissions
from medbench.common.v1 import common_pb2
from medbench.submission.v1 import submission_pb2
from medbench_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from medbench_storage.testing import InMemoryOutbox, InMemoryTransactions
from tests.services.gateway.fakes import (
    FakeDispatch,
    FakeReports,
    FakeRotator,
    InMemoryQuotaLedger,
    InMemorySubmissionStore,
)

T = "tenant-a"
CREATED = "medbench.submission.submission-created.v1"
RECORDED = "medbench.inference.response-recorded.v1"


class World:
    def __init__(
        self,
        items: int = 4,
        canaries: int = 0,
        dispatch: FakeDispatch | None = None,
        reports: FakeReports | None = None,
        progress_cache_s: float = 60.0,
        view_cache_s: float = 60.0,
    ) -> None:
        self.store = InMemorySubmissionStore()
        self.outbox = InMemoryOutbox()
        self.rotator = FakeRotator(items, canaries)
        self.reports = reports or FakeReports()
        self.dispatch = dispatch or FakeDispatch()
        self.quotas = InMemoryQuotaLedger()
        self.submissions = Submissions(
            self.store,
            InMemoryTransactions(self.outbox),
            self.outbox,
            self.rotator,
            self.reports,
            self.dispatch,
            self.quotas,
            progress_cache_s=progress_cache_s,
            view_cache_s=view_cache_s,
        )

    async def upload_mode(self, request_id: str = "run-1") -> str:
        record, _ = await self.submissions.create(upload_request(request_id))
        return str(record["_id"])

    async def api_mode(self, request_id: str = "api-1") -> str:
        record, _ = await self.submissions.create(api_request(request_id))
        return str(record["_id"])


def upload_request(request_id: str = "run-1", name: str = "model-x") -> CreateRequest:
    return CreateRequest(T, request_id, ModelInfo(name), 1, rules.MODE_UPLOAD)


def api_request(request_id: str = "api-1") -> CreateRequest:
    endpoint = EndpointRequest("https://models.example.com/v1", "m", 4, api_key="sk-1")
    return CreateRequest(T, request_id, ModelInfo("model-x"), 1, rules.MODE_API, endpoint)


def progress(sid: str, state: str, answered: int, sequence: int, **kw: object) -> DispatchProgress:
    return DispatchProgress(
        sid, T, state, str(kw.get("reason", "")), answered, int(kw.get("infra", 0)), sequence
    )  # type: ignore[arg-type]


def test_the_core_mirrors_the_wire_enums() -> None:
    assert rules.MODE_UPLOAD == common_pb2.SUBMISSION_MODE_UPLOAD
    assert rules.MODE_API == common_pb2.SUBMISSION_MODE_API
    assert set(common_pb2.Track.values()) - {common_pb2.TRACK_UNSPECIFIED} == rules.TRACKS


async def test_an_upload_mode_create_charges_stores_and_announces_in_one_transaction() -> None:
    w = World()
    record, created = await w.submissions.create(upload_request())
    assert created and record["state"] == rules.AWAITING
    (event,) = w.outbox.of_topic(CREATED)
    assert event.submission.submission_id == record["_id"]
    assert event.submission.progress.expected_items == 4
    assert w.quotas.active[T] == {record["_id"]}
    assert w.dispatch.preflights == [] and w.store.keys == {}


async def test_a_retried_create_finds_the_first_and_a_reused_request_id_is_refused() -> None:
    w = World()
    first, _ = await w.submissions.create(upload_request())
    again, created = await w.submissions.create(upload_request())
    assert not created and again["_id"] == first["_id"]
    assert len(w.outbox.of_topic(CREATED)) == 1 and w.rotator.assigned == [first["_id"]]
    with pytest.raises(AlreadyExists):
        await w.submissions.create(upload_request(name="another-model"))


async def test_an_invalid_create_is_refused_before_any_peer_is_asked() -> None:
    w = World()
    bad_track = CreateRequest(T, "run-1", ModelInfo("m"), 0, rules.MODE_UPLOAD)
    upload_with_endpoint = CreateRequest(
        T, "run-2", ModelInfo("m"), 1, rules.MODE_UPLOAD, EndpointRequest("https://e/v1", "m", 1)
    )
    for request in (bad_track, upload_with_endpoint):
        with pytest.raises(InvalidArgument):
            await w.submissions.create(request)
    assert w.rotator.assigned == [] and w.store.records == {}


async def test_an_api_mode_create_preflights_and_seals_the_key_with_the_record() -> None:
    w = World()
    sid = await w.api_mode()
    stored = w.store.records[(T, sid)]
    assert stored["state"] == rules.DISPATCHING and "api_key" not in str(stored)
    assert w.store.keys == {sid: "sk-1"}
    assert w.dispatch.preflights == ["https://models.example.com/v1"]


async def test_a_failed_preflight_creates_and_charges_nothing() -> None:
    w = World(dispatch=FakeDispatch(ok=False, reason="HTTP 401"))
    with pytest.raises(FailedPrecondition, match="HTTP 401"):
        await w.api_mode()
    assert w.store.records == {} and w.outbox.events == [] and w.quotas.active == {}


async def test_an_upload_scores_pool_items_not_legacy_extras_and_a_replay_changes_nothing() -> None:
    # canary-0 stands for an extra item of a download made before canaries were pool items
    # (AssignItems' canary_items > 0 only for those): accepted and counted as shown, never
    # scored. A canary of a new download is one of its pool items, scored like the others.
    w = World(items=4, canaries=1)
    sid = await w.upload_mode()
    answers = [("item-0", "<A>"), ("canary-0", "<B>")]
    outcome = await w.submissions.upload(T, sid, "b1", answers, final=False)
    assert (outcome.accepted, outcome.state, outcome.replayed) == (2, rules.AWAITING, False)
    (recorded,) = w.outbox.of_topic(RECORDED)
    assert [r.item_id for r in recorded.responses] == ["item-0"]
    stored = w.store.records[(T, sid)]
    assert (stored["answered"], stored["answered_shown"]) == (1, 2)
    replay = await w.submissions.upload(T, sid, "b1", answers, final=False)
    assert replay.replayed and len(w.outbox.of_topic(RECORDED)) == 1
    with pytest.raises(InvalidArgument, match="already used"):
        await w.submissions.upload(T, sid, "b1", [("item-1", "<C>")], final=False)


async def test_an_item_answered_in_an_earlier_batch_refuses_the_whole_batch() -> None:
    w = World()
    sid = await w.upload_mode()
    await w.submissions.upload(T, sid, "b1", [("item-0", "<A>")], final=False)
    with pytest.raises(InvalidArgument, match="item-0"):
        await w.submissions.upload(T, sid, "b2", [("item-1", "<B>"), ("item-0", "<C>")], False)
    assert w.store.records[(T, sid)]["answered"] == 1
    assert len(w.outbox.of_topic(RECORDED)) == 1


async def test_final_sends_the_unanswered_items_as_missing_and_starts_scoring() -> None:
    w = World(items=4)
    sid = await w.upload_mode()
    outcome = await w.submissions.upload(T, sid, "b1", [("item-2", "<A>")], final=True)
    assert outcome.state == rules.SCORING
    answered, missing = w.outbox.of_topic(RECORDED)
    assert [r.item_id for r in answered.responses] == ["item-2"]
    assert [(r.item_id, r.missing) for r in missing.responses] == [
        ("item-0", True), ("item-1", True), ("item-3", True)
    ]  # fmt: skip
    with pytest.raises(FailedPrecondition, match="SCORING"):
        await w.submissions.upload(T, sid, "b2", [("item-0", "<B>")], final=False)


async def test_a_view_reads_once_writes_nothing_and_shares_scoring_progress() -> None:
    w = World(reports=FakeReports(scored=3))
    sid = await w.api_mode()
    reads, writes = w.store.reads, w.store.writes
    first = await w.submissions.view(T, sid)
    second = await w.submissions.view(T, sid)
    assert (w.store.reads - reads, w.store.writes - writes) == (1, 0)  # kept for view_cache_s
    assert first.scored == second.scored == 3
    assert w.reports.progress_calls == 1  # kept for progress_cache_s
    assert w.dispatch.resumes == [] and "answered_bits" not in first.record


async def test_a_view_shows_this_processs_own_changes_at_once() -> None:
    w = World()
    sid = await w.upload_mode()
    assert (await w.submissions.view(T, sid)).record["answered"] == 0
    await w.submissions.upload(T, sid, "b1", [("item-0", "A"), ("item-1", "B")], final=False)
    assert (await w.submissions.view(T, sid)).record["answered"] == 2
    await w.submissions.upload(T, sid, "b2", [], final=True)
    assert (await w.submissions.view(T, sid)).record["state"] == rules.SCORING
    await w.submissions.complete(T, sid, 4, datetime(2026, 12, 6, 12, tzinfo=UTC))
    assert (await w.submissions.view(T, sid)).record["state"] == rules.COMPLETED

    api = await w.api_mode("api-2")
    assert (await w.submissions.view(T, api)).record["state"] == rules.DISPATCHING
    await w.submissions.apply_dispatch_progress(progress(api, "DONE", 4, sequence=1))
    assert (await w.submissions.view(T, api)).record["state"] == rules.SCORING


async def test_a_view_is_kept_per_tenant_and_a_miss_is_not_kept() -> None:
    w = World()
    sid = await w.upload_mode()
    with pytest.raises(NotFound):
        await w.submissions.view("tenant-b", sid)
    await w.submissions.view(T, sid)
    with pytest.raises(NotFound):  # another tenant never reads the kept record
        await w.submissions.view("tenant-b", sid)


async def test_without_the_view_cache_every_view_reads_the_store() -> None:
    w = World(view_cache_s=0)
    sid = await w.upload_mode()
    reads = w.store.reads
    for _ in range(3):
        await w.submissions.view(T, sid)
    assert w.store.reads - reads == 3


async def test_an_aggregator_outage_does_not_fail_a_view_nor_is_progress_asked_early() -> None:
    w = World(reports=FakeReports(available=False), progress_cache_s=0)
    sid = await w.api_mode()
    view = await w.submissions.view(T, sid)
    assert view.scored == 0
    upload = await w.upload_mode("run-2")
    calls = w.reports.progress_calls
    await w.submissions.view(T, upload)  # AWAITING_ANSWERS: no per-batch scoring progress
    assert w.reports.progress_calls == calls


async def test_dispatch_progress_moves_counters_and_state_forward_only() -> None:
    w = World()
    sid = await w.api_mode()
    apply = w.submissions.apply_dispatch_progress
    await apply(progress(sid, "RUNNING", 2, sequence=1))
    await apply(progress(sid, "DONE", 4, sequence=3))
    stored = w.store.records[(T, sid)]
    assert (stored["state"], stored["answered"]) == (rules.SCORING, 4)
    # A late event and a redelivery change nothing.
    await apply(progress(sid, "RUNNING", 3, sequence=2))
    await apply(progress(sid, "DONE", 4, sequence=3))
    assert (stored["state"], stored["answered"], stored["dispatch_sequence"]) == ("SCORING", 4, 3)


async def test_completion_before_the_last_progress_events_keeps_the_final_counts() -> None:
    # Progress (dispatcher) and completion (aggregator) come on different topics: scoring can
    # finish before the dispatcher's last events reach the gateway.
    w = World()
    sid = await w.api_mode()
    apply = w.submissions.apply_dispatch_progress
    await apply(progress(sid, "RUNNING", 1, sequence=1))
    await w.submissions.complete(T, sid, 4, datetime(2026, 12, 6, 12, tzinfo=UTC))
    stored = w.store.records[(T, sid)]
    assert (stored["state"], stored["answered"], stored["answered_shown"]) == ("COMPLETED", 4, 4)
    # The late events, older counts first, change nothing.
    await apply(progress(sid, "RUNNING", 3, sequence=2))
    await apply(progress(sid, "DONE", 4, sequence=3))
    assert (stored["state"], stored["answered"], stored["scored"]) == ("COMPLETED", 4, 4)


async def test_a_completion_between_reading_and_writing_a_progress_event_stands() -> None:
    # The handler reads the submission (DISPATCHING), the completion lands, then the handler
    # writes what it computed: DONE's SCORING must not overwrite COMPLETED (seen under load: a
    # submission went back to SCORING and never completed again).
    w = World()
    sid = await w.api_mode()
    stale = copy.deepcopy(w.store.records[(T, sid)])
    await w.submissions.complete(T, sid, 4, datetime(2026, 12, 6, 12, tzinfo=UTC))

    async def read_before_completion(tenant_id: str, submission_id: str) -> Any:
        return stale

    w.store.find = read_before_completion  # type: ignore[method-assign]
    await w.submissions.apply_dispatch_progress(progress(sid, "DONE", 4, sequence=3))
    stored = w.store.records[(T, sid)]
    assert (stored["state"], stored["scored"]) == ("COMPLETED", 4)


async def test_an_older_count_never_lowers_the_answered_items() -> None:
    w = World()
    sid = await w.api_mode()
    apply = w.submissions.apply_dispatch_progress
    await apply(progress(sid, "RUNNING", 3, sequence=2))
    # Sequence 3 was made before a batch committed its count elsewhere: a lower count.
    await apply(progress(sid, "STALLED", 2, sequence=3, reason="endpoint unreachable"))
    stored = w.store.records[(T, sid)]
    assert stored["answered"] == 3 and stored["dispatch_sequence"] == 3


async def test_a_failed_dispatch_fails_the_submission_refunds_and_forgets_the_key() -> None:
    w = World()
    sid = await w.api_mode()
    await w.submissions.apply_dispatch_progress(
        progress(sid, "FAILED", 1, sequence=1, reason="HTTP 403 key revoked", infra=2)
    )
    view = convert.view_to_proto(await w.submissions.view(T, sid))
    assert view.state == submission_pb2.SUBMISSION_STATE_FAILED
    assert view.state_reason == "HTTP 403 key revoked" and view.HasField("completed_at")
    assert w.store.keys == {} and w.quotas.active[T] == set() and w.quotas.refunded[T] == 2
    # A later completion (or a redelivered failure) changes nothing more.
    await w.submissions.complete(T, sid, 4, datetime.now(UTC))
    assert w.store.records[(T, sid)]["state"] == rules.FAILED


async def test_a_stall_shows_its_reason_and_failures_and_a_resume_clears_them() -> None:
    w = World(dispatch=FakeDispatch(resumed=2))
    sid = await w.api_mode()
    await w.submissions.apply_dispatch_progress(
        progress(sid, "STALLED", 2, sequence=4, reason="2 items failed", infra=2)
    )
    view = convert.view_to_proto(await w.submissions.view(T, sid))
    assert view.state == submission_pb2.SUBMISSION_STATE_DISPATCHING
    assert (view.state_reason, view.progress.infra_failed_items) == ("2 items failed", 2)
    assert w.store.keys == {sid: "sk-1"}  # a stalled run keeps its key for the resume
    resumed_view, resumed = await w.submissions.resume(T, sid)
    shown = convert.view_to_proto(resumed_view)
    assert resumed == 2 and shown.state_reason == "" and shown.progress.infra_failed_items == 0


async def test_completion_is_applied_once_releases_the_slot_and_forgets_the_key() -> None:
    w = World()
    sid = await w.api_mode()
    at = datetime(2026, 12, 6, 12, tzinfo=UTC)
    await w.submissions.complete(T, sid, 4, at)
    await w.submissions.complete(T, sid, 4, at)  # redelivered
    stored = w.store.records[(T, sid)]
    assert (stored["state"], stored["scored"], stored["completed_at"]) == ("COMPLETED", 4, at)
    assert w.store.keys == {} and w.quotas.active[T] == set()
    assert len(w.reports.published) == 0
    assert await w.submissions.publish(T, sid, True)
    assert w.reports.published[0].cycle == "2026-12" and w.reports.published[0].api
