"""Kafka handlers of the metric scorer."""

from __future__ import annotations

from medbench.inference.v1 import inference_events_pb2
from medbench_messaging.consumer import Delivery
from metric_scorer.entrypoints import convert
from metric_scorer.usecases.item_scoring import ItemScoring


async def on_responses_recorded(
    event: inference_events_pb2.ResponsesRecorded, delivery: Delivery, *, scoring: ItemScoring
) -> None:
    """Scores a batch of responses and publishes the scores and judge requests."""
    await scoring.score_batch(convert.batch_from_proto(event))
