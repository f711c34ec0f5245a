"""A disclosed pool's keys are public (README, "What partners see"): a submission still taking
answers on it is ended (FAILED, its accepted answers kept) at its next upload, refused with
FAILED_PRECONDITION; a submission is published only if its answers were all in before the
disclosure (both boards)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.core import submission as rules
from gateway.core.submission import FAILED, publishable
from medbench_runtime.errors import FailedPrecondition
from tests.services.gateway.test_usecases import T, World, progress

DAY = datetime(2026, 12, 20, 8, 30, tzinfo=UTC)


def disclose(w: World, at: datetime) -> None:
    w.rotator.disclosed_pools.add("pool-1")
    w.rotator.disclosed_at = at


def run_counters(w: World) -> dict[str, int]:
    return {k: v for k, v in w.quotas.counters.items() if ":p:pool-1:" in k or "pool-1" in k}


async def test_an_upload_on_a_disclosed_pool_ends_the_submission_and_keeps_its_answers() -> None:
    w = World(items=4)
    sid = await w.upload_mode()
    charged = run_counters(w)
    assert charged and set(charged.values()) == {1}  # its run on the pool
    await w.submissions.upload(T, sid, "b1", [("item-0", "A"), ("item-1", "B")], final=False)
    events = len(w.outbox.events)
    disclose(w, DAY)

    with pytest.raises(FailedPrecondition) as refused:
        await w.submissions.upload(T, sid, "b2", [("item-2", "A"), ("item-3", "D")], final=True)
    message = str(refused.value)
    assert f"submission {sid} cannot be completed" in message
    assert "pool pool-1 was disclosed on 2026-12-20" in message
    assert "its answer keys are public" in message and "now FAILED" in message

    stored = w.store.records[(T, sid)]
    assert stored["state"] == FAILED
    assert stored["state_reason"] == (
        "pool pool-1 was disclosed on 2026-12-20 (its answer keys are public); answers were "
        "no longer accepted"
    )
    assert stored["completed_at"] is not None and stored["answered"] == 2
    # Nothing is lost: the first batch stays stored; nothing of the refused one is kept or sent.
    assert set(w.store.uploads) == {(T, f"{sid}:b1")}
    assert len(w.outbox.events) == events
    # Its concurrent slot and its run on the pool are given back (no score is ever shown).
    assert w.quotas.active[T] == set()
    assert set(run_counters(w).values()) == {0}
    # The partner sees why; a retry of the batch is refused as for any ended submission.
    view = await w.submissions.view(T, sid)
    assert view.record["state"] == FAILED
    assert "disclosed on 2026-12-20" in view.record["state_reason"]
    with pytest.raises(FailedPrecondition, match="is FAILED; answers are accepted only"):
        await w.submissions.upload(T, sid, "b2", [("item-2", "A")], final=True)


async def test_a_resent_batch_is_still_recognised_on_a_disclosed_pool() -> None:
    w = World(items=4)
    sid = await w.upload_mode()
    await w.submissions.upload(T, sid, "b1", [("item-0", "A")], final=False)
    disclose(w, DAY)
    again = await w.submissions.upload(T, sid, "b1", [("item-0", "A")], final=False)
    assert again.replayed and w.store.records[(T, sid)]["state"] == "AWAITING_ANSWERS"


async def test_uploads_on_a_live_pool_go_on_and_stamp_when_the_answers_were_final() -> None:
    w = World(items=2)
    sid = await w.upload_mode()
    before = datetime.now(UTC)
    await w.submissions.upload(T, sid, "b1", [("item-0", "A")], final=False)
    assert "answers_final_at" not in w.store.records[(T, sid)]
    await w.submissions.upload(T, sid, "b2", [("item-1", "A")], final=True)
    stored = w.store.records[(T, sid)]
    assert stored["state"] == "SCORING" and stored["answers_final_at"] >= before
    assert w.rotator.disclosure_reads == ["pool-1", "pool-1"]


@pytest.mark.parametrize("api", [False, True], ids=["upload board", "API board"])
async def test_publication_needs_every_answer_in_before_the_disclosure(api: bool) -> None:
    w = World(items=4)
    if api:
        sid = await w.api_mode()
        await w.submissions.apply_dispatch_progress(progress(sid, "DONE", 4, 1))
    else:
        sid = await w.upload_mode()
        answers = [(f"item-{i}", "A") for i in range(4)]
        await w.submissions.upload(T, sid, "b1", answers, final=True)
    final_at = w.store.records[(T, sid)]["answers_final_at"]
    await w.submissions.complete(T, sid, 4, final_at + timedelta(minutes=5))

    # Disclosed after the answers were in: the score is as fair as any, it is published.
    disclose(w, final_at + timedelta(seconds=1))
    assert await w.submissions.publish(T, sid, True)
    # Disclosed before (the dispatch ended, or an upload raced the disclosure, after it).
    disclose(w, final_at - timedelta(seconds=1))
    with pytest.raises(FailedPrecondition) as refused:
        await w.submissions.publish(T, sid, True)
    day = (final_at - timedelta(seconds=1)).strftime("%Y-%m-%d")
    assert str(refused.value) == (
        f"submission {sid} cannot be published: its pool pool-1 was disclosed on {day} (its "
        f"answer keys are public) before its answers were all in"
    )
    assert len(w.reports.published) == 1
    # Opting out is always possible.
    assert not await w.submissions.publish(T, sid, False)
    assert len(w.reports.published) == 2


async def test_an_api_run_whose_dispatch_ends_after_the_disclosure_is_never_published() -> None:
    w = World(items=4)
    sid = await w.api_mode()
    disclose(w, datetime.now(UTC) - timedelta(minutes=1))
    # The dispatcher goes on (the endpoint is the partner's); the run is scored, not published.
    await w.submissions.apply_dispatch_progress(progress(sid, "DONE", 4, 1))
    await w.submissions.complete(T, sid, 4, datetime.now(UTC))
    assert w.store.records[(T, sid)]["state"] == "COMPLETED"
    with pytest.raises(FailedPrecondition, match="cannot be published: its pool pool-1 was"):
        await w.submissions.publish(T, sid, True)
    assert w.reports.published == []


def record(**fields: object) -> rules.Record:
    return {"_id": "sub-1", "pool_id": "pool-1", **fields}


def test_the_publication_rule_reads_the_stamp_then_the_completion() -> None:
    assert publishable(record(), None) is None  # a live pool
    before, after = DAY - timedelta(hours=1), DAY + timedelta(hours=1)
    assert publishable(record(answers_final_at=before, completed_at=after), DAY) is None
    assert publishable(record(answers_final_at=after, completed_at=after), DAY) is not None
    # A record from before the stamp: its completion (later than its answers) decides.
    assert publishable(record(completed_at=before), DAY) is None
    assert publishable(record(completed_at=after), DAY) is not None
    assert publishable(record(), DAY) is not None  # nothing says when: refused
    # Stored times may come back without a zone: they are UTC.
    naive = before.replace(tzinfo=None)
    assert publishable(record(answers_final_at=naive), DAY) is None
    # Answers in exactly at the disclosure are not before it.
    assert publishable(record(answers_final_at=DAY), DAY) is not None
