"""Composition root of the judge scorer."""

from __future__ import annotations

from judge_scorer.entrypoints.kafka_handlers import on_judge_requested
from judge_scorer.settings import JudgeScorerSettings
from medbench_messaging import topics
from medbench_messaging.consumer import KafkaConsumerWorker
from medbench_runtime.service import ServiceRuntime, run_service
from medbench_storage.client import TRANSIENT_ERRORS
from medbench_storage.infra import open_infrastructure


async def serve(settings: JudgeScorerSettings) -> None:
    async with open_infrastructure(settings) as infra:
        consumer = KafkaConsumerWorker(
            settings.kafka,
            topics.JUDGE_REQUESTED,
            group_id="judge-scorer",
            member_id=settings.member_id,
            handler=on_judge_requested,
            dead_letters=infra.publisher,
            transient_errors=TRANSIENT_ERRORS,
        )
        await run_service(settings, ServiceRuntime(workers=[consumer], readiness=[infra.ready]))
