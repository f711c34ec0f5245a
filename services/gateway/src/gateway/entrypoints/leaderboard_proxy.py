"""The public leaderboard: ListLeaderboard forwarded to the aggregator (nothing else of the
aggregator's LeaderboardService is reachable through the gateway: PublishEntry is internal,
partners publish with SubmissionService.PublishSubmission)."""

from __future__ import annotations

import grpc

from gateway.core.ports import Reports
from medbench.leaderboard.v1 import leaderboard_service_pb2, leaderboard_service_pb2_grpc


class LeaderboardProxy(leaderboard_service_pb2_grpc.LeaderboardServiceServicer):
    """Read-only leaderboards for everyone (published submissions only)."""

    def __init__(self, reports: Reports) -> None:
        self._reports = reports

    async def ListLeaderboard(
        self,
        request: leaderboard_service_pb2.ListLeaderboardRequest,
        context: grpc.aio.ServicerContext,
    ) -> leaderboard_service_pb2.ListLeaderboardResponse:
        response: leaderboard_service_pb2.ListLeaderboardResponse = await self._reports.leaderboard(
            request
        )
        return response
