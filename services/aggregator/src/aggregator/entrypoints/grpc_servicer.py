"""ReportServicer: stored reports, item results and progress -> proto."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from aggregator.entrypoints import convert
from aggregator.usecases.reports import Reports
from medbench.report.v1 import report_pb2, report_service_pb2, report_service_pb2_grpc

ITEMS_PER_MESSAGE = 1000


class ReportServicer(report_service_pb2_grpc.ReportServiceServicer):
    """Internal report API."""

    def __init__(self, reports: Reports) -> None:
        self._reports = reports

    async def GetReport(
        self, request: report_service_pb2.GetReportRequest, context: grpc.aio.ServicerContext
    ) -> report_service_pb2.GetReportResponse:
        found = await self._reports.report(
            request.submission_id, request.tenant_id, exact=request.exact
        )
        return report_service_pb2.GetReportResponse(
            report=convert.report_to_proto(found.record, found.equated)
        )

    async def StreamItemResults(
        self,
        request: report_service_pb2.StreamItemResultsRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[report_service_pb2.StreamItemResultsResponse]:
        out: list[report_pb2.ItemResult] = []
        async for result in self._reports.item_results(request.submission_id, request.tenant_id):
            out.append(convert.item_result_to_proto(result))
            if len(out) == ITEMS_PER_MESSAGE:
                yield report_service_pb2.StreamItemResultsResponse(items=out)
                out = []
        if out:
            yield report_service_pb2.StreamItemResultsResponse(items=out)

    async def GetProgress(
        self, request: report_service_pb2.GetProgressRequest, context: grpc.aio.ServicerContext
    ) -> report_service_pb2.GetProgressResponse:
        doc = await self._reports.progress(request.submission_id)
        if doc is None:
            return report_service_pb2.GetProgressResponse()
        return report_service_pb2.GetProgressResponse(
            scored_items=doc["scored"], expected_items=doc["expected"], completed=doc["completed"]
        )
