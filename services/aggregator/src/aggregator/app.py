"""Composition root of the aggregator."""

from __future__ import annotations

from functools import partial

from aggregator.adapters.mongo_leaderboard import INDEXES as BOARD_INDEXES
from aggregator.adapters.mongo_leaderboard import MongoLeaderboard
from aggregator.adapters.mongo_scores import INDEXES, MongoScores
from aggregator.entrypoints.grpc_servicer import ReportServicer
from aggregator.entrypoints.kafka_handlers import on_items_scored
from aggregator.entrypoints.leaderboard_servicer import LeaderboardServicer
from aggregator.settings import AggregatorSettings
from aggregator.usecases.aggregation import Aggregation
from aggregator.usecases.leaderboards import Leaderboards
from aggregator.usecases.reports import Reports
from medbench.leaderboard.v1 import leaderboard_service_pb2_grpc
from medbench.report.v1 import report_service_pb2_grpc
from medbench_messaging import topics
from medbench_runtime.service import Servicer, run_service
from medbench_storage.infra import open_infrastructure


async def serve(settings: AggregatorSettings) -> None:
    async with open_infrastructure(settings, (*INDEXES, *BOARD_INDEXES)) as infra:
        scores = MongoScores.of(infra)
        board = MongoLeaderboard(infra.db)
        consumer = infra.consumer(
            topics.ITEM_SCORED,
            group_id="aggregator",
            handler=partial(on_items_scored, aggregation=Aggregation(scores)),
        )
        await run_service(
            settings,
            infra.runtime(
                servicers=[
                    Servicer.of(report_service_pb2_grpc, ReportServicer(Reports(scores, board))),
                    Servicer.of(
                        leaderboard_service_pb2_grpc,
                        LeaderboardServicer(Leaderboards(scores, board)),
                    ),
                ],
                workers=[consumer],
            ),
        )
