"""Kafka handlers of the judge scorer."""

from __future__ import annotations

from medbench.scoring.v1 import scoring_events_pb2
from medbench_messaging.consumer import Delivery


class JudgeNotConfigured(RuntimeError):
    """No judge model is configured in this release; the request is dead-lettered with this
    reason so it can be replayed once one is, instead of being scored wrongly."""


async def on_judge_requested(event: scoring_events_pb2.JudgeRequested, delivery: Delivery) -> None:
    """Judging arrives with the judge-model integration; until then refuse loudly."""
    raise JudgeNotConfigured(
        f"judge requested for {len(event.tasks)} items of {event.submission_id}, but no judge "
        f"model is configured"
    )
