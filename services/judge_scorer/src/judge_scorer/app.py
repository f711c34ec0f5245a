"""Composition root of the judge scorer."""

from __future__ import annotations

from functools import partial

from judge_scorer.adapters.judge_client import JudgeClient, JudgeUnavailable
from judge_scorer.adapters.mongo_judge import INDEXES, MongoJudge
from judge_scorer.adapters.rotator_images import ImageUnavailable, RotatorImages
from judge_scorer.core.rubric import load_rubrics
from judge_scorer.entrypoints.grpc_servicer import JudgeServicer
from judge_scorer.entrypoints.kafka_handlers import on_judge_requested
from judge_scorer.settings import JudgeScorerSettings
from judge_scorer.usecases.judging import Judging
from judge_scorer.usecases.panel import Panel
from judge_scorer.usecases.reviews import Reviews
from medbench.judge.v1 import judge_service_pb2_grpc
from medbench.taskpool.v1 import taskpool_service_pb2_grpc
from medbench_messaging import topics
from medbench_runtime.grpc_clients import insecure_channel
from medbench_runtime.http_client import HttpClient
from medbench_runtime.openai_endpoint import OpenAIEndpoint
from medbench_runtime.service import Servicer, run_service
from medbench_storage.infra import open_infrastructure
from medbench_storage.pool_keys import MongoPoolKeys
from medbench_storage.variants import MongoVariants


async def serve(settings: JudgeScorerSettings) -> None:
    judge = settings.judge
    rubrics = load_rubrics()  # a broken or unpublished rubric fails start-up, not a message
    async with open_infrastructure(settings, INDEXES) as infra:
        store = MongoJudge(infra.db)
        panel: Panel | None = None
        if judge.models:
            endpoint = OpenAIEndpoint(HttpClient(), timeout_s=judge.timeout_s)
            clients = [JudgeClient(m, endpoint, judge) for m in judge.models]
            panel = Panel(
                clients,
                store,
                judge.panel_rule,
                judge.batch_concurrency,
                vision={m.model for m in judge.models if m.vision},
            )
        # The bank's own image bytes (GetImage without a tenant): for vision judges, and for
        # the physicians reviewing an image item.
        images = RotatorImages(
            taskpool_service_pb2_grpc.TaskPoolServiceStub(
                insecure_channel(settings.peers.rotator, settings)
            )
        )
        # Built and served with no judge too: ratings and reviews need none; what does answers
        # FAILED_PRECONDITION naming MEDBENCH_JUDGE__MODELS.
        judging = Judging(
            panel,
            rubrics,
            store,
            MongoPoolKeys(infra.sealed_db),
            infra.publisher,
            kappa_threshold=judge.kappa_threshold,
            review_spread=judge.review_spread,
            variants=MongoVariants(infra.sealed_db),
            min_ratings=judge.min_ratings,
            images=images,
        )
        if judging.has_judge:
            await judging.export_all()
            await judging.release_parked()
        servicers = [
            Servicer.of(
                judge_service_pb2_grpc, JudgeServicer(judging, Reviews(judging, store, images))
            )
        ]
        consumer = infra.consumer(
            topics.JUDGE_REQUESTED,
            group_id="judge-scorer",
            handler=partial(on_judge_requested, judging=judging if judging.has_judge else None),
            # An outage of our own judge server is waited out, never dead-lettered.
            # So is the rotator's, when it cannot hand over an item's images.
            transient_errors=(JudgeUnavailable, ImageUnavailable),
            # Requests overlap so each one's slowest calls do not idle the judge. A poll of
            # judge requests takes minutes with a large model: the group waits up to an hour.
            # (A small max_poll_records made kafka-python's fetcher spin: measured 0.7 core.)
            concurrency=judge.request_concurrency,
            max_poll_interval_ms=3_600_000,
        )
        # The judge scorer publishes directly and never writes to an outbox.
        await run_service(
            settings, infra.runtime(servicers=servicers, workers=[consumer], relay=False)
        )
