"""Kafka handlers of the aggregator."""

from __future__ import annotations

from aggregator.entrypoints import convert
from aggregator.usecases.aggregation import Aggregation
from medbench.scoring.v1 import scoring_events_pb2
from medbench_messaging.consumer import Delivery


async def on_items_scored(
    event: scoring_events_pb2.ItemsScored, delivery: Delivery, *, aggregation: Aggregation
) -> None:
    """Records a batch of item scores (idempotent) and completes the submission when due."""
    await aggregation.record(convert.batch_from_proto(event))
