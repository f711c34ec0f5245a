"""Protobuf <-> the gateway's own types: the one place both worlds meet (the events the
gateway publishes are built by its use cases)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from gateway.core.endpoints import Decoding
from gateway.core.images import ImagesRequest
from gateway.core.listing import ListRequest
from gateway.core.probing import Finding
from gateway.core.quotas import Quotas, UsageNow
from gateway.core.submission import (
    CreateRequest,
    DispatchProgress,
    EndpointRequest,
    ModelInfo,
    Record,
)
from gateway.usecases.images import ImageBytes, ImageHeader
from gateway.usecases.submissions import View, submission_to_proto
from medbench.dispatch.v1 import dispatch_events_pb2
from medbench.identity.v1 import identity_pb2
from medbench.ops.v1 import probing_service_pb2, quarantine_service_pb2
from medbench.submission.v1 import submission_pb2, submission_service_pb2
from medbench.taskpool.v1 import taskpool_service_pb2
from medbench_runtime.errors import InvalidArgument
from medbench_runtime.timestamps import from_timestamp, timestamp, utc

# -- submissions ------------------------------------------------------------------------------


def create_request(
    tenant_id: str, request: submission_service_pb2.CreateSubmissionRequest
) -> CreateRequest:
    m = request.model
    endpoint = None
    if request.HasField("endpoint"):
        e = request.endpoint
        declared = None
        if e.HasField("declared"):
            d = e.declared
            declared = Decoding(
                d.temperature,
                d.max_tokens,
                d.context_window,
                d.top_p if d.HasField("top_p") else None,
            )
        endpoint = EndpointRequest(
            base_url=e.base_url,
            model=e.model,
            max_concurrency=e.max_concurrency,
            api_key=e.api_key,
            self_test=e.self_test,
            declared=declared,
        )
    return CreateRequest(
        tenant_id=tenant_id,
        request_id=request.request_id,
        model=ModelInfo(
            name=m.name,
            version=m.version,
            organisation=m.organisation,
            open_source=m.open_source,
            parameter_count=m.parameter_count,
            release_date=m.release_date,
        ),
        track=request.track,
        mode=request.mode,
        endpoint=endpoint,
    )


def _state_name(value: int) -> str:
    """A SubmissionState as the core names it; an unknown number as itself (refused there)."""
    try:
        return str(submission_pb2.SubmissionState.Name(value)).removeprefix("SUBMISSION_STATE_")
    except ValueError:
        return str(value)


def list_request(
    tenant_id: str, request: submission_service_pb2.ListSubmissionsRequest
) -> ListRequest:
    return ListRequest(
        tenant_id=tenant_id,
        page_size=request.page_size,
        page_token=request.page_token,
        states=tuple(_state_name(s) for s in request.states),
        track=request.track,
        mode=request.mode,
        created_after=_time(request, "created_after"),
        created_before=_time(request, "created_before"),
    )


def _time(message: Any, name: str) -> datetime | None:
    """The time stamp field name of message (None when unset); INVALID_ARGUMENT out of range."""
    if not message.HasField(name):
        return None
    try:
        return from_timestamp(getattr(message, name))
    except (ValueError, OverflowError, OSError):
        raise InvalidArgument(f"{name} is not a valid time") from None


def view_to_proto(view: View) -> submission_pb2.Submission:
    return submission_to_proto(view.record, view.scored)


def record_to_proto(record: Record) -> submission_pb2.Submission:
    return submission_to_proto(record)


def prompts_to_proto(
    batch: taskpool_service_pb2.GetPromptsResponse,
) -> submission_service_pb2.DownloadPromptsResponse:
    return submission_service_pb2.DownloadPromptsResponse(
        prompts=[
            submission_pb2.Prompt(
                item_id=i.item_id,
                dataset=i.dataset,
                question=i.question,
                image_paths=i.image_paths,
                answer_format=i.answer_format,
                messages=[
                    submission_pb2.ChatMessage(role=m.role, content=m.content) for m in i.messages
                ],
            )
            for i in batch.items
        ]
    )


def images_request(request: submission_service_pb2.DownloadImagesRequest) -> ImagesRequest:
    return ImagesRequest(
        image_ids=tuple(request.image_ids),
        offset=request.offset,
        held_image_ids=tuple(request.held_image_ids),
        info_only=request.info_only,
    )


def image_part_to_proto(
    part: ImageHeader | ImageBytes,
) -> submission_service_pb2.DownloadImagesResponse:
    if isinstance(part, ImageBytes):
        return submission_service_pb2.DownloadImagesResponse(
            chunk=submission_service_pb2.ImageChunk(offset=part.offset, data=part.data)
        )
    return submission_service_pb2.DownloadImagesResponse(
        image=submission_service_pb2.ImageInfo(
            image_id=part.image_id,
            size=part.size,
            sha256=part.image_id,  # content-addressed: the id is the sha256 of the bytes
            media_type=part.media_type,
            uses=[
                submission_service_pb2.ImageUse(item_id=u.item_id, path=u.path) for u in part.uses
            ],
            offset=part.offset,
        )
    )


def dispatch_progress(event: dispatch_events_pb2.DispatchProgressed) -> DispatchProgress:
    return DispatchProgress(
        submission_id=event.submission_id,
        tenant_id=event.tenant_id,
        state=event.state,
        reason=event.reason,
        answered=event.answered_items,
        infra_failed=event.infra_failed_items,
        sequence=event.sequence,
        answer_digests=event.answer_digests,
    )


def completed_at(ts: Any) -> datetime:
    return from_timestamp(ts)


# -- identity ---------------------------------------------------------------------------------


def key_to_proto(doc: Record) -> identity_pb2.ApiKey:
    return identity_pb2.ApiKey(
        key_id=doc["_id"],
        tenant_id=doc["tenant_id"],
        role=doc["role"],
        name=doc.get("name", ""),
        created_at=timestamp(doc.get("created_at")),
        expires_at=timestamp(doc.get("expires_at")),
        revoked_at=timestamp(doc.get("revoked_at")),
        created_by=doc.get("created_by", ""),
    )


def quotas_to_proto(q: Quotas) -> identity_pb2.Quotas:
    return identity_pb2.Quotas(
        submissions_per_day=q.submissions_per_day,
        concurrent_submissions=q.concurrent_submissions,
        items_per_month=q.items_per_month,
        official_per_cycle=q.official_per_cycle,
        hidden_per_day=q.hidden_per_day,
        hidden_per_cycle=q.hidden_per_cycle,
    )


def tenant_to_proto(doc: Record, quotas: Quotas) -> identity_pb2.Tenant:
    return identity_pb2.Tenant(
        tenant_id=doc["_id"],
        display_name=doc.get("display_name", ""),
        quotas=quotas_to_proto(quotas),
        disabled=doc.get("disabled", False),
        certificate_subjects=doc.get("certificate_subjects", []),
        created_at=timestamp(doc.get("created_at")),
    )


def usage_to_proto(tenant_id: str, usage: UsageNow) -> identity_pb2.Usage:
    return identity_pb2.Usage(
        tenant_id=tenant_id,
        quotas=quotas_to_proto(usage.quotas),
        submissions_today=usage.submissions_today,
        active_submissions=usage.active_submissions,
        items_this_month=usage.items_this_month,
        pools=[
            identity_pb2.PoolUsage(
                pool_id=p.pool.pool_id,
                track=p.pool.track,  # type: ignore[arg-type]
                board="api" if p.pool.api else "upload",
                official_runs=p.official_runs,
                hidden_runs_today=p.hidden_runs_today,
                hidden_runs=p.hidden_runs,
            )
            for p in usage.pools
        ],
    )


def audit_event_to_proto(d: Record) -> identity_pb2.AuditEvent:
    return identity_pb2.AuditEvent(
        event_id=str(d["_id"]),
        at=timestamp(d["at"]),
        service=d.get("service", ""),
        method=d.get("method", ""),
        key_id=d.get("key_id", ""),
        tenant_id=d.get("tenant_id", ""),
        role=d.get("role", 0),
        peer=d.get("peer", ""),
        code=d.get("code", ""),
        target=d.get("target", ""),
    )


def audit_token(doc: Record) -> str:
    return f"{round(utc(doc['at']).timestamp() * 1000)}.{doc['_id']}"


def audit_cursor(token: str) -> tuple[datetime, ObjectId]:
    """The (time, id) a page token names; INVALID_ARGUMENT for anything this API did not
    return."""
    millis, _, oid = token.partition(".")
    try:
        at = datetime.fromtimestamp(int(millis) / 1000, tz=UTC)
        return at, ObjectId(oid)
    except (InvalidId, TypeError, ValueError, OverflowError, OSError):
        raise InvalidArgument("page_token is not one this API returned") from None


# -- operations -------------------------------------------------------------------------------


def entry_to_proto(doc: Record) -> quarantine_service_pb2.QuarantinedEvent:
    return quarantine_service_pb2.QuarantinedEvent(
        entry_id=doc["_id"],
        service=doc.get("service", ""),
        source=doc.get("source", ""),
        origin=doc.get("origin", ""),
        topic=doc.get("topic", ""),
        key=doc.get("key", ""),
        reason=doc.get("reason", ""),
        size=doc.get("size", 0),
        status=doc.get("status", ""),
        times=doc.get("times", 0),
        first_at=timestamp(doc.get("first_at")),
        last_at=timestamp(doc.get("last_at")),
        resolved_by=doc.get("resolved_by", ""),
        resolved_at=timestamp(doc.get("resolved_at")),
    )


def finding_to_proto(f: Finding) -> probing_service_pb2.ProbingFinding:
    return probing_service_pb2.ProbingFinding(
        finding_id=f.finding_id,
        tenant_id=f.tenant_id,
        pool_id=f.pool_id,
        track=f.track,  # type: ignore[arg-type]
        earlier_submission_id=f.earlier_submission_id,
        later_submission_id=f.later_submission_id,
        differing=f.differing,
        items=f.items,
        threshold=f.threshold,
        datasets=[
            probing_service_pb2.DatasetDifference(
                dataset=d.dataset, differing=d.differing, items=d.items
            )
            for d in f.datasets
        ],
        found_at=timestamp(f.found_at),
    )
