"""Composition root of the metric scorer."""

from __future__ import annotations

from functools import partial

from medbench_messaging import topics
from medbench_runtime.service import run_service
from medbench_storage.infra import open_infrastructure
from medbench_storage.pool_keys import MongoPoolKeys
from medbench_storage.variants import MongoVariants
from metric_scorer.adapters.mongo_leak_signals import SEALED_INDEXES, MongoLeakSignals
from metric_scorer.core.library import LIBRARY
from metric_scorer.entrypoints.kafka_handlers import on_responses_recorded
from metric_scorer.settings import MetricScorerSettings
from metric_scorer.usecases.item_scoring import ItemScoring, merge_rule_named


async def serve(settings: MetricScorerSettings) -> None:
    merge_rule_named(settings.merge_rule)  # an unknown rule fails at start-up, not per message
    # The metric library is imported with the service, before it reports ready, not by the
    # first batch it scores (some metrics load numerical libraries: about 2 s of CPU).
    if not LIBRARY:
        raise RuntimeError("the metric library is empty")
    async with open_infrastructure(settings, sealed_indexes=SEALED_INDEXES) as infra:
        scoring = ItemScoring(
            keys=MongoPoolKeys(infra.sealed_db),
            variants=MongoVariants(infra.sealed_db),
            publisher=infra.publisher,
            merge_rule=settings.merge_rule,
            signals=MongoLeakSignals(infra.sealed_db),
            judge_key_points=settings.key_point_recall == "judge",
        )
        responses = infra.consumer(
            topics.RESPONSE_RECORDED,
            group_id="metric-scorer",
            handler=partial(on_responses_recorded, scoring=scoring),
        )
        # The metric scorer publishes directly and never writes to an outbox.
        await run_service(settings, infra.runtime(workers=[responses], relay=False))
