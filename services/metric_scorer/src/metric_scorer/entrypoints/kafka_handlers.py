"""Kafka handlers of the metric scorer."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from medbench.inference.v1 import inference_events_pb2
from medbench.scoring.v1 import scoring_events_pb2
from medbench_messaging import topics
from medbench_messaging.consumer import Delivery
from medbench_messaging.publisher import Outgoing, Publisher
from metric_scorer.adapters.mongo_pool_keys import MongoPoolKeys
from metric_scorer.adapters.mongo_variants import MongoVariants
from metric_scorer.core.metrics import ItemKey, score_item, shown_reference

SCORER_VERSION = "metric-scorer/1"


class MismatchedResponse(ValueError):
    """A response names an item that is not at its ordinal in the pool."""


async def on_responses_recorded(
    event: inference_events_pb2.ResponsesRecorded,
    delivery: Delivery,
    *,
    keys: MongoPoolKeys,
    variants: MongoVariants,
    publisher: Publisher,
) -> None:
    """Scores a batch of responses and publishes their scores (deterministic, so idempotent)."""
    pool = await keys.keys(event.pool_id)
    # Each download shows choice options in its tenant's order; keys are in canonical order.
    orders = await variants.orders(event.submission_id)
    scores = []
    rules: dict[str, str] = {}
    for response in event.responses:
        if (
            not 0 <= response.ordinal < len(pool)
            or pool[response.ordinal].item_id != response.item_id
        ):
            raise MismatchedResponse(
                f"item {response.item_id} is not at ordinal {response.ordinal} of {event.pool_id}"
            )
        key = pool[response.ordinal]
        rules[key.dataset] = key.rule
        if response.missing:
            score, parsed = 0.0, ""
        else:
            result = score_item(
                response.answer,
                ItemKey(
                    key.item_id,
                    key.dataset,
                    key.metric,
                    shown_reference(key.reference, orders.get(key.item_id))
                    if key.metric.startswith("choice")
                    else key.reference,
                ),
            )
            score, parsed = result.score, result.parsed
        scores.append(
            scoring_events_pb2.ItemScore(
                item_id=key.item_id,
                dataset=key.dataset,
                dimension=key.dimension,
                group_id=key.group_id,
                component="metric",
                metric=key.metric,
                score=score,
                parsed=parsed,
            )
        )
    scored_at = Timestamp()
    scored_at.FromDatetime(datetime.now(UTC))
    out = scoring_events_pb2.ItemsScored(
        event_id=f"{event.submission_id}:{event.batch_id}:metric",
        submission_id=event.submission_id,
        tenant_id=event.tenant_id,
        pool_id=event.pool_id,
        batch_id=event.batch_id,
        expected_items=event.expected_items,
        scores=scores,
        dataset_rules=rules,
        scorer_version=SCORER_VERSION,
        scored_at=scored_at,
    )
    await publisher.publish([Outgoing(topics.ITEM_SCORED, out, key=event.submission_id)])
