"""The submission use cases (create, upload, finalise, complete) over store, peers and outbox."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson.binary import Binary
from google.protobuf.timestamp_pb2 import Timestamp
from pymongo.errors import DuplicateKeyError

from gateway import metrics
from gateway.adapters.mongo_submissions import MongoSubmissions
from gateway.adapters.peers import DispatchClient, Manifest, ReportClient, RotatorClient
from gateway.core import uploads
from gateway.core.endpoints import Decoding, check_endpoint, effective_decoding
from gateway.quotas import QuotaLedger
from medbench.common.v1 import common_pb2
from medbench.inference.v1 import inference_events_pb2
from medbench.leaderboard.v1 import leaderboard_service_pb2
from medbench.submission.v1 import submission_events_pb2, submission_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_messaging import topics
from medbench_messaging.publisher import Outgoing
from medbench_runtime.checksums import answers_sha256
from medbench_runtime.egress import EgressPolicy
from medbench_runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
)
from medbench_runtime.metrics import count_items
from medbench_runtime.timestamps import timestamp
from medbench_storage.client import in_transaction
from medbench_storage.infra import Infrastructure

log = logging.getLogger(__name__)

AWAITING = "AWAITING_ANSWERS"
DISPATCHING = "DISPATCHING"
SCORING = "SCORING"
COMPLETED = "COMPLETED"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
MISSING_BATCH = 5000


@dataclass(frozen=True)
class UploadOutcome:
    """What one upload message did."""

    replayed: bool
    accepted: int
    state: str


def submission_to_proto(
    doc: dict[str, Any], scored: int = 0, partner_view: bool = True
) -> submission_pb2.Submission:
    """The partner-facing view of a stored submission (no bitmap, no answers). Without
    partner_view (the submission-created event) expected_items is the pool's item count, the
    number of items to answer and score."""
    m = doc["model"]
    shown = doc["expected"]
    if partner_view and doc["mode"] == common_pb2.SUBMISSION_MODE_UPLOAD:
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
        # Counters count what the partner was shown, canaries included, so that no counter
        # tells a canary from a scored item (see Submissions.upload).
        progress=submission_pb2.Progress(
            expected_items=shown,
            answered_items=doc.get("answered_shown", doc["answered"]),
            scored_items=max(scored, doc.get("scored", 0)),
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
        infra: Infrastructure,
        store: MongoSubmissions,
        rotator: RotatorClient,
        reports: ReportClient,
        dispatch: DispatchClient | None = None,
        quotas: QuotaLedger | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        """egress: the partner endpoint policy's static part (None: the production default)."""
        self._infra = infra
        self._egress = egress or EgressPolicy()
        self._quotas = quotas
        self._store = store
        self._rotator = rotator
        self._reports = reports
        self._dispatch = dispatch

    async def create(
        self,
        tenant_id: str,
        request_id: str,
        model: submission_pb2.ModelInfo,
        track: int,
        mode: int,
        endpoint: submission_pb2.Endpoint | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Creates (or finds) the submission for (tenant, request_id)."""
        uploads.check_request_id("request_id", request_id)
        # Names are stored and shown as normalised (NFKC); a retry compares the normalised form.
        model = uploads.shown_model(model)
        uploads.check_date("model.release_date", model.release_date)
        if track == common_pb2.TRACK_UNSPECIFIED or track not in common_pb2.Track.values():
            raise InvalidArgument("track must be one of TRACK_LLM, TRACK_MULTIMODAL, TRACK_AGENT")
        api = mode == common_pb2.SUBMISSION_MODE_API
        if not api and mode != common_pb2.SUBMISSION_MODE_UPLOAD:
            raise InvalidArgument("mode must be SUBMISSION_MODE_UPLOAD or SUBMISSION_MODE_API")
        has_endpoint = endpoint is not None and endpoint.base_url != ""
        if api != has_endpoint:
            raise InvalidArgument(
                "an endpoint is required in API mode and not allowed in upload mode"
            )
        decoding = None
        base_url = ""
        if api:
            assert endpoint is not None
            # The URL form, its port and an address literal are refused here, before any call.
            base_url = check_endpoint(
                endpoint.base_url,
                endpoint.model,
                endpoint.max_concurrency,
                endpoint.api_key,
                self._egress,
            )
            declared = None
            if endpoint.HasField("declared"):
                d = endpoint.declared
                declared = Decoding(
                    d.temperature,
                    d.max_tokens,
                    d.context_window,
                    d.top_p if d.HasField("top_p") else None,
                )
            decoding = effective_decoding(declared, endpoint.self_test)
        submission_id = uploads.submission_id_for(tenant_id, request_id)
        existing = await self._store.find(tenant_id, submission_id)
        if existing is not None:
            return self._same_request(existing, model, track, mode), False
        if self._quotas is not None:
            await self._quotas.check_active(tenant_id)
        if api:
            assert endpoint is not None
            # Everything else that can refuse the request is asked before the endpoint is
            # called: a board without a pool, then the preflight (the first byte it gets).
            await self._rotator.require_pool(track, api=True)
            await self._preflight(base_url, endpoint)
        assignment = await self._rotator.assign(submission_id, tenant_id, track, api=api)
        now = datetime.now(UTC)
        doc = {
            "_id": submission_id,
            "tenant_id": tenant_id,
            "request_id": request_id,
            "model": {
                "name": model.name,
                "version": model.version,
                "organisation": model.organisation,
                "open_source": model.open_source,
                "parameter_count": model.parameter_count,
                "release_date": model.release_date,
            },
            "track": track,
            "mode": mode,
            "state": DISPATCHING if api else AWAITING,
            "state_reason": "",
            "pool_id": assignment.pool_id,
            "expected": assignment.item_count,
            "canaries": assignment.canary_items,
            "answered": 0,
            "answered_shown": 0,
            "answered_bits": Binary(
                bytes(uploads.new_bitmap(assignment.item_count + assignment.canary_items))
            ),
            "created_at": now,
            "updated_at": now,
        }
        if api:
            assert endpoint is not None and decoding is not None
            doc["endpoint"] = {
                "base_url": base_url,
                "model": endpoint.model,
                "max_concurrency": endpoint.max_concurrency,
                "self_test": endpoint.self_test,
            }
            doc["decoding"] = {
                "temperature": decoding.temperature,
                "max_tokens": decoding.max_tokens,
                "context_window": decoding.context_window,
                "top_p": decoding.top_p,
            }
        event = submission_events_pb2.SubmissionCreated(
            event_id=f"{submission_id}:created",
            submission=submission_to_proto(doc, partner_view=False),
        )

        async def commit(session: Any) -> None:
            if self._quotas is not None:
                await self._quotas.charge(
                    tenant_id, submission_id, assignment.item_count, session, now
                )
            await self._store.insert(tenant_id, doc, session)
            if api:
                assert endpoint is not None
                # The key lives apart from the submission, which partners and logs can see:
                # sealed, in the sealed database, committed with the submission or not at all.
                await self._store.store_key(tenant_id, submission_id, endpoint.api_key, session)
            await self._infra.outbox.add(
                session,
                [(event.event_id, Outgoing(topics.SUBMISSION_CREATED, event, key=submission_id))],
            )

        try:
            await in_transaction(self._infra.client, commit)
        except DuplicateKeyError:
            found = await self._store.find(tenant_id, submission_id)
            if found is None:
                raise
            return self._same_request(found, model, track, mode), False
        self._infra.relay.notify()
        metrics.created(tenant_id, track, mode)
        log.info(
            "created submission %s (pool %s, %d items)",
            submission_id,
            assignment.pool_id,
            assignment.item_count,
        )
        return doc, True

    async def _preflight(self, base_url: str, endpoint: submission_pb2.Endpoint) -> None:
        """The endpoint contract starts here: no run against an endpoint that fails it. The
        dispatcher's refusal by the egress policy passes through as INVALID_ARGUMENT."""
        if self._dispatch is None:
            raise FailedPrecondition("API mode is not available: no dispatcher is configured")
        checked = await self._dispatch.preflight(base_url, endpoint.model, endpoint.api_key)
        if not checked.ok:
            raise FailedPrecondition(f"endpoint preflight failed: {checked.reason}")

    @staticmethod
    def _same_request(
        doc: dict[str, Any], model: submission_pb2.ModelInfo, track: int, mode: int
    ) -> dict[str, Any]:
        """A retried create must ask for the same thing; a reused request_id must not."""
        if (doc["model"]["name"], doc["track"], doc["mode"]) != (model.name, track, mode):
            raise AlreadyExists(
                f"request_id {doc['request_id']!r} was already used for submission "
                f"{doc['_id']} with a different model, track or mode"
            )
        return doc

    async def manifest(self, doc: dict[str, Any]) -> Manifest:
        return await self._rotator.manifest(doc["_id"], doc["pool_id"])

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
        if doc["state"] != AWAITING:
            raise FailedPrecondition(
                f"submission {submission_id} is {doc['state']}; answers are accepted only while "
                f"it is {AWAITING}"
            )
        if not answers and not final:
            raise InvalidArgument("an UploadAnswers message must carry answers or final=true")
        manifest = await self.manifest(doc)
        accepted = uploads.check_batch(answers, manifest.by_id) if answers else []
        ordinals = [a.ordinal for a in accepted]
        now = datetime.now(UTC)
        ts = timestamp(now)

        async def commit(session: Any) -> str:
            current = await self._store.get(tenant_id, submission_id, session=session)
            if current["state"] != AWAITING:
                raise FailedPrecondition(
                    f"submission {submission_id} is {current['state']}; answers are accepted "
                    f"only while it is {AWAITING}"
                )
            bits = bytearray(current["answered_bits"])
            twice = uploads.already_set(bits, ordinals)
            if twice:
                names = ", ".join(repr(manifest.by_ordinal[o][0]) for o in twice[:5])
                raise InvalidArgument(f"items already answered in an earlier batch: {names}")
            uploads.set_bits(bits, ordinals)
            expected = current["expected"]
            # Canary answers are kept with the batch but neither counted nor scored.
            scored = [a for a in accepted if a.ordinal < expected]
            answered = current["answered"] + len(scored)
            # Canaries count as answered items and the upload ends only when every shown item
            # is in (or on final): otherwise the counters or the state would point them out.
            shown = current.get("answered_shown", current["answered"]) + len(accepted)
            state = (
                SCORING if (shown >= expected + current.get("canaries", 0) or final) else AWAITING
            )
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
                session,
            )
            ok = await self._store.update(
                tenant_id,
                submission_id,
                {
                    "answered_bits": Binary(bytes(bits)),
                    "answered": answered,
                    "answered_shown": shown,
                    "state": state,
                },
                session=session,
                expect={"answered": current["answered"]},
            )
            if not ok:
                raise Aborted("submission changed concurrently; retry the batch")
            events: list[tuple[str, Outgoing]] = []
            if scored:
                events.append(
                    self._responses_event(
                        current,
                        batch_id,
                        expected,
                        ts,
                        [
                            inference_events_pb2.RecordedResponse(
                                item_id=a.item_id,
                                ordinal=a.ordinal,
                                dataset=a.dataset,
                                answer=a.answer,
                                prompt_hash=manifest.prompt_hash.get(a.item_id, ""),
                            )
                            for a in scored
                        ],
                    )
                )
            if final:
                missing = uploads.unset_ordinals(bits, expected)
                for k in range(0, len(missing), MISSING_BATCH):
                    events.append(
                        self._responses_event(
                            current,
                            f"{batch_id}.missing-{k // MISSING_BATCH}",
                            expected,
                            ts,
                            [
                                inference_events_pb2.RecordedResponse(
                                    item_id=manifest.by_ordinal[o][0],
                                    ordinal=o,
                                    dataset=manifest.by_ordinal[o][1],
                                    missing=True,
                                    prompt_hash=manifest.prompt_hash.get(
                                        manifest.by_ordinal[o][0], ""
                                    ),
                                )
                                for o in missing[k : k + MISSING_BATCH]
                            ],
                        )
                    )
            await self._infra.outbox.add(session, events)
            return state

        state = await in_transaction(self._infra.client, commit)
        self._infra.relay.notify()
        metrics.ANSWERS_UPLOADED.labels(tenant_id).inc(len(accepted))
        expected = doc["expected"]
        count_items(
            "answered", tenant_id, doc["track"], sum(a.ordinal < expected for a in accepted)
        )
        return UploadOutcome(replayed=False, accepted=len(accepted), state=state)

    @staticmethod
    def _responses_event(
        doc: dict[str, Any],
        batch_id: str,
        expected: int,
        ts: Timestamp | None,
        responses: list[inference_events_pb2.RecordedResponse],
    ) -> tuple[str, Outgoing]:
        event = inference_events_pb2.ResponsesRecorded(
            event_id=f"{doc['_id']}:{batch_id}",
            submission_id=doc["_id"],
            tenant_id=doc["tenant_id"],
            pool_id=doc["pool_id"],
            batch_id=batch_id,
            expected_items=expected,
            responses=responses,
            mode=doc["mode"],
            track=doc["track"],
            recorded_at=ts,
        )
        return event.event_id, Outgoing(topics.RESPONSE_RECORDED, event, key=doc["_id"])

    async def view(self, tenant_id: str, submission_id: str) -> submission_pb2.Submission:
        """The submission with the aggregator's scored counter while it is being scored."""
        doc = await self._store.get(tenant_id, submission_id)
        infra_failed = 0
        if doc["state"] == DISPATCHING and self._dispatch is not None:
            doc, infra_failed = await self._follow_dispatch(doc)
        scored = 0
        # Not while answers are still coming: scoring progress per uploaded batch would tell
        # which answers are scored (and so which items are canaries).
        if doc["state"] in (SCORING, DISPATCHING):
            try:
                scored = (await self._reports.progress(submission_id)).scored_items
            except Unavailable as exc:
                # Progress is informative; an aggregator outage must not fail the call.
                log.warning("scoring progress of %s unavailable: %s", submission_id, exc)
        view = submission_to_proto(doc, scored)
        view.progress.infra_failed_items = infra_failed
        return view

    async def _follow_dispatch(self, doc: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Applies the dispatcher's outcome to an API-mode submission."""
        assert self._dispatch is not None
        try:
            status = await self._dispatch.status(doc["_id"])
        except Unavailable as exc:
            log.warning("dispatch progress of %s unavailable: %s", doc["_id"], exc)
            return doc, 0
        fields: dict[str, Any] = {
            "answered": status.answered_items,
            "answered_shown": status.answered_items,
        }
        if status.state == "FAILED":
            fields |= {
                "state": "FAILED",
                "state_reason": status.reason,
                "completed_at": datetime.now(UTC),
            }
        elif status.state == "DONE":
            fields["state"] = SCORING
        elif status.state == "STALLED":
            fields["state_reason"] = status.reason
        # A read must not write: only a change of state, reason or count is stored.
        if any(doc.get(k) != v for k, v in fields.items() if k != "completed_at"):
            changed = await self._store.update(
                doc["tenant_id"], doc["_id"], fields, expect={"state": DISPATCHING}
            )
            if changed and fields.get("state") == "FAILED":
                metrics.finished(doc["tenant_id"], "FAILED")
                # Items the endpoint never answered for infrastructure reasons are not charged.
                await self._release(doc, refund_items=status.infra_failed_items)
                # The run is over: its endpoint key is not kept (the dispatcher deletes it too).
                await self._store.forget_key(doc["_id"])
        return {**doc, **fields}, status.infra_failed_items

    async def resume(self, tenant_id: str, submission_id: str) -> tuple[Any, int]:
        """Sends a stalled API-mode submission's infrastructure-failed items again."""
        doc = await self._store.get(tenant_id, submission_id)
        if doc["mode"] != common_pb2.SUBMISSION_MODE_API or self._dispatch is None:
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
        if doc.get("state_reason"):
            await self._store.update(
                tenant_id, submission_id, {"state_reason": ""}, expect={"state": DISPATCHING}
            )
        return await self.view(tenant_id, submission_id), resumed

    async def publish(self, tenant_id: str, submission_id: str, published: bool) -> bool:
        """Opts a completed submission in to its leaderboard (or out again)."""
        doc = await self._store.get(tenant_id, submission_id)
        api = doc["mode"] == common_pb2.SUBMISSION_MODE_API
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
        model = doc["model"]
        request = leaderboard_service_pb2.PublishEntryRequest(
            submission_id=submission_id,
            tenant_id=tenant_id,
            published=published,
            track=doc["track"],
            board=taskpool_pb2.BOARD_API if api else taskpool_pb2.BOARD_UPLOAD,
            cycle=await self._rotator.cycle(doc["pool_id"]) if published else "",
            model_name=model["name"],
            model_version=model.get("version", ""),
            organisation=model.get("organisation", ""),
            open_source=model.get("open_source", False),
            parameter_count=model.get("parameter_count", ""),
            release_date=model.get("release_date", ""),
        )
        return await self._reports.publish(request)

    async def item_results(self, tenant_id: str, submission_id: str) -> AsyncIterator[Any]:
        """The owner's per-item results of a completed submission, in batches."""
        doc = await self._store.get(tenant_id, submission_id)
        if doc["state"] != COMPLETED:
            raise FailedPrecondition(
                f"submission {submission_id} is {doc['state']}; item results exist once it is "
                f"COMPLETED"
            )
        async for batch in self._reports.item_results(submission_id, tenant_id):
            yield batch

    async def report(self, tenant_id: str, submission_id: str) -> Any:
        doc = await self._store.get(tenant_id, submission_id)
        if doc["state"] != COMPLETED:
            raise FailedPrecondition(
                f"submission {submission_id} is {doc['state']}; its report exists once it is "
                f"COMPLETED"
            )
        report = await self._reports.report(submission_id, tenant_id)
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

    async def complete(self, event: submission_events_pb2.SubmissionCompleted) -> None:
        """Applies submission.completed (idempotent)."""
        doc = await self._store.find(event.tenant_id, event.submission_id)
        if doc is None:
            log.error("completion for unknown submission %s", event.submission_id)
            return
        api = doc["mode"] == common_pb2.SUBMISSION_MODE_API
        if doc["state"] in TERMINAL:
            if api:
                await self._store.forget_key(event.submission_id)  # a redelivery after a crash
            return
        fields: dict[str, Any] = {
            "state": COMPLETED,
            "scored": event.scored_items,
            "completed_at": event.completed_at.ToDatetime(tzinfo=UTC),
        }
        if api:
            # The dispatcher's counts reach this record only when a read follows the dispatch;
            # scoring can finish before one did. Completed means every item was answered and
            # scored (an item that failed for infrastructure reasons holds the run back).
            fields |= {"answered": event.scored_items, "answered_shown": event.scored_items}
        completed = await self._store.update(
            event.tenant_id,
            event.submission_id,
            fields,
            expect={"state": {"$nin": sorted(TERMINAL)}},
        )
        if completed:
            metrics.finished(event.tenant_id, COMPLETED)
        await self._release(doc)
        if api:
            # Every item is answered and scored: the endpoint key is not needed any more.
            await self._store.forget_key(event.submission_id)

    async def _release(self, doc: dict[str, Any], refund_items: int = 0) -> None:
        """Frees the concurrent slot of a submission that became terminal."""
        if self._quotas is not None:
            await self._quotas.release(
                doc["tenant_id"], doc["_id"], doc["created_at"], refund_items=refund_items
            )
