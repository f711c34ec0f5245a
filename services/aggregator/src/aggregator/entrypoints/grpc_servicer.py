"""ReportServicer: stored reports and progress -> proto."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from aggregator.adapters.mongo_scores import MongoScores
from medbench.common.v1 import common_pb2
from medbench.report.v1 import report_pb2, report_service_pb2, report_service_pb2_grpc
from medbench_runtime.errors import InvalidArgument, NotFound


def report_to_proto(doc: dict[str, Any]) -> report_pb2.Report:
    """The stored report as the partner sees it."""
    created = Timestamp()
    created.FromDatetime(doc["created_at"])
    return report_pb2.Report(
        submission_id=doc["_id"],
        tenant_id=doc["tenant_id"],
        overall=doc["overall"],
        overall_low=doc.get("overall_low", doc["overall"]),
        overall_high=doc.get("overall_high", doc["overall"]),
        dimensions=[report_pb2.DimensionScore(**d) for d in doc["dimensions"]],
        datasets=[report_pb2.DatasetScore(**d) for d in doc["datasets"]],
        lineage=common_pb2.Lineage(**doc["lineage"]),
        created_at=created,
        scored_items=doc["scored_items"],
    )


class ReportServicer(report_service_pb2_grpc.ReportServiceServicer):
    """Internal report API."""

    def __init__(self, scores: MongoScores) -> None:
        self._scores = scores

    async def GetReport(
        self, request: report_service_pb2.GetReportRequest, context: grpc.aio.ServicerContext
    ) -> report_service_pb2.GetReportResponse:
        if not request.submission_id:
            raise InvalidArgument("submission_id is required")
        doc = await self._scores.report(request.submission_id)
        if doc is None or (request.tenant_id and doc["tenant_id"] != request.tenant_id):
            raise NotFound(f"no report for submission {request.submission_id}")
        return report_service_pb2.GetReportResponse(report=report_to_proto(doc))

    async def GetProgress(
        self, request: report_service_pb2.GetProgressRequest, context: grpc.aio.ServicerContext
    ) -> report_service_pb2.GetProgressResponse:
        if not request.submission_id:
            raise InvalidArgument("submission_id is required")
        doc = await self._scores.progress(request.submission_id)
        if doc is None:
            return report_service_pb2.GetProgressResponse()
        return report_service_pb2.GetProgressResponse(
            scored_items=doc["scored"], expected_items=doc["expected"], completed=doc["completed"]
        )
