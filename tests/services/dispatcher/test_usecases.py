"""The dispatcher's use cases with in-memory fakes of their ports (no stack): taking jobs,
running them to their end, and the progress events the gateway learns everything from."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.core.jobs import DONE, FAILED, RUNNING, STALLED, Progress, end_state, keeps_key
from dispatcher.core.retry import RetryPolicy
from dispatcher.usecases.jobs import DispatchJobs
from dispatcher.usecases.preflight import EndpointCheck
from dispatcher.usecases.progress import progress_event
from dispatcher.usecases.retention import KeyRetention, stalled_too_long
from dispatcher.usecases.runner import Dispatcher
from medbench.common.v1 import common_pb2
from medbench.submission.v1 import submission_events_pb2, submission_pb2
from medbench_runtime.errors import FailedPrecondition, NotFound
from medbench_storage.testing import InMemoryOutbox, InMemoryTransactions
from tests.services.dispatcher.fakes import (
    FakeEndpoint,
    FakePrompts,
    InMemoryJobs,
    InMemorySealedKeys,
    NoImages,
    Reply,
    failure_reason,
    item,
    never_an_outage,
    progress_events,
    spec,
)

RECORDED = "medbench.inference.response-recorded.v1"


class World:
    def __init__(self, endpoint: FakeEndpoint | None = None, items: int = 3) -> None:
        self.jobs = InMemoryJobs(keys={"sub_1": "sk-1"})
        self.outbox = InMemoryOutbox()
        self.transactions = InMemoryTransactions(self.outbox)
        self.endpoint = endpoint or FakeEndpoint()
        self.items = items
        self.start()

    def start(self) -> None:
        """A dispatcher process (again, after a stop: a restart)."""
        items = self.items
        self.dispatcher = Dispatcher(
            self.jobs,
            self.endpoint,
            FakePrompts([item(n) for n in range(items)] + [item(99, canary=True)]),
            NoImages(),
            self.transactions,
            self.outbox,
            outage=never_an_outage,
            load_failure=failure_reason,
            policy=RetryPolicy(max_attempts=2, base_delay_s=0.001, max_delay_s=0.002),
        )
        self.dispatch_jobs = DispatchJobs(
            self.jobs, self.dispatcher, self.transactions, self.outbox
        )

    async def run_until_over(self, sid: str = "sub_1") -> None:
        """Runs the dispatch loop until the job is no longer RUNNING."""
        task = asyncio.create_task(self.dispatcher.run())
        deadline = time.monotonic() + 10
        try:
            while await self.jobs.state(sid) == RUNNING:
                assert time.monotonic() < deadline, "the run did not end"
                await asyncio.sleep(0.01)
        finally:
            self.dispatcher.stop()
            await asyncio.wait_for(task, 10)
            self.start()


def created(mode: int = common_pb2.SUBMISSION_MODE_API) -> submission_events_pb2.SubmissionCreated:
    sub = submission_pb2.Submission(submission_id="sub_1", tenant_id="tenant-a", mode=mode)
    return submission_events_pb2.SubmissionCreated(event_id="sub_1:created", submission=sub)


def test_end_state_rules() -> None:
    assert end_state("", 0) == (DONE, "")
    state, reason = end_state("", 2)
    assert state == STALLED and "2 items failed" in reason
    assert end_state("HTTP 401", 2) == (FAILED, "HTTP 401")
    assert keeps_key(STALLED) and not keeps_key(DONE) and not keeps_key(FAILED)


def test_a_progress_event_is_keyed_and_numbered_by_its_sequence() -> None:
    event = progress_event(
        Progress("sub_1", "tenant-a", STALLED, "why", 5, 2), 7, datetime.now(UTC)
    )
    assert (event.event_id, event.key, event.topic.name) == (
        "sub_1:dispatch:7", "sub_1", "medbench.dispatch.dispatch-progressed.v1"
    )  # fmt: skip
    m = event.message
    assert (m.sequence, m.state, m.answered_items, m.infra_failed_items) == (7, STALLED, 5, 2)


async def test_a_job_is_taken_once_and_an_upload_mode_submission_never() -> None:
    from dispatcher.entrypoints.convert import job_from_created

    w = World()
    assert job_from_created(created(common_pb2.SUBMISSION_MODE_UPLOAD)) is None
    await w.dispatch_jobs.take(job_from_created(created(common_pb2.SUBMISSION_MODE_UPLOAD)))
    assert w.jobs.jobs == {}
    await w.dispatch_jobs.take(spec())
    await w.jobs.set_state(None, "sub_1", DONE)
    await w.dispatch_jobs.take(spec())  # a redelivered submission.created
    assert (await w.jobs.state("sub_1")) == DONE


async def test_a_run_answers_every_item_once_and_announces_each_step_in_order() -> None:
    w = World()
    await w.dispatch_jobs.take(spec())
    await w.run_until_over()
    assert sorted(w.endpoint.asked) == ["q-0", "q-1", "q-2"]  # never the canary
    responses = [r.item_id for e in w.outbox.of_topic(RECORDED) for r in e.responses]
    assert sorted(responses) == ["item-0", "item-1", "item-2"]
    progress = progress_events(w.outbox)
    assert [p.sequence for p in progress] == list(range(1, len(progress) + 1))
    assert all(
        a.answered_items <= b.answered_items for a, b in zip(progress, progress[1:], strict=False)
    )
    assert (progress[-1].state, progress[-1].answered_items) == (DONE, 3)
    assert w.jobs.keys == {}  # DONE: the endpoint key goes


async def test_items_failing_for_infrastructure_stall_the_run_and_keep_the_key() -> None:
    w = World(FakeEndpoint(lambda q: Reply(502, error="bad gateway") if q == "q-1" else
                           Reply(200, "ok")))  # fmt: skip
    await w.dispatch_jobs.take(spec())
    await w.run_until_over()
    last = progress_events(w.outbox)[-1]
    assert (last.state, last.answered_items, last.infra_failed_items) == (STALLED, 2, 1)
    assert "1 items failed for infrastructure reasons" in last.reason
    assert w.jobs.keys == {"sub_1": "sk-1"}
    assert w.endpoint.asked.count("q-1") == 2  # retried up to max_attempts


async def test_an_endpoint_that_rejects_the_run_fails_it_with_its_reason() -> None:
    w = World(FakeEndpoint(lambda q: Reply(401, error="HTTP 401 invalid key")))
    await w.dispatch_jobs.take(spec())
    await w.run_until_over()
    last = progress_events(w.outbox)[-1]
    assert (last.state, last.reason) == (FAILED, "HTTP 401 invalid key")
    assert w.jobs.keys == {} and (await w.jobs.job("sub_1")).reason == "HTTP 401 invalid key"  # type: ignore[union-attr]


async def test_a_job_that_cannot_be_loaded_fails_and_says_why() -> None:
    w = World()
    w.jobs.keys.clear()  # its key is gone
    await w.dispatch_jobs.take(spec())
    await w.dispatcher._refresh()  # noqa: SLF001 - one refresh step, without the loop
    last = progress_events(w.outbox)[-1]
    assert (last.state, last.reason) == (FAILED, "cannot load: KeyNotHeld")
    assert w.endpoint.asked == []


async def test_resume_runs_a_stalled_job_again_and_tells_the_gateway() -> None:
    w = World(FakeEndpoint(lambda q: Reply(502, error="down") if q == "q-1" else Reply(200)))
    await w.dispatch_jobs.take(spec())
    await w.run_until_over()
    stalled_seq = progress_events(w.outbox)[-1].sequence
    w.endpoint.answer = lambda q: Reply(200, "ok")
    assert await w.dispatch_jobs.resume("sub_1") == 1
    resumed = progress_events(w.outbox)[-1]
    assert (resumed.state, resumed.reason, resumed.infra_failed_items) == (RUNNING, "", 0)
    assert resumed.sequence == stalled_seq + 1 and resumed.answered_items == 2
    assert await w.dispatch_jobs.resume("sub_1") == 0  # RUNNING: idempotent
    await w.run_until_over()
    assert progress_events(w.outbox)[-1].state == DONE
    with pytest.raises(FailedPrecondition, match="DONE"):
        await w.dispatch_jobs.resume("sub_1")
    with pytest.raises(NotFound):
        await w.dispatch_jobs.resume("sub_unknown")


async def test_status_reports_stored_counts_of_a_finished_run() -> None:
    w = World()
    assert (await w.dispatch_jobs.status("sub_1")).state == ""
    await w.dispatch_jobs.take(spec())
    await w.run_until_over()
    status = await w.dispatch_jobs.status("sub_1")
    assert (status.state, status.answered, status.infra_failed, status.calls) == (DONE, 3, 0, 3)


async def test_retention_fails_long_stalls_announces_them_and_deletes_their_keys() -> None:
    jobs, outbox = InMemoryJobs(keys={"sub_old": "k", "sub_new": "k", "sub_done": "k"}), None
    outbox = InMemoryOutbox()
    now = datetime.now(UTC)
    for sid, state, at in (
        ("sub_old", STALLED, now - timedelta(days=8)),
        ("sub_new", STALLED, now),
        ("sub_done", DONE, now),
    ):
        await jobs.add(spec(sid), at)
        await jobs.set_state(None, sid, state, now=at)
    retention = KeyRetention(
        jobs, InMemorySealedKeys(jobs), InMemoryTransactions(outbox), outbox, retention_days=7
    )
    assert await retention.sweep(now) == (1, 1)
    (event,) = progress_events(outbox)
    assert (event.submission_id, event.state, event.reason) == (
        "sub_old", FAILED, stalled_too_long(7)
    )  # fmt: skip
    assert sorted(jobs.keys) == ["sub_new"]
    assert await retention.sweep(now) == (0, 0)


async def test_preflight_names_what_fails_and_passes_a_good_endpoint() -> None:
    good = EndpointCheck(FakeEndpoint())
    assert (await good.preflight("https://e.example.com/v1", "m", "k")).ok
    unlisted = await good.preflight("https://e.example.com/v1", "other", "k")
    assert not unlisted.ok and "not among" in unlisted.reason
    from tests.services.dispatcher.fakes import Models

    refused = await EndpointCheck(FakeEndpoint(models=Models(401))).preflight(
        "https://e.example.com/v1", "m", "k"
    )
    assert not refused.ok and "API key" in refused.reason


async def test_a_restart_sends_nothing_answered_before_and_publishes_what_was_not() -> None:
    from dispatcher.core.jobs import ANSWERED, ItemOutcome

    w = World()
    await w.dispatch_jobs.take(spec())
    await w.jobs.record(
        ItemOutcome("sub_1", "item-0", 0, "D", "h0", ANSWERED, "kept", False, "stop", {}, 1.0,
                    1, "", False, datetime.now(UTC))
    )  # fmt: skip
    await w.run_until_over()
    assert sorted(w.endpoint.asked) == ["q-1", "q-2"]
    texts = {r.item_id: r.answer for e in w.outbox.of_topic(RECORDED) for r in e.responses}
    assert texts["item-0"] == "kept" and len(texts) == 3
    assert progress_events(w.outbox)[-1].answered_items == 3


async def test_a_done_run_hands_the_gateway_its_answers_digests_by_ordinal() -> None:
    """Probing detection of API runs: each answer is digested as it is recorded (the reading
    the gateway gives an upload's, medbench_runtime.answer_digest, by the item's answer format)
    and the DONE event carries them by ordinal; a stalled run's events carry none."""
    from medbench_runtime.answer_digest import answer_digest

    w = World()
    await w.dispatch_jobs.take(spec())
    await w.run_until_over()
    texts = [w.jobs.records[f"sub_1:item-{n}"].text for n in range(3)]
    *running, done = progress_events(w.outbox)
    assert done.state == DONE
    assert done.answer_digests == b"".join(answer_digest(t) for t in texts)
    assert all(p.answer_digests == b"" for p in running)

    stalled = World(
        FakeEndpoint(lambda q: Reply(502, error="down") if q == "q-1" else Reply(200, "ok"))
    )
    await stalled.dispatch_jobs.take(spec())
    await stalled.run_until_over()
    assert [p.answer_digests for p in progress_events(stalled.outbox)] == [b""] * len(
        progress_events(stalled.outbox)
    )


def test_the_digest_vector_holds_answered_items_by_ordinal_and_bounds_its_size() -> None:
    from dispatcher.core.jobs import ANSWERED, INFRA_FAILED, MAX_DIGEST_ITEMS, Recorded
    from dispatcher.core.jobs import answers_vector as vector
    from medbench_runtime.answer_digest import EMPTY, answer_digest

    a, c = answer_digest("A"), answer_digest("C")
    got = vector(
        [
            Recorded("i2", ANSWERED, 2, digest=c),
            Recorded("i0", ANSWERED, 0, digest=a),
            Recorded("i1", INFRA_FAILED, 1),
        ]
    )
    assert got == a + EMPTY + c
    assert vector([]) == b""
    huge = [Recorded("last", ANSWERED, MAX_DIGEST_ITEMS, digest=a)]
    assert vector(huge) == b""  # would not fit the smallest event limit: not compared
    assert len(vector([Recorded("x", ANSWERED, MAX_DIGEST_ITEMS - 1, digest=a)])) == 200_000


def test_the_largest_done_event_fits_the_smallest_event_limit() -> None:
    """A DONE event of a run of MAX_DIGEST_ITEMS items, with the longest ids the platform makes,
    stays under the smallest MEDBENCH_KAFKA__MAX_EVENT_BYTES admitted."""
    from dispatcher.core.jobs import MAX_DIGEST_ITEMS
    from medbench_messaging.sizing import MIN_MAX_EVENT_BYTES

    digests = b"\xff" * (4 * MAX_DIGEST_ITEMS)
    progress = Progress("s" * 64, "t" * 64, DONE, "r" * 2000, 10**9, 10**9, digests)
    event = progress_event(progress, 10**9, datetime.now(UTC))
    assert event.message.ByteSize() < MIN_MAX_EVENT_BYTES
