"""Kafka handlers of the judge scorer."""

from __future__ import annotations

from judge_scorer.usecases.judging import Judging
from medbench.scoring.v1 import scoring_events_pb2
from medbench_messaging.consumer import Delivery


class JudgeNotConfigured(RuntimeError):
    """No judge model is configured: the request is dead-lettered with this reason, to be
    replayed once one is, instead of being scored wrongly."""


async def on_judge_requested(
    event: scoring_events_pb2.JudgeRequested, delivery: Delivery, *, judging: Judging | None
) -> None:
    """Judges the items (or parks the request until its rubric is calibrated)."""
    if judging is None:
        raise JudgeNotConfigured(
            f"judge requested for {len(event.tasks)} items of {event.context.submission_id}, "
            f"but no judge model is configured (MEDBENCH_JUDGE__MODELS)"
        )
    await judging.handle(event)
