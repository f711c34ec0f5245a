"""Protobuf <-> the dispatcher's own types: the one place both worlds meet."""

from __future__ import annotations

from dispatcher.core.jobs import JobSpec
from dispatcher.core.policy import DecodingSettings
from dispatcher.usecases.jobs import DispatchStatus
from dispatcher.usecases.preflight import Preflight
from medbench.common.v1 import common_pb2
from medbench.dispatch.v1 import dispatch_service_pb2
from medbench.submission.v1 import submission_events_pb2


def job_from_created(event: submission_events_pb2.SubmissionCreated) -> JobSpec | None:
    """The dispatch job of a created API-mode submission (None for an upload-mode one)."""
    sub = event.submission
    if sub.mode != common_pb2.SUBMISSION_MODE_API:
        return None
    d = sub.decoding
    return JobSpec(
        submission_id=sub.submission_id,
        tenant_id=sub.tenant_id,
        pool_id=sub.pool_id,
        track=sub.track,
        expected=sub.progress.expected_items,
        base_url=sub.endpoint.base_url,
        model=sub.endpoint.model,
        max_concurrency=sub.endpoint.max_concurrency,
        decoding=DecodingSettings(
            d.temperature,
            d.max_tokens,
            d.context_window,
            d.top_p if d.HasField("top_p") else None,
        ),
        self_test=sub.endpoint.self_test,
    )


def status_to_proto(status: DispatchStatus) -> dispatch_service_pb2.GetDispatchResponse:
    return dispatch_service_pb2.GetDispatchResponse(
        state=status.state,
        reason=status.reason,
        answered_items=status.answered,
        infra_failed_items=status.infra_failed,
        calls=status.calls,
        concurrency=status.concurrency,
    )


def preflight_to_proto(checked: Preflight) -> dispatch_service_pb2.PreflightResponse:
    if not checked.ok:
        return dispatch_service_pb2.PreflightResponse(ok=False, reason=checked.reason)
    return dispatch_service_pb2.PreflightResponse(ok=True, latency_ms=checked.latency_ms)
