"""Composition root of the aggregator."""

from __future__ import annotations

from functools import partial

from aggregator.adapters.mongo_leaderboard import INDEXES as BOARD_INDEXES
from aggregator.adapters.mongo_leaderboard import MongoLeaderboard
from aggregator.adapters.mongo_scores import INDEXES, MongoScores
from aggregator.aggregation import Aggregation
from aggregator.entrypoints.grpc_servicer import ReportServicer
from aggregator.entrypoints.kafka_handlers import on_items_scored
from aggregator.entrypoints.leaderboard_servicer import LeaderboardServicer
from aggregator.settings import AggregatorSettings
from medbench.leaderboard.v1 import leaderboard_service_pb2, leaderboard_service_pb2_grpc
from medbench.report.v1 import report_service_pb2, report_service_pb2_grpc
from medbench_messaging import topics
from medbench_runtime.service import Servicer, ServiceRuntime, run_service
from medbench_storage.infra import open_infrastructure


async def serve(settings: AggregatorSettings) -> None:
    async with open_infrastructure(settings, (*INDEXES, *BOARD_INDEXES)) as infra:
        scores = MongoScores(infra.db)
        aggregation = Aggregation(infra, scores)
        board = MongoLeaderboard(infra.db)
        consumer = infra.consumer(
            topics.ITEM_SCORED,
            group_id="aggregator",
            handler=partial(on_items_scored, aggregation=aggregation),
        )
        await run_service(
            settings,
            ServiceRuntime(
                servicers=[
                    Servicer(
                        report_service_pb2_grpc.add_ReportServiceServicer_to_server,
                        ReportServicer(scores, board),
                        report_service_pb2.DESCRIPTOR.services_by_name["ReportService"].full_name,
                    ),
                    Servicer(
                        leaderboard_service_pb2_grpc.add_LeaderboardServiceServicer_to_server,
                        LeaderboardServicer(scores, board),
                        leaderboard_service_pb2.DESCRIPTOR.services_by_name[
                            "LeaderboardService"
                        ].full_name,
                    ),
                ],
                workers=[infra.relay, consumer],
                readiness=[infra.ready],
                key_store=infra.key_store,
                audit=infra.audit_log,
            ),
        )
