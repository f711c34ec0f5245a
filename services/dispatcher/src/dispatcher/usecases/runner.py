"""The dispatch loop: calls partner endpoints for every API-mode submission, fairly, within
each endpoint's contract, and records answers so that a restart resends nothing answered."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge

from dispatcher.core.aimd import AdaptiveLimit
from dispatcher.core.fairshare import FairScheduler
from dispatcher.core.jobs import (
    ANSWERED,
    DONE,
    INFRA_FAILED,
    INTERNAL_FAILURE,
    RUNNING,
    ItemOutcome,
    JobSpec,
    Progress,
    Recorded,
    answers_vector,
    end_state,
    keeps_key,
)
from dispatcher.core.multimodal import (
    MAX_IMAGE_BYTES,
    MAX_REQUEST_IMAGE_BYTES,
    ImageNotSendable,
    chat_messages,
    check_images,
)
from dispatcher.core.policy import PromptDoesNotFit, fit_messages
from dispatcher.core.ports import (
    CallResult,
    Endpoint,
    Event,
    Images,
    JobStore,
    LoadFailure,
    Outage,
    Outbox,
    Prompts,
    Transactions,
)
from dispatcher.core.retry import (
    Outcome,
    RetryBudget,
    RetryPolicy,
    classify,
    decide,
    parse_retry_after,
)
from dispatcher.usecases.progress import progress_event
from medbench.common.v1 import common_pb2
from medbench.inference.v1 import inference_events_pb2
from medbench_messaging import topics
from medbench_messaging.sizing import MAX_ANSWER_BYTES, clip_utf8
from medbench_runtime.answer_digest import answer_digest
from medbench_runtime.timestamps import timestamp

log = logging.getLogger(__name__)

CALLS = Counter(
    "medbench_dispatch_calls_total", "Endpoint calls by outcome and tenant.", ["outcome", "tenant"]
)
INFLIGHT = Gauge("medbench_dispatch_inflight", "Endpoint calls in flight.")
FLUSH_ITEMS = 200
# Answers older than this leave even in a small batch: a slow endpoint's answers reach the
# scorers within seconds, not after FLUSH_ITEMS of them have piled up.
FLUSH_AFTER_S = 2.0
# How often RUNNING jobs are looked up besides the notifications of new ones.
REFRESH_S = 2.0
# Pause before trying a failed write again.
OUTAGE_RETRY_S = 1.0
# Retries every submission may spend whatever its size; beyond it, budget_fraction of its calls.
RETRY_FLOOR = 100


@dataclass(frozen=True)
class NotSent:
    """The outcome of an item the platform could not send (no call was made)."""

    error: str
    status: int | None = None
    text: str = ""
    finish_reason: str = ""
    usage: dict[str, int] | None = None
    retry_after: str | None = None
    latency_ms: float = 0.0
    refused: bool = False


@dataclass
class Item:
    """One prompt to send."""

    item_id: str
    ordinal: int
    dataset: str
    messages: list[tuple[str, str]]
    image_ids: tuple[str, ...] = ()
    prompt_hash: str = ""
    answer_format: str = ""


def _no_slot(job: Job) -> None:
    """Tells the job's calls waiting for a slot after a backoff that none will come."""
    for waiting in job.retrying:
        if not waiting.done():
            waiting.set_result(False)
    job.retrying.clear()


class _Slot:
    """An endpoint slot held by one call; each hold is released exactly once."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._on_release = release
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._on_release()

    def hold(self) -> None:
        """The call holds a slot again (the scheduler acquired it for the call)."""
        self._held = True


@dataclass
class Job:
    """One running API-mode submission."""

    spec: JobSpec
    api_key: str
    pending: deque[Item]
    limit: AdaptiveLimit
    budget: RetryBudget
    # Calls from their start until their outcome is recorded (or the item is put back).
    inflight: int = 0
    unflushed: list[ItemOutcome | Recorded] = field(default_factory=list)
    # When the oldest answer in unflushed was recorded (monotonic).
    unflushed_since: float = 0.0
    calls: int = 0
    # Recorded outcomes (kept here so status reads never count documents while a job runs).
    answered: int = 0
    infra_failed: int = 0
    failed: str = ""
    flushing: bool = False
    # Calls that waited out a backoff and wait for a slot: served before new items. Each gets
    # True when the scheduler acquired a slot for it, False when the dispatcher stops or the
    # run fails.
    retrying: deque[asyncio.Future[bool]] = field(default_factory=deque)
    # Item ids recorded before this process took the job, or queued since: never queued again.
    seen: set[str] = field(default_factory=set)
    # Whether every prompt of the job has been read; the reading task while one runs.
    loaded: bool = False
    reading: asyncio.Task[None] | None = None

    @property
    def submission_id(self) -> str:
        return self.spec.submission_id


class Dispatcher:
    """A worker: loads RUNNING jobs, schedules calls across them, flushes answers."""

    name = "dispatcher"

    def __init__(
        self,
        jobs: JobStore,
        endpoint: Endpoint,
        prompts: Prompts,
        images: Images,
        transactions: Transactions,
        outbox: Outbox,
        outage: Outage,
        load_failure: LoadFailure,
        global_cap: int = 256,
        policy: RetryPolicy | None = None,
        rand: Callable[[], float] = random.random,
        throttle_tolerance: float = 0.2,
        max_image_bytes: int = MAX_IMAGE_BYTES,
        max_request_image_bytes: int = MAX_REQUEST_IMAGE_BYTES,
    ) -> None:
        """outage: which errors pass (waited out); load_failure: the reason a job that cannot be
        loaded fails with; max_image_bytes, max_request_image_bytes: the largest image and
        item's images sent (core/multimodal.py: the bank's import limit)."""
        self._jobs = jobs
        self._endpoint = endpoint
        self._prompts = prompts
        self._images = images
        self._transactions = transactions
        self._outbox = outbox
        self._outage = outage
        self._load_failure = load_failure
        self._global_cap = global_cap
        self._policy = policy or RetryPolicy()
        self._rand = rand
        self._throttle_tolerance = throttle_tolerance
        self._image_limits = (max_image_bytes, max_request_image_bytes)
        self._active: dict[str, Job] = {}
        self._fair = FairScheduler()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flushes: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        # Set whenever a slot frees or a call ends: the scheduler has something to do.
        self._kick = asyncio.Event()
        self._calling = 0  # endpoint calls in flight, all jobs (the global cap)
        self._finished_count = 0
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()
        for job in self._active.values():
            _no_slot(job)
        self._wake.set()
        self._kick.set()

    def notify(self) -> None:
        """A new job was recorded."""
        self._wake.set()
        self._kick.set()

    def job(self, submission_id: str) -> Job | None:
        return self._active.get(submission_id)

    async def run(self) -> None:
        last_refresh = -REFRESH_S
        loop = asyncio.get_running_loop()
        refreshing: asyncio.Task[None] | None = None
        while not self._stopping.is_set():
            due = loop.time() - last_refresh > REFRESH_S or self._wake.is_set()
            if due and (refreshing is None or refreshing.done()):
                failed = refreshing.exception() if refreshing is not None else None
                if failed is not None and not self._outage(failed):
                    raise failed  # fails the worker (and the service is restarted)
                if failed is not None:
                    # A peer or the database is down for a moment: the jobs not yet loaded are
                    # loaded by the next refresh, the loaded ones are served meanwhile.
                    log.warning("loading jobs failed, trying again: %r", failed)
                self._wake.clear()
                refreshing = asyncio.create_task(self._refresh())
                refreshing.add_done_callback(lambda _: self._kick.set())
                last_refresh = loop.time()
            self._kick.clear()
            self._schedule()
            await self._flush_due()
            await self._finish_done()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=0.2)
        if refreshing is not None and not refreshing.done():
            refreshing.cancel()
        for job in self._active.values():
            if job.reading is not None:
                job.reading.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        if self._flushes:
            await asyncio.wait(self._flushes, timeout=10)
        for job in self._active.values():
            await self._flush_all(job)

    async def _refresh(self) -> None:
        """Takes up RUNNING jobs not yet active, and reads the prompts of those not read yet.

        A job is served from its first batch of prompts on: its prompts are read by a task of
        its own, so neither its first call nor other jobs wait for the whole of a large pool.
        """
        finished_before = self._finished_count
        for spec in await self._jobs.running():
            job = self._active.get(spec.submission_id)
            if job is None:
                try:
                    job = await self._open(spec)
                except Exception as exc:
                    if self._outage(exc):
                        raise
                    # This job's own fault (a bad record, a key that cannot be had): it fails,
                    # the others go on.
                    log.exception("cannot load dispatch job %s", spec.submission_id)
                    answered, infra_failed = await self._jobs.counts(spec.submission_id)
                    await self._end(spec, answered, infra_failed, 0, self._load_failure(exc))
                    continue
                if (
                    self._finished_count != finished_before
                    and await self._jobs.state(job.submission_id) != RUNNING
                ):
                    continue  # finished while this refresh was reading
                self._active[job.submission_id] = job
                self._fair.add(job.submission_id, spec.tenant_id)
                log.info(
                    "dispatching %s (%d items already recorded)", job.submission_id, len(job.seen)
                )
            if not job.loaded and job.reading is None:
                job.reading = asyncio.create_task(self._read_prompts(job))
                job.reading.add_done_callback(functools.partial(self._read_done, job))

    async def _open(self, spec: JobSpec) -> Job:
        """A job with what was recorded before (a restart resends only what was in flight)."""
        recorded = await self._jobs.recorded(spec.submission_id)
        job = Job(
            spec,
            await self._jobs.api_key(spec.submission_id, spec.tenant_id),
            deque(),
            AdaptiveLimit(spec.max_concurrency, tolerance=self._throttle_tolerance),
            RetryBudget(self._policy.budget_fraction, min_retries=RETRY_FLOOR),
        )
        job.seen = {r.item_id for r in recorded}
        job.answered = sum(1 for r in recorded if r.status == ANSWERED)
        job.infra_failed = len(recorded) - job.answered
        job.unflushed = [r for r in recorded if r.status == ANSWERED and not r.batched]
        job.unflushed_since = time.monotonic()
        return job

    async def _read_prompts(self, job: Job) -> None:
        """Queues the job's prompts not yet seen, batch by batch, each sent as slots allow."""
        async for batch in self._prompts.batches(job.submission_id):
            for it in batch:
                # Canaries trace leaked downloads; an endpoint never needs to answer them.
                if it.canary or it.item_id in job.seen:
                    continue
                job.seen.add(it.item_id)
                messages = list(it.messages) or [("user", it.question)]
                job.pending.append(
                    Item(
                        it.item_id,
                        it.ordinal,
                        it.dataset,
                        messages,
                        it.image_ids,
                        it.prompt_hash,
                        it.answer_format,
                    )
                )
            if not self._stopping.is_set():
                self._schedule()
        job.loaded = True
        log.info("read every prompt of %s (%d items)", job.submission_id, len(job.seen))

    def _read_done(self, job: Job, task: asyncio.Task[None]) -> None:
        job.reading = None
        self._kick.set()
        if task.cancelled():
            return
        failed = task.exception()
        if failed is None:
            return
        if self._outage(failed):
            # A peer or the database is down for a moment: the next refresh reads on, skipping
            # what was queued; the queued items are served meanwhile.
            log.warning("reading prompts of %s failed, trying again: %r", job.submission_id, failed)
        else:
            # This job's own fault: it fails (FAILED, nothing charged), the others go on.
            log.error("reading prompts of %s failed: %r", job.submission_id, failed)
            job.failed = INTERNAL_FAILURE

    def _schedule(self) -> None:
        def has_work(submission_id: str) -> bool:
            job = self._active.get(submission_id)
            if job is None or job.failed or not job.limit.has_room():
                return False
            while job.retrying and job.retrying[0].done():
                job.retrying.popleft()  # its call was told to stop
            # A slot frees when the endpoint answers, before the answer is recorded; answers
            # not yet recorded are bounded too (at most one more cap's worth), so a slow or
            # unreachable database stops the calls instead of piling answers up in memory
            # that a crash would have to send again. Calls backing off count among them.
            return bool(job.retrying) or bool(job.pending and job.inflight < 2 * job.limit.cap)

        while self._calling < self._global_cap:
            chosen = self._fair.next_submission(has_work)
            if chosen is None:
                return
            job = self._active[chosen]
            job.limit.acquire()
            self._calling += 1
            if job.retrying:
                job.retrying.popleft().set_result(True)  # the slot is the waiting call's
                continue
            item = job.pending.popleft()
            job.inflight += 1
            task = asyncio.create_task(self._call(job, item))
            self._tasks.add(task)
            task.add_done_callback(self._call_done)

    def _release(self, job: Job) -> None:
        """The endpoint is done with a request: its slot can take the next one."""
        job.limit.release()
        self._calling -= 1
        # The next call starts now, not after the loop below wakes: under load every turn of
        # the event loop between a reply and the next request leaves the slot idle.
        if not self._stopping.is_set():
            self._schedule()
        self._kick.set()

    def _call_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._kick.set()

    async def _call(self, job: Job, item: Item) -> None:
        INFLIGHT.inc()
        slot = _Slot(lambda: self._release(job))
        try:
            await self._send(job, item, slot)
        except Exception:  # noqa: BLE001 - an item must never vanish with its task
            log.exception(
                "sending %s of %s failed inside the dispatcher; it goes back in the queue",
                item.item_id,
                job.submission_id,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=OUTAGE_RETRY_S)
            job.pending.appendleft(item)
        finally:
            job.inflight -= 1
            slot.release()
            INFLIGHT.dec()

    async def _send(self, job: Job, item: Item, slot: _Slot) -> None:
        """Calls until the contract settles the item, then records it."""
        try:
            messages, truncated = fit_messages(item.messages, job.spec.decoding)
            tenant = job.spec.tenant_id
            images = [await self._images.get(image_id, tenant) for image_id in item.image_ids]
            check_images(images, *self._image_limits)
        except (PromptDoesNotFit, ImageNotSendable) as exc:
            # The platform cannot send this item: not the endpoint's fault, not a wrong answer.
            failure = NotSent(error=f"item cannot be sent: {exc}")
            await self._record(job, item, INFRA_FAILED, failure, 0, True)
            return
        decoding = job.spec.decoding
        body: dict[str, Any] = {
            "model": job.spec.model,
            "messages": chat_messages(messages, images),
            "temperature": decoding.temperature,
            "max_tokens": decoding.max_tokens,
        }
        if decoding.top_p is not None:
            body["top_p"] = decoding.top_p
        attempt = 0
        while True:
            attempt += 1
            epoch = job.limit.epoch
            job.calls += 1
            if attempt == 1:
                job.budget.record_call()
            result = await self._endpoint.chat(job.spec.base_url, job.api_key, body)
            outcome = (
                # The endpoint's host now resolves where the egress policy refuses: the run
                # cannot go on against it (nothing was sent).
                Outcome.FAIL_SUBMISSION
                if result.refused
                else decide(
                    classify(result.status, result.error or None), attempt, self._policy, job.budget
                )
            )
            CALLS.labels(outcome.name.lower(), job.spec.tenant_id).inc()
            if result.status == 429:
                job.limit.on_throttle(epoch)
            if outcome is Outcome.SUCCESS:
                job.limit.on_success()
                # The endpoint is done with this request: free its slot before the write.
                slot.release()
                await self._record(job, item, ANSWERED, result, attempt, truncated)
                return
            if outcome is Outcome.FAIL_SUBMISSION:
                job.failed = result.error or f"HTTP {result.status}"
                _no_slot(job)  # the calls backing off end too: the run is over
                return
            if outcome is Outcome.FAIL_ITEM_INFRA:
                await self._record(job, item, INFRA_FAILED, result, attempt, truncated)
                return
            retry_after = parse_retry_after(result.retry_after, datetime.now(UTC))
            delay = self._policy.delay(attempt, self._rand, retry_after)
            # Nothing is in flight at the endpoint while the call waits: its slot serves other
            # items meanwhile, and the call takes the next free one before any new item.
            slot.release()
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                return  # stopping: the item stays unrecorded and is sent after restart
            except TimeoutError:
                pass
            if job.failed:
                return  # another call's answer ended the run meanwhile
            waiting: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            job.retrying.append(waiting)
            self._schedule()
            try:
                granted = await waiting
            except asyncio.CancelledError:
                if waiting.done() and not waiting.cancelled() and waiting.result():
                    self._release(job)  # granted just before the cancel: give it back
                raise
            if not granted:
                return  # stopping or failed: the item stays unrecorded
            slot.hold()
            if self._stopping.is_set() or job.failed:
                return

    async def _record(
        self, job: Job, item: Item, status: str, result: CallResult, attempts: int, truncated: bool
    ) -> None:
        # An answer is carried to the scorers up to the platform's per-answer limit (the
        # upload mode's too); the record says when the model's was longer.
        text = clip_utf8(result.text, MAX_ANSWER_BYTES)
        outcome = ItemOutcome(
            submission_id=job.submission_id,
            item_id=item.item_id,
            ordinal=item.ordinal,
            dataset=item.dataset,
            prompt_hash=item.prompt_hash,
            status=status,
            text=text,
            clipped=len(result.text.encode()) > MAX_ANSWER_BYTES,
            finish_reason=result.finish_reason,
            usage=result.usage or {},
            latency_ms=result.latency_ms,
            attempts=attempts,
            error=result.error,
            truncated=truncated,
            recorded_at=datetime.now(UTC),
            digest=answer_digest(text, item.answer_format) if status == ANSWERED else b"",
        )
        while True:
            try:
                stored = await self._jobs.record(outcome)
                break
            except Exception as exc:
                if not self._outage(exc):
                    raise
                # The answer is in hand: keep it and wait for the database, never call again.
                log.warning("recording %s waits for the database: %s", outcome.record_id, exc)
                await asyncio.sleep(OUTAGE_RETRY_S)
        if stored and status == ANSWERED:
            job.answered += 1
            if not job.unflushed:
                job.unflushed_since = time.monotonic()
            job.unflushed.append(outcome)
        elif stored:
            job.infra_failed += 1

    async def _flush_due(self) -> None:
        for job in list(self._active.values()):
            idle = not job.pending and job.inflight == 0
            stale = time.monotonic() - job.unflushed_since >= FLUSH_AFTER_S
            due = len(job.unflushed) >= FLUSH_ITEMS or (
                job.unflushed and (idle or job.failed or stale)
            )
            if due and not job.flushing:
                # In the background: the scheduler keeps the endpoint busy meanwhile.
                job.flushing = True
                task = asyncio.create_task(self._flush(job))
                self._flushes.add(task)
                task.add_done_callback(self._flushes.discard)

    async def _flush(self, job: Job) -> None:
        """Answers leave in batches: the batch claim and its event commit together."""
        try:
            await self._flush_all(job)
        except Exception:  # noqa: BLE001 - the batch stays queued and is tried again
            log.exception("publishing answers of %s failed; retrying", job.submission_id)
            await asyncio.sleep(OUTAGE_RETRY_S)
        finally:
            job.flushing = False

    async def _flush_all(self, job: Job) -> None:
        while job.unflushed:
            part, job.unflushed = job.unflushed[:FLUSH_ITEMS], job.unflushed[FLUSH_ITEMS:]
            now = datetime.now(UTC)

            async def commit(
                tx: Any, part: list[ItemOutcome | Recorded] = part, now: datetime = now
            ) -> None:
                spec = job.spec
                ids = [f"{spec.submission_id}:{d.item_id}" for d in part]
                batch_id = await self._jobs.claim(tx, spec.submission_id, ids)
                event = inference_events_pb2.ResponsesRecorded(
                    event_id=f"{spec.submission_id}:{batch_id}",
                    submission_id=spec.submission_id,
                    tenant_id=spec.tenant_id,
                    pool_id=spec.pool_id,
                    batch_id=batch_id,
                    expected_items=spec.expected,
                    mode=common_pb2.SUBMISSION_MODE_API,
                    track=spec.track,  # type: ignore[arg-type]
                    recorded_at=timestamp(now),
                    self_test=spec.self_test,
                    responses=[
                        inference_events_pb2.RecordedResponse(
                            item_id=d.item_id,
                            ordinal=d.ordinal,
                            dataset=d.dataset,
                            answer=d.text,
                            prompt_hash=d.prompt_hash,
                        )
                        for d in part
                    ],
                )
                # The answered counter moves with the answers it counts (see usecases/progress).
                running = Progress(
                    spec.submission_id, spec.tenant_id, RUNNING, "", job.answered, job.infra_failed
                )
                progress = await self._progress(tx, running, now)
                await self._outbox.add(
                    tx,
                    [
                        Event(
                            event.event_id,
                            topics.RESPONSE_RECORDED,
                            event,
                            key=spec.submission_id,
                        ),
                        progress,
                    ],
                )

            try:
                await self._transactions.run(commit)
            except BaseException:
                job.unflushed[:0] = part  # not published: back to the front, in order
                raise
            self._outbox.notify()

    async def _progress(self, tx: Any, progress: Progress, now: datetime) -> Event:
        """The next progress event of a job (its sequence taken in tx)."""
        sequence = await self._jobs.next_sequence(tx, progress.submission_id)
        return progress_event(progress, sequence, now)

    async def _end(
        self, spec: JobSpec, answered: int, infra_failed: int, calls: int, failed: str
    ) -> str:
        """Stores how a run ended and announces it in one transaction; the endpoint key goes
        unless a resume may need it. Returns the end state."""
        state, reason = end_state(failed, infra_failed)
        now = datetime.now(UTC)
        # Every answer is in: the gateway compares them with the tenant's other runs on the
        # pool (probing detection), as it does an upload's.
        digests = (
            answers_vector(await self._jobs.recorded(spec.submission_id))
            if (state == DONE)
            else b""
        )

        async def commit(tx: Any) -> None:
            await self._jobs.finish(
                tx, spec.submission_id, state, reason, answered, infra_failed, calls
            )
            event = await self._progress(
                tx,
                Progress(
                    spec.submission_id,
                    spec.tenant_id,
                    state,
                    reason,
                    answered,
                    infra_failed,
                    digests,
                ),
                now,
            )
            await self._outbox.add(tx, [event])

        await self._transactions.run(commit)
        self._outbox.notify()
        if not keeps_key(state):
            # DONE or FAILED: no call is made again, so the endpoint key goes (a STALLED run
            # keeps it for a resume, until its retention ends: see KeyRetention).
            await self._jobs.forget_key(spec.submission_id)
        return state

    async def _finish_done(self) -> None:
        for submission_id, job in list(self._active.items()):
            if job.inflight or job.unflushed or job.flushing:
                continue
            if not job.failed and (job.pending or not job.loaded):
                continue
            if job.reading is not None:
                job.reading.cancel()  # failed: the rest of its prompts are not needed
            state = await self._end(job.spec, job.answered, job.infra_failed, job.calls, job.failed)
            if job.failed:
                log.warning("dispatch of %s failed: %s", submission_id, job.failed)
            else:
                log.info("dispatch of %s ended %s", submission_id, state)
            del self._active[submission_id]
            self._fair.remove(submission_id)
            self._finished_count += 1
