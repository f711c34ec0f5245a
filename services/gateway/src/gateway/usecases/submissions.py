"""Submissions: everything the public API does to submissions (create, upload, view, list,
publish, results, report) and what the gateway learns from the other services (dispatch
progress, completion). The rules are in core/submission.py; this module orders the calls."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.core import uploads
from gateway.core.listing import ListRequest, page_token, validate_list
from gateway.core.ports import (
    Dispatch,
    DuplicateSubmission,
    Event,
    Expect,
    Outbox,
    Publication,
    QuotaLedger,
    Reports,
    Rotator,
    SubmissionStore,
    Transactions,
)
from gateway.core.quotas import PoolRun, pool_run
from gateway.core.submission import (
    AWAITING,
    COMPLETED,
    DISPATCH_DONE,
    DISPATCHING,
    FAILED,
    MODE_API,
    MODE_UPLOAD,
    SCORING,
    TERMINAL,
    CreateRequest,
    DispatchProgress,
    Record,
    ValidCreate,
    closed_by_disclosure,
    completion_fields,
    dispatch_fields,
    new_record,
    no_more_answers,
    plan_upload,
    publishable,
    require_awaiting,
    same_request,
    shows_scoring_progress,
    validate_create,
)
from gateway.core.ttl_cache import TtlCache
from gateway.usecases import metrics
from gateway.usecases.probing import Probing
from medbench.inference.v1 import inference_events_pb2
from medbench.submission.v1 import submission_events_pb2, submission_pb2
from medbench_messaging import topics
from medbench_messaging.sizing import MAX_ANSWER_BYTES
from medbench_runtime.checksums import answers_sha256
from medbench_runtime.egress import EgressPolicy
from medbench_runtime.errors import Aborted, FailedPrecondition, InvalidArgument, Unavailable
from medbench_runtime.metrics import count_items
from medbench_runtime.timestamps import timestamp

log = logging.getLogger(__name__)

MISSING_BATCH = 5000


@dataclass(frozen=True)
class UploadOutcome:
    """What one upload message did."""

    replayed: bool
    accepted: int
    state: str


@dataclass(frozen=True)
class View:
    """A submission as its owner sees it: the record and the items scored so far."""

    record: Record
    scored: int = 0


def submission_to_proto(
    doc: Record, scored: int = 0, partner_view: bool = True
) -> submission_pb2.Submission:
    """The partner-facing view of a stored submission (no bitmap, no answers). Without
    partner_view (the submission-created event) expected_items is the pool's item count, the
    number of items to answer and score."""
    m = doc["model"]
    shown = doc["expected"]
    if partner_view and doc["mode"] == MODE_UPLOAD:
        shown += doc.get("canaries", 0)
    out = submission_pb2.Submission(
        submission_id=doc["_id"],
        tenant_id=doc["tenant_id"],
        model=submission_pb2.ModelInfo(
            name=m["name"],
            version=m.get("version", ""),
            organisation=m.get("organisation", ""),
            open_source=m.get("open_source", False),
            parameter_count=m.get("parameter_count", ""),
            release_date=m.get("release_date", ""),
        ),
        track=doc["track"],
        mode=doc["mode"],
        state=submission_pb2.SubmissionState.Value(f"SUBMISSION_STATE_{doc['state']}"),
        state_reason=doc.get("state_reason", ""),
        # Counters count what the partner was shown: the pool's items (canaries among them,
        # scored like the rest), and an older download's unscored extras (see core.submission).
        progress=submission_pb2.Progress(
            expected_items=shown,
            answered_items=doc.get("answered_shown", doc["answered"]),
            scored_items=max(scored, doc.get("scored", 0)),
            # What the dispatcher last reported, while it can still be resumed.
            infra_failed_items=doc.get("infra_failed", 0) if doc["state"] == DISPATCHING else 0,
        ),
        pool_id=doc["pool_id"],
        request_id=doc["request_id"],
    )
    if "endpoint" in doc:
        e, d = doc["endpoint"], doc["decoding"]
        out.endpoint.CopyFrom(
            submission_pb2.Endpoint(
                base_url=e["base_url"],
                model=e["model"],
                max_concurrency=e["max_concurrency"],
                self_test=e["self_test"],
            )
        )
        out.decoding.CopyFrom(
            submission_pb2.DecodingSettings(
                temperature=d["temperature"],
                max_tokens=d["max_tokens"],
                context_window=d["context_window"],
                top_p=d["top_p"],
            )
        )
    for name in ("created_at", "updated_at", "completed_at"):
        ts = timestamp(doc.get(name))
        if ts is not None:
            getattr(out, name).CopyFrom(ts)
    return out


class Submissions:
    """Everything the public API does to submissions."""

    def __init__(
        self,
        store: SubmissionStore,
        transactions: Transactions,
        outbox: Outbox,
        rotator: Rotator,
        reports: Reports,
        dispatch: Dispatch | None = None,
        quotas: QuotaLedger | None = None,
        egress: EgressPolicy | None = None,
        progress_cache_s: float = 1.0,
        view_cache_s: float = 1.0,
        probing: Probing | None = None,
    ) -> None:
        """egress: the partner endpoint policy's static part (None: the production default).
        progress_cache_s: how long the aggregator's scoring progress of a submission is kept
        (reads within it share one call; 0 = off). view_cache_s: how long a submission read
        for a view is kept; every change this process makes to it forgets it at once (a
        partner reads its own writes), a change made by another gateway replica shows within
        view_cache_s (0 = off). probing: compares each upload whose answers are final with
        the tenant's others on its pool (None: off)."""
        self._store = store
        self._transactions = transactions
        self._outbox = outbox
        self._rotator = rotator
        self._reports = reports
        self._dispatch = dispatch
        self._quotas = quotas
        self._egress = egress or EgressPolicy()
        self._probing = probing
        self._scored: TtlCache[str, int] = TtlCache(progress_cache_s, max_entries=4096)
        self._views: TtlCache[tuple[str, str], Record] = TtlCache(view_cache_s, max_entries=4096)

    def _changed(self, tenant_id: str, submission_id: str) -> None:
        """This process changed the submission (after the commit): views read it again."""
        self._views.forget((tenant_id, submission_id))

    # -- commands of the partner -------------------------------------------------------------

    async def create(self, request: CreateRequest) -> tuple[Record, bool]:
        """Creates (or finds) the submission for (tenant, request_id)."""
        valid = validate_create(request, self._egress)
        tenant_id, submission_id = request.tenant_id, valid.submission_id
        existing = await self._store.find(tenant_id, submission_id)
        if existing is not None:
            return same_request(existing, valid), False
        if self._quotas is not None:
            await self._quotas.check_active(tenant_id)
        if valid.api:
            # Everything else that can refuse the request is asked before the endpoint is
            # called: a board without a pool, a spent cap on it, then the preflight (the first
            # byte it gets).
            await self._check_run(valid, await self._rotator.require_pool(request.track, True))
            await self._preflight(valid)
        elif self._quotas is not None:
            # A spent cap is refused before the rotator assigns (and seals) anything.
            await self._check_run(valid, await self._rotator.current_pool(request.track, False))
        assignment = await self._rotator.assign(
            submission_id, tenant_id, request.track, api=valid.api
        )
        now = datetime.now(UTC)
        record = new_record(
            valid, assignment.pool_id, assignment.item_count, assignment.canary_items, now
        )
        event = submission_events_pb2.SubmissionCreated(
            event_id=f"{submission_id}:created",
            submission=submission_to_proto(record, partner_view=False),
        )

        async def commit(tx: Any) -> None:
            if self._quotas is not None:
                await self._quotas.charge(
                    tenant_id,
                    submission_id,
                    assignment.item_count,
                    tx,
                    now,
                    run=_run(valid, assignment.pool_id),
                )
            await self._store.insert(tenant_id, record, tx)
            if valid.api and request.endpoint is not None:
                # The key lives apart from the submission, which partners and logs can see:
                # sealed, in the sealed database, committed with the submission or not at all.
                await self._store.store_key(tenant_id, submission_id, request.endpoint.api_key, tx)
            await self._outbox.add(
                tx,
                [Event(event.event_id, topics.SUBMISSION_CREATED, event, key=submission_id)],
            )

        try:
            await self._transactions.run(commit)
        except DuplicateSubmission:
            found = await self._store.find(tenant_id, submission_id)
            if found is None:
                raise
            return same_request(found, valid), False
        self._changed(tenant_id, submission_id)  # a view that found nothing before the commit
        self._outbox.notify()
        metrics.created(tenant_id, request.track, request.mode)
        log.info(
            "created submission %s (pool %s, %d items)",
            submission_id,
            assignment.pool_id,
            assignment.item_count,
        )
        return record, True

    async def _check_run(self, valid: ValidCreate, pool_id: str) -> None:
        """RESOURCE_EXHAUSTED early when the run's cap on the board's current pool is spent
        (the charge in the create's transaction enforces it, on the pool assigned)."""
        if self._quotas is not None and pool_id:
            await self._quotas.check_run(
                valid.request.tenant_id, _run(valid, pool_id), datetime.now(UTC)
            )

    async def _preflight(self, valid: ValidCreate) -> None:
        """The endpoint contract starts here: no run against an endpoint that fails it. The
        dispatcher's refusal by the egress policy passes through as INVALID_ARGUMENT."""
        if self._dispatch is None:
            raise FailedPrecondition("API mode is not available: no dispatcher is configured")
        endpoint = valid.request.endpoint
        assert endpoint is not None
        checked = await self._dispatch.preflight(valid.base_url, endpoint.model, endpoint.api_key)
        if not checked.ok:
            raise FailedPrecondition(f"endpoint preflight failed: {checked.reason}")

    async def upload(
        self,
        tenant_id: str,
        submission_id: str,
        batch_id: str,
        answers: Sequence[tuple[str, str]],
        final: bool,
        checksum: str = "",
    ) -> UploadOutcome:
        """Accepts one upload message as a whole, or raises and changes nothing."""
        uploads.check_request_id("batch_id", batch_id)
        if checksum and checksum != answers_sha256(answers):
            raise InvalidArgument(
                f"answers_sha256 does not match the {len(answers)} answers of batch "
                f"{batch_id}: the batch was damaged on its way; send it again"
            )
        doc = await self._store.get(tenant_id, submission_id)
        digest = uploads.batch_digest(answers) + (":final" if final else "")
        previous = await self._store.find_upload(tenant_id, submission_id, batch_id)
        if previous is not None:
            if previous["digest"] == digest:
                return UploadOutcome(replayed=True, accepted=0, state=doc["state"])
            raise InvalidArgument(f"batch_id {batch_id!r} was already used for different answers")
        require_awaiting(doc)
        if not answers and not final:
            raise InvalidArgument("an UploadAnswers message must carry answers or final=true")
        await self._refuse_if_disclosed(doc)
        manifest = await self._rotator.manifest(doc["_id"], doc["pool_id"])
        accepted = uploads.check_batch(answers, manifest.by_id, MAX_ANSWER_BYTES) if answers else []
        now = datetime.now(UTC)

        async def commit(tx: Any) -> str:
            current = await self._store.get(tenant_id, submission_id, tx)
            plan = plan_upload(current, accepted, final, manifest.by_ordinal, now)
            await self._store.record_upload(
                tenant_id,
                {
                    "_id": f"{submission_id}:{batch_id}",
                    "submission_id": submission_id,
                    "batch_id": batch_id,
                    "digest": digest,
                    "count": len(accepted),
                    "final": final,
                    "answers": [{"item_id": a.item_id, "answer": a.answer} for a in accepted],
                    "accepted_at": now,
                },
                tx,
            )
            applied = await self._store.update(
                tenant_id,
                submission_id,
                plan.fields,
                tx,
                expect=Expect(answered=current["answered"]),
            )
            if not applied:
                raise Aborted("submission changed concurrently; retry the batch")
            await self._outbox.add(
                tx, self._responses_events(current, batch_id, plan, manifest, now)
            )
            return plan.state

        state = await self._transactions.run(commit)
        self._changed(tenant_id, submission_id)
        self._outbox.notify()
        metrics.ANSWERS_UPLOADED.labels(tenant_id).inc(len(accepted))
        expected = doc["expected"]
        count_items(
            "answered", tenant_id, doc["track"], sum(a.ordinal < expected for a in accepted)
        )
        if state == SCORING:
            await self._answers_final(doc, manifest)
        return UploadOutcome(replayed=False, accepted=len(accepted), state=state)

    async def _refuse_if_disclosed(self, doc: Record) -> None:
        """An upload to a submission whose pool maintainers disclosed (its keys are public):
        the submission is ended (FAILED, with the reason; its accepted batches stay) and the
        upload refused with FAILED_PRECONDITION. A disclosure racing the upload's commit is
        caught at publication (core.submission.publishable)."""
        disclosed_at = await self._rotator.disclosed(doc["pool_id"])
        if disclosed_at is None:
            return
        tenant_id, submission_id = doc["tenant_id"], doc["_id"]
        ended = await self._store.update(
            tenant_id,
            submission_id,
            closed_by_disclosure(doc, disclosed_at, datetime.now(UTC)),
            expect=Expect(state=AWAITING),
        )
        self._changed(tenant_id, submission_id)
        if ended:
            metrics.finished(tenant_id, FAILED)
            log.info(
                "submission %s ended: its pool %s was disclosed", submission_id, doc["pool_id"]
            )
            # Its run on the pool is given back (no score is shown), as for a failed run.
            await self._release(doc, refund_run=True)
        raise no_more_answers(doc, disclosed_at)

    async def _answers_final(self, doc: Record, manifest: uploads.Manifest) -> None:
        """Probing detection of an upload whose answers are final. Never fails the upload,
        and tells the partner nothing."""
        if self._probing is None:
            return
        try:
            await self._probing.answers_final(doc, manifest)
        except Exception:
            log.exception("probing check of submission %s failed", doc["_id"])

    async def _api_answers_final(self, doc: Record, digests: bytes) -> None:
        """Probing detection of an API-mode run whose endpoint answered every item (the
        dispatcher's digests of its answers). Never fails the run, and tells nobody but
        maintainers."""
        if self._probing is None:
            return
        try:
            manifest = await self._rotator.manifest(doc["_id"], doc["pool_id"])
            await self._probing.api_answers_final(doc, manifest, digests)
        except Exception:
            log.exception("probing check of submission %s failed", doc["_id"])

    @staticmethod
    def _responses_events(
        current: Record, batch_id: str, plan: Any, manifest: uploads.Manifest, now: datetime
    ) -> list[Event]:
        """The scored answers of an upload, and on final the items never answered (scored as
        missing), as response-recorded events."""
        hashes = manifest.prompt_hash
        events: list[Event] = []
        if plan.scored:
            responses = [
                inference_events_pb2.RecordedResponse(
                    item_id=a.item_id,
                    ordinal=a.ordinal,
                    dataset=a.dataset,
                    answer=a.answer,
                    prompt_hash=hashes.get(a.item_id, ""),
                )
                for a in plan.scored
            ]
            events.append(_responses_event(current, batch_id, now, responses))
        for k in range(0, len(plan.missing), MISSING_BATCH):
            responses = []
            for o in plan.missing[k : k + MISSING_BATCH]:
                item_id, dataset = manifest.by_ordinal[o]
                responses.append(
                    inference_events_pb2.RecordedResponse(
                        item_id=item_id,
                        ordinal=o,
                        dataset=dataset,
                        missing=True,
                        prompt_hash=hashes.get(item_id, ""),
                    )
                )
            batch = f"{batch_id}.missing-{k // MISSING_BATCH}"
            events.append(_responses_event(current, batch, now, responses))
        return events

    async def resume(self, tenant_id: str, submission_id: str) -> tuple[View, int]:
        """Sends a stalled API-mode submission's infrastructure-failed items again."""
        doc = await self._store.get(tenant_id, submission_id)
        if doc["mode"] != MODE_API or self._dispatch is None:
            raise FailedPrecondition(
                f"submission {submission_id} is an upload-mode submission: nothing is sent to "
                f"an endpoint; upload the missing answers instead"
            )
        if doc["state"] != DISPATCHING:
            raise FailedPrecondition(
                f"submission {submission_id} is {doc['state']}; only a DISPATCHING submission "
                f"can be resumed"
            )
        resumed = await self._dispatch.resume(submission_id)
        if resumed or doc.get("state_reason"):
            # The command's own effect (the dispatcher confirms it with a progress event).
            await self._store.update(
                tenant_id,
                submission_id,
                {"state_reason": "", "infra_failed": 0},
                expect=Expect(state=DISPATCHING),
            )
            self._changed(tenant_id, submission_id)
        return await self.view(tenant_id, submission_id), resumed

    async def publish(self, tenant_id: str, submission_id: str, published: bool) -> bool:
        """Opts a completed submission in to its leaderboard (or out again, always). On a
        disclosed pool, only a submission whose answers were all in before the disclosure is
        published (core.submission.publishable)."""
        doc = await self._store.get(tenant_id, submission_id)
        api = doc["mode"] == MODE_API
        if published and doc["state"] != COMPLETED:
            raise FailedPrecondition(
                f"submission {submission_id} is {doc['state']}; only a COMPLETED submission "
                f"can be published"
            )
        if published and api and doc.get("endpoint", {}).get("self_test"):
            raise FailedPrecondition(
                f"submission {submission_id} is a self-test run (declared decoding settings); "
                f"only runs under the official settings appear on the leaderboard"
            )
        if published:
            # A disclosed pool's keys are public: only answers all in before that count.
            refusal = publishable(doc, await self._rotator.disclosed(doc["pool_id"]))
            if refusal is not None:
                raise refusal
        return await self._reports.publish(
            Publication(
                submission_id=submission_id,
                tenant_id=tenant_id,
                published=published,
                track=doc["track"],
                api=api,
                cycle=await self._rotator.cycle(doc["pool_id"]) if published else "",
                model=doc["model"],
            )
        )

    # -- reads -------------------------------------------------------------------------------

    async def view(self, tenant_id: str, submission_id: str) -> View:
        """The submission with the aggregator's scored counter while it is being scored. At most
        one read of the store per view_cache_s (a burst of polls shares it; this process's own
        changes are seen at once), no write, no call to the dispatcher: its progress arrives as
        events (apply_dispatch_progress); the aggregator's scoring progress is kept for
        progress_cache_s, so a burst of reads makes at most one call per submission."""
        doc, _ = await self._views.get(
            (tenant_id, submission_id), lambda: self._store.view(tenant_id, submission_id)
        )
        return await self._view_of(doc)

    async def _view_of(self, doc: Record) -> View:
        """doc with the aggregator's scoring progress while it is being scored."""
        submission_id = str(doc["_id"])
        scored = 0
        if shows_scoring_progress(doc):
            try:
                scored, _ = await self._scored.get(
                    submission_id, lambda: self._reports.scored(submission_id)
                )
            except Unavailable as exc:
                # Progress is informative; an aggregator outage must not fail the call.
                log.warning("scoring progress of %s unavailable: %s", submission_id, exc)
        return View(doc, scored)

    async def list(self, request: ListRequest) -> tuple[Sequence[View], str]:
        """One page of the tenant's own submissions, newest first, each as view shows it, and
        the token of the next page ("" on the last). Rules: core/listing.py."""
        query = validate_list(request)
        docs = await self._store.page(query, query.page_size + 1)
        more = len(docs) > query.page_size
        docs = docs[: query.page_size]
        views = [await self._view_of(doc) for doc in docs]
        return views, page_token(docs[-1]) if more and docs else ""

    async def prompts(self, tenant_id: str, submission_id: str) -> AsyncIterator[Any]:
        """The prompts of an upload-mode submission, as the partner downloads them."""
        doc = await self._store.view(tenant_id, submission_id)
        if doc["mode"] == MODE_API:
            # The API board's prompts are only ever sent to the endpoint, never handed out.
            raise FailedPrecondition(
                "API-mode submissions are answered by the platform calling your endpoint; "
                "their prompts cannot be downloaded"
            )
        async for batch in self._rotator.download(submission_id):
            yield batch

    async def item_results(self, tenant_id: str, submission_id: str) -> AsyncIterator[Any]:
        """The owner's per-item results of a completed submission, in batches, once its pool
        is disclosed: while the pool is live they would reveal its keys (README, "What
        partners see")."""
        doc = await self._store.view(tenant_id, submission_id)
        if doc["state"] != COMPLETED:
            raise FailedPrecondition(
                f"submission {submission_id} is {doc['state']}; item results exist once it is "
                f"COMPLETED"
            )
        if not await self._rotator.disclosed(doc["pool_id"]):
            raise FailedPrecondition(
                f"per-item results of submission {submission_id} are withheld: its pool "
                f"{doc['pool_id']} is a live hidden pool, and per-item scores would reveal its "
                f"answer keys. They are released when the maintainers disclose the pool, after "
                f"it has been rotated out; the report (GetReport) has its per-dataset and "
                f"per-dimension scores with their intervals now"
            )
        async for batch in self._reports.item_results(submission_id, tenant_id):
            yield batch

    async def report(self, tenant_id: str, submission_id: str) -> Any:
        doc = await self._store.view(tenant_id, submission_id)
        if doc["state"] != COMPLETED:
            raise FailedPrecondition(
                f"submission {submission_id} is {doc['state']}; its report exists once it is "
                f"COMPLETED"
            )
        # A live pool's report is its live view (README, "What partners see"): exact numbers
        # would let a partner difference the keys out; the exact report once it is disclosed.
        disclosed_at = await self._rotator.disclosed(doc["pool_id"]) if doc.get("pool_id") else None
        report = await self._reports.report(
            submission_id, tenant_id, exact=disclosed_at is not None
        )
        # What was evaluated, and how: the gateway holds the submission's side of the lineage.
        model = doc["model"]
        report.lineage.model = " ".join(p for p in (model["name"], model.get("version", "")) if p)
        if "endpoint" in doc:
            d = doc["decoding"]
            report.lineage.endpoint_model = doc["endpoint"]["model"]
            report.lineage.decoding = (
                f"temperature={d['temperature']:g} max_tokens={d['max_tokens']} "
                f"context={d['context_window']}"
                + (f" top_p={d['top_p']:g}" if d.get("top_p") is not None else "")
            )
        return report

    # -- what the other services report ------------------------------------------------------

    async def apply_dispatch_progress(self, progress: DispatchProgress) -> None:
        """Applies the dispatcher's progress to an API-mode submission (idempotent, never
        backwards: see core.submission.dispatch_fields)."""
        doc = await self._store.find(progress.tenant_id, progress.submission_id)
        if doc is None:
            log.error("dispatch progress for unknown submission %s", progress.submission_id)
            return
        fields = dispatch_fields(doc, progress, datetime.now(UTC))
        if fields is not None:  # else a redelivered or late event
            await self._apply_dispatch(doc, progress, fields)
        if progress.state == DISPATCH_DONE and progress.answer_digests:
            # Whatever the submission's state: its report may be stored before this event
            # arrives (another topic). Idempotent, so a redelivery only compares again.
            await self._api_answers_final(doc, progress.answer_digests)

    async def _apply_dispatch(
        self, doc: Record, progress: DispatchProgress, fields: Record
    ) -> None:
        applied = await self._store.apply_dispatch(
            progress.tenant_id, progress.submission_id, fields, doc["state"]
        )
        self._changed(progress.tenant_id, progress.submission_id)
        if applied and fields.get("state") == FAILED:
            metrics.finished(progress.tenant_id, FAILED)
            # Items the endpoint never answered for infrastructure reasons are not charged, nor
            # is the run on its pool (no score is shown).
            await self._release(doc, refund_items=progress.infra_failed, refund_run=True)
            # The run is over: its endpoint key is not kept (the dispatcher deletes it too).
            await self._store.forget_key(progress.submission_id)

    async def complete(self, tenant_id: str, submission_id: str, scored: int, at: datetime) -> None:
        """Applies submission.completed (idempotent)."""
        doc = await self._store.find(tenant_id, submission_id)
        if doc is None:
            log.error("completion for unknown submission %s", submission_id)
            return
        api = doc["mode"] == MODE_API
        if doc["state"] in TERMINAL:
            if api:
                await self._store.forget_key(submission_id)  # a redelivery after a crash
            return
        completed = await self._store.update(
            tenant_id,
            submission_id,
            completion_fields(doc, scored, at),
            expect=Expect(state_not_in=tuple(sorted(TERMINAL))),
        )
        self._changed(tenant_id, submission_id)
        if completed:
            metrics.finished(tenant_id, COMPLETED)
            metrics.reported(doc, at)
        await self._release(doc)
        if api:
            # Every item is answered and scored: the endpoint key is not needed any more.
            await self._store.forget_key(submission_id)

    async def _release(self, doc: Record, refund_items: int = 0, refund_run: bool = False) -> None:
        """Frees the concurrent slot of a submission that became terminal."""
        if self._quotas is not None:
            await self._quotas.release(
                doc["tenant_id"],
                doc["_id"],
                doc["created_at"],
                refund_items=refund_items,
                run=_run_of(doc),
                refund_run=refund_run,
            )


def _run(valid: ValidCreate, pool_id: str) -> PoolRun:
    """What a create is charged on its pool (core.quotas.PoolRun)."""
    endpoint = valid.request.endpoint
    return pool_run(pool_id, valid.api, endpoint is not None and endpoint.self_test)


def _run_of(doc: Record) -> PoolRun:
    return pool_run(
        doc["pool_id"], doc["mode"] == MODE_API, bool(doc.get("endpoint", {}).get("self_test"))
    )


def _responses_event(
    doc: Record,
    batch_id: str,
    now: datetime,
    responses: list[inference_events_pb2.RecordedResponse],
) -> Event:
    event = inference_events_pb2.ResponsesRecorded(
        event_id=f"{doc['_id']}:{batch_id}",
        submission_id=doc["_id"],
        tenant_id=doc["tenant_id"],
        pool_id=doc["pool_id"],
        batch_id=batch_id,
        expected_items=doc["expected"],
        responses=responses,
        mode=doc["mode"],
        track=doc["track"],
        recorded_at=timestamp(now),
    )
    return Event(event.event_id, topics.RESPONSE_RECORDED, event, key=doc["_id"])


__all__ = ["AWAITING", "Submissions", "UploadOutcome", "View", "submission_to_proto"]
