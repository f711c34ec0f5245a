"""LeaderboardServicer: publishing opt-in, equating and ranked boards -> proto."""

from __future__ import annotations

import grpc

from aggregator.entrypoints import convert
from aggregator.usecases.leaderboards import Leaderboards
from medbench.leaderboard.v1 import leaderboard_service_pb2 as lb
from medbench.leaderboard.v1 import leaderboard_service_pb2_grpc


class LeaderboardServicer(leaderboard_service_pb2_grpc.LeaderboardServiceServicer):
    """Leaderboards of the aggregator."""

    def __init__(self, boards: Leaderboards) -> None:
        self._boards = boards

    async def PublishEntry(
        self, request: lb.PublishEntryRequest, context: grpc.aio.ServicerContext
    ) -> lb.PublishEntryResponse:
        published = await self._boards.publish(convert.publication_from_proto(request))
        return lb.PublishEntryResponse(published=published)

    async def EquateBoard(
        self, request: lb.EquateBoardRequest, context: grpc.aio.ServicerContext
    ) -> lb.EquateBoardResponse:
        done = await self._boards.equate(request.track, request.board, request.reference_pool)
        return lb.EquateBoardResponse(
            entries=done.entries,
            pools=done.pools,
            observations=done.observations,
            reference_pool=done.reference_pool,
        )

    async def ListLeaderboard(
        self, request: lb.ListLeaderboardRequest, context: grpc.aio.ServicerContext
    ) -> lb.ListLeaderboardResponse:
        ranked = await self._boards.ranked(
            request.track,
            request.board,
            request.cycle,
            best=request.rule == lb.SELECTION_RULE_BEST,
            page_token=request.page_token,
            page_size=request.page_size,
        )
        return lb.ListLeaderboardResponse(
            entries=[convert.entry_to_proto(e, rank, group) for e, rank, group in ranked.page],
            next_page_token=ranked.next_page_token,
            total=ranked.total,
        )
