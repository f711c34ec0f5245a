"""ProbingServicer: maintainers list probing findings; proto <-> use case."""

from __future__ import annotations

import grpc

from gateway.entrypoints import convert
from gateway.usecases.probing import Probing
from medbench.ops.v1 import probing_service_pb2, probing_service_pb2_grpc


class ProbingServicer(probing_service_pb2_grpc.ProbingServiceServicer):
    def __init__(self, probing: Probing) -> None:
        self._probing = probing

    async def ListProbingFindings(
        self,
        request: probing_service_pb2.ListProbingFindingsRequest,
        context: grpc.aio.ServicerContext,
    ) -> probing_service_pb2.ListProbingFindingsResponse:
        found, token = await self._probing.findings(
            request.tenant_id, request.pool_id, request.page_size, request.page_token
        )
        return probing_service_pb2.ListProbingFindingsResponse(
            findings=[convert.finding_to_proto(f) for f in found], next_page_token=token
        )
