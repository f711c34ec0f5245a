"""QuarantineServicer: maintainers list, retry and drop quarantined events; proto <-> use case."""

from __future__ import annotations

import grpc

from gateway.entrypoints import convert
from gateway.usecases.quarantine import QuarantineReview
from medbench.ops.v1 import quarantine_service_pb2, quarantine_service_pb2_grpc
from medbench_runtime.auth import current_principal


class QuarantineServicer(quarantine_service_pb2_grpc.QuarantineServiceServicer):
    def __init__(self, review: QuarantineReview) -> None:
        self._review = review

    async def ListQuarantined(
        self,
        request: quarantine_service_pb2.ListQuarantinedRequest,
        context: grpc.aio.ServicerContext,
    ) -> quarantine_service_pb2.ListQuarantinedResponse:
        page = await self._review.list(
            request.status, request.service, request.page_size, request.page_token
        )
        return quarantine_service_pb2.ListQuarantinedResponse(
            events=[convert.entry_to_proto(e) for e in page.entries],
            next_page_token=page.next_page_token,
            held=page.held,
        )

    async def RetryQuarantined(
        self,
        request: quarantine_service_pb2.QuarantinedEntryRequest,
        context: grpc.aio.ServicerContext,
    ) -> quarantine_service_pb2.QuarantinedEvent:
        entry = await self._review.retry(request.entry_id, current_principal().key_id)
        return convert.entry_to_proto(entry)

    async def DropQuarantined(
        self,
        request: quarantine_service_pb2.QuarantinedEntryRequest,
        context: grpc.aio.ServicerContext,
    ) -> quarantine_service_pb2.QuarantinedEvent:
        entry = await self._review.drop(request.entry_id, current_principal().key_id)
        return convert.entry_to_proto(entry)
