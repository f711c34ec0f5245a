"""Composition root of the dispatcher."""

from __future__ import annotations

from functools import partial

from dispatcher.entrypoints.kafka_handlers import on_submission_created
from dispatcher.settings import DispatcherSettings
from medbench_messaging import topics
from medbench_messaging.consumer import KafkaConsumerWorker
from medbench_runtime.service import ServiceRuntime, run_service
from medbench_storage.client import TRANSIENT_ERRORS
from medbench_storage.infra import open_infrastructure


async def serve(settings: DispatcherSettings) -> None:
    async with open_infrastructure(settings) as infra:
        consumer = KafkaConsumerWorker(
            settings.kafka,
            topics.SUBMISSION_CREATED,
            group_id="dispatcher",
            member_id=settings.member_id,
            handler=partial(on_submission_created, db=infra.db),
            dead_letters=infra.publisher,
            transient_errors=TRANSIENT_ERRORS,
        )
        await run_service(settings, ServiceRuntime(workers=[consumer], readiness=[infra.ready]))
