"""Protobuf -> core for the metric scorer: the one place both worlds meet on the way in."""

from __future__ import annotations

from medbench.inference.v1 import inference_events_pb2
from metric_scorer.core.batch import Response, ResponseBatch


def batch_from_proto(event: inference_events_pb2.ResponsesRecorded) -> ResponseBatch:
    """The responses of a ResponsesRecorded event, with what scoring needs of its envelope."""
    return ResponseBatch(
        submission_id=event.submission_id,
        tenant_id=event.tenant_id,
        pool_id=event.pool_id,
        batch_id=event.batch_id,
        expected_items=event.expected_items,
        responses=tuple(
            Response(r.item_id, r.ordinal, r.answer, r.missing, r.prompt_hash)
            for r in event.responses
        ),
        self_test=event.self_test,
        track=event.track,
    )
