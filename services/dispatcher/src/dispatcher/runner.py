"""The dispatch loop: calls partner endpoints for every API-mode submission, fairly, within
each endpoint's contract, and records answers so that a restart resends nothing answered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter, Gauge

from dispatcher.adapters.mongo_jobs import MongoJobs
from dispatcher.adapters.rotator_images import RotatorImages
from dispatcher.core.aimd import AdaptiveLimit
from dispatcher.core.fairshare import FairScheduler
from dispatcher.core.multimodal import ImageNotSendable, chat_messages, check_images
from dispatcher.core.policy import DecodingSettings, PromptDoesNotFit, fit_messages
from dispatcher.core.retry import (
    Outcome,
    RetryBudget,
    RetryPolicy,
    classify,
    decide,
    parse_retry_after,
)
from medbench.common.v1 import common_pb2
from medbench.inference.v1 import inference_events_pb2
from medbench.taskpool.v1 import taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_messaging import topics
from medbench_messaging.publisher import Outgoing
from medbench_messaging.sizing import MAX_ANSWER_BYTES, clip_utf8
from medbench_runtime.openai_endpoint import CallResult, OpenAIEndpoint
from medbench_storage.client import TRANSIENT_ERRORS, in_transaction
from medbench_storage.endpoint_keys import KeyNotHeld
from medbench_storage.group_commit import GroupCommit
from medbench_storage.infra import Infrastructure
from medbench_storage.secrets import SecretsError

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


# The reason a job fails with when the platform itself cannot serve it (details in the log).
INTERNAL_FAILURE = "the platform could not read this submission's items (an internal error)"


KEY_NOT_HELD = (
    "this submission's endpoint API key is no longer held (it is deleted when a run ends, or "
    "after a long stall); create a new submission"
)
KEY_UNREADABLE = (
    "the platform could not read this submission's endpoint API key (an internal error)"
)


def _load_failure(exc: BaseException) -> str:
    """The reason a job that cannot be loaded fails with (details in the log)."""
    if isinstance(exc, KeyNotHeld):
        return KEY_NOT_HELD
    if isinstance(exc, SecretsError):
        return KEY_UNREADABLE
    return INTERNAL_FAILURE


def _passing(exc: BaseException) -> bool:
    """Whether exc is an outage that passes (a restarting peer, an unreachable database)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return isinstance(exc, TRANSIENT_ERRORS)


@dataclass
class Item:
    """One prompt to send."""

    item_id: str
    ordinal: int
    dataset: str
    messages: list[tuple[str, str]]
    image_ids: tuple[str, ...] = ()
    prompt_hash: str = ""


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

    doc: dict[str, Any]
    api_key: str
    decoding: DecodingSettings
    pending: deque[Item]
    limit: AdaptiveLimit
    budget: RetryBudget
    # Calls from their start until their outcome is recorded (or the item is put back).
    inflight: int = 0
    unflushed: list[dict[str, Any]] = field(default_factory=list)
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
        return str(self.doc["_id"])


class Dispatcher:
    """A worker: loads RUNNING jobs, schedules calls across them, flushes answers."""

    name = "dispatcher"

    def __init__(
        self,
        infra: Infrastructure,
        jobs: MongoJobs,
        endpoint: OpenAIEndpoint,
        rotator: taskpool_service_pb2_grpc.TaskPoolServiceStub,
        global_cap: int = 256,
        policy: RetryPolicy | None = None,
        rand: Callable[[], float] = random.random,
        throttle_tolerance: float = 0.2,
    ) -> None:
        self._infra = infra
        self._jobs = jobs
        self._endpoint = endpoint
        self._rotator = rotator
        self._images = RotatorImages(rotator)
        self._global_cap = global_cap
        self._policy = policy or RetryPolicy()
        self._rand = rand
        self._throttle_tolerance = throttle_tolerance
        self._active: dict[str, Job] = {}
        self._fair = FairScheduler()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flushes: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        # Set whenever a slot frees or a call ends: the scheduler has something to do.
        self._kick = asyncio.Event()
        self._calling = 0  # endpoint calls in flight, all jobs (the global cap)
        self._finished_count = 0
        # Concurrent calls finish together: their records share writes.
        self._records: GroupCommit[dict[str, Any], bool] = GroupCommit(jobs.record_many)
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
                if failed is not None and not _passing(failed):
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
        for doc in await self._jobs.running():
            job = self._active.get(doc["_id"])
            if job is None:
                try:
                    job = await self._open(doc)
                except Exception as exc:
                    if _passing(exc):
                        raise
                    # This job's own fault (a bad record, a key that cannot be had): it fails,
                    # the others go on.
                    log.exception("cannot load dispatch job %s", doc.get("_id"))
                    await self._jobs.set_state(doc["_id"], "FAILED", _load_failure(exc))
                    await self._jobs.forget_key(doc["_id"])
                    continue
                if (
                    self._finished_count != finished_before
                    and await self._jobs.state(job.submission_id) != "RUNNING"
                ):
                    continue  # finished while this refresh was reading
                self._active[job.submission_id] = job
                self._fair.add(job.submission_id, doc["tenant_id"])
                log.info(
                    "dispatching %s (%d items already recorded)", job.submission_id, len(job.seen)
                )
            if not job.loaded and job.reading is None:
                job.reading = asyncio.create_task(self._read_prompts(job))
                job.reading.add_done_callback(lambda task, job=job: self._read_done(job, task))

    async def _open(self, doc: dict[str, Any]) -> Job:
        """A job with what was recorded before (a restart resends only what was in flight)."""
        recorded = await self._jobs.recorded(doc["_id"])
        d = doc["decoding"]
        job = Job(
            doc,
            await self._jobs.api_key(doc["_id"], doc["tenant_id"]),
            DecodingSettings(
                d["temperature"], d["max_tokens"], d["context_window"], d.get("top_p")
            ),
            deque(),
            AdaptiveLimit(doc["endpoint"]["max_concurrency"], tolerance=self._throttle_tolerance),
            RetryBudget(self._policy.budget_fraction, min_retries=RETRY_FLOOR),
        )
        job.seen = {r["item_id"] for r in recorded}
        job.answered = sum(1 for r in recorded if r["status"] == "answered")
        job.infra_failed = len(recorded) - job.answered
        job.unflushed = [r for r in recorded if r["status"] == "answered" and not r.get("batched")]
        job.unflushed_since = time.monotonic()
        return job

    async def _read_prompts(self, job: Job) -> None:
        """Queues the job's prompts not yet seen, batch by batch, each sent as slots allow."""
        request = taskpool_service_pb2.GetPromptsRequest(
            submission_id=job.submission_id, include_prompts=True
        )
        async for batch in self._rotator.GetPrompts(request):
            for it in batch.items:
                # Canaries trace leaked downloads; an endpoint never needs to answer them.
                if it.canary or it.item_id in job.seen:
                    continue
                job.seen.add(it.item_id)
                messages = [(m.role, m.content) for m in it.messages] or [("user", it.question)]
                job.pending.append(
                    Item(
                        it.item_id,
                        it.ordinal,
                        it.dataset,
                        messages,
                        tuple(it.image_ids),
                        it.prompt_hash,
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
        if _passing(failed):
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
            messages, truncated = fit_messages(item.messages, job.decoding)
            images = [await self._images.get(image_id) for image_id in item.image_ids]
            check_images(images)
        except (PromptDoesNotFit, ImageNotSendable) as exc:
            # The platform cannot send this item: not the endpoint's fault, not a wrong answer.
            failure = CallResult(None, error=f"item cannot be sent: {exc}")
            await self._record(job, item, "infra_failed", failure, 0, True)
            return
        body: dict[str, Any] = {
            "model": job.doc["endpoint"]["model"],
            "messages": chat_messages(messages, images),
            "temperature": job.decoding.temperature,
            "max_tokens": job.decoding.max_tokens,
        }
        if job.decoding.top_p is not None:
            body["top_p"] = job.decoding.top_p
        attempt = 0
        while True:
            attempt += 1
            epoch = job.limit.epoch
            job.calls += 1
            if attempt == 1:
                job.budget.record_call()
            result = await self._endpoint.chat(job.doc["endpoint"]["base_url"], job.api_key, body)
            outcome = (
                # The endpoint's host now resolves where the egress policy refuses: the run
                # cannot go on against it (nothing was sent).
                Outcome.FAIL_SUBMISSION
                if result.refused
                else decide(
                    classify(result.status, result.error or None), attempt, self._policy, job.budget
                )
            )
            CALLS.labels(outcome.name.lower(), job.doc["tenant_id"]).inc()
            if result.status == 429:
                job.limit.on_throttle(epoch)
            if outcome is Outcome.SUCCESS:
                job.limit.on_success()
                # The endpoint is done with this request: free its slot before the write.
                slot.release()
                await self._record(job, item, "answered", result, attempt, truncated)
                return
            if outcome is Outcome.FAIL_SUBMISSION:
                job.failed = result.error or f"HTTP {result.status}"
                _no_slot(job)  # the calls backing off end too: the run is over
                return
            if outcome is Outcome.FAIL_ITEM_INFRA:
                await self._record(job, item, "infra_failed", result, attempt, truncated)
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
        doc = {
            "_id": f"{job.submission_id}:{item.item_id}",
            "submission_id": job.submission_id,
            "item_id": item.item_id,
            "ordinal": item.ordinal,
            "dataset": item.dataset,
            "prompt_hash": item.prompt_hash,
            "status": status,
            # An answer is carried to the scorers up to the platform's per-answer limit (the
            # upload mode's too); the record says when the model's was longer.
            "text": clip_utf8(result.text, MAX_ANSWER_BYTES),
            "clipped": len(result.text.encode()) > MAX_ANSWER_BYTES,
            "finish_reason": result.finish_reason,
            "usage": result.usage or {},
            "latency_ms": result.latency_ms,
            "attempts": attempts,
            "error": result.error,
            "truncated": truncated,
            "batched": "",
            "recorded_at": datetime.now(UTC),
        }
        while True:
            try:
                stored = await self._records.submit(doc)
                break
            except TRANSIENT_ERRORS as exc:
                # The answer is in hand: keep it and wait for the database, never call again.
                log.warning("recording %s waits for MongoDB: %s", doc["_id"], exc)
                await asyncio.sleep(OUTAGE_RETRY_S)
        if stored and status == "answered":
            job.answered += 1
            if not job.unflushed:
                job.unflushed_since = time.monotonic()
            job.unflushed.append(doc)
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
            recorded_at = Timestamp()
            recorded_at.FromDatetime(datetime.now(UTC))

            async def commit(
                session: Any,
                part: list[dict[str, Any]] = part,
                recorded_at: Timestamp = recorded_at,
            ) -> None:
                batch_id = f"api-{await self._jobs.next_batch(session, job.submission_id):06d}"
                await self._jobs.claim(session, [d["_id"] for d in part], batch_id)
                event = inference_events_pb2.ResponsesRecorded(
                    event_id=f"{job.submission_id}:{batch_id}",
                    submission_id=job.submission_id,
                    tenant_id=job.doc["tenant_id"],
                    pool_id=job.doc["pool_id"],
                    batch_id=batch_id,
                    expected_items=job.doc["expected"],
                    mode=common_pb2.SUBMISSION_MODE_API,
                    track=int(job.doc.get("track", 0)),
                    recorded_at=recorded_at,
                    self_test=bool(job.doc.get("self_test", False)),
                    responses=[
                        inference_events_pb2.RecordedResponse(
                            item_id=d["item_id"],
                            ordinal=d["ordinal"],
                            dataset=d["dataset"],
                            answer=d["text"],
                            prompt_hash=d.get("prompt_hash", ""),
                        )
                        for d in part
                    ],
                )
                await self._infra.outbox.add(
                    session,
                    [
                        (
                            event.event_id,
                            Outgoing(topics.RESPONSE_RECORDED, event, key=job.submission_id),
                        )
                    ],
                )

            try:
                await in_transaction(self._infra.client, commit)
            except BaseException:
                job.unflushed[:0] = part  # not published: back to the front, in order
                raise
            self._infra.relay.notify()

    async def _finish_done(self) -> None:
        for submission_id, job in list(self._active.items()):
            if job.inflight or job.unflushed or job.flushing:
                continue
            if not job.failed and (job.pending or not job.loaded):
                continue
            if job.reading is not None:
                job.reading.cancel()  # failed: the rest of its prompts are not needed
            await self._jobs.add_calls(submission_id, job.calls)
            await self._jobs.set_counts(submission_id, job.answered, job.infra_failed)
            if job.failed:
                await self._jobs.set_state(submission_id, "FAILED", job.failed)
                log.warning("dispatch of %s failed: %s", submission_id, job.failed)
            else:
                failed = job.infra_failed
                if failed:
                    await self._jobs.set_state(
                        submission_id,
                        "STALLED",
                        f"{failed} items failed for infrastructure reasons; they are not "
                        f"scored or charged and can be resumed",
                    )
                else:
                    await self._jobs.set_state(submission_id, "DONE")
            if job.failed or not job.infra_failed:
                # DONE or FAILED: no call is made again, so the endpoint key goes (a STALLED
                # run keeps it for a resume, until its retention ends: see KeyRetention).
                await self._jobs.forget_key(submission_id)
            del self._active[submission_id]
            self._fair.remove(submission_id)
            self._finished_count += 1
