"""ReportServicer: stored reports and progress -> proto."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from aggregator.adapters.mongo_leaderboard import MongoLeaderboard
from aggregator.adapters.mongo_scores import MongoScores
from aggregator.adapters.score_codec import unpack
from aggregator.aggregation import merged_items
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


def item_result(item_id: str, parts: list[dict[str, Any]]) -> report_pb2.ItemResult:
    """One item's stored parts as the owner sees them (no reference is ever stored here)."""
    parts = sorted(parts, key=lambda p: p["component"])
    first = parts[0]
    result = report_pb2.ItemResult(
        item_id=item_id,
        dataset=first["dataset"],
        dimension=first["dimension"],
        group_id=first["group_id"],
        merge_rule=first.get("merge_rule", "mean"),
        prompt_hash=next((p["prompt_hash"] for p in parts if p.get("prompt_hash")), ""),
    )
    merged = merged_items(parts)
    if merged:
        result.score = merged[0].score
    for p in parts:
        judge = p.get("judge", {})
        result.parts.append(
            report_pb2.ItemPart(
                component=p["component"],
                metric=p.get("metric", ""),
                components=[
                    report_pb2.ComponentResult(name=n, score=v)
                    for n, v in p.get("components", [[p["component"], p["score"]]])
                ],
                parsed=p.get("parsed", ""),
                unscored=bool(p.get("unscored")),
                judge_models=judge.get("models", []),
                rubric_version=judge.get("rubric", ""),
                rubric_hash=judge.get("rubric_hash", ""),
                prompt_hash=judge.get("prompt_hash", ""),
                calibration_id=judge.get("calibration_id", ""),
                injection_flags=judge.get("flags", []),
            )
        )
    return result


class ReportServicer(report_service_pb2_grpc.ReportServiceServicer):
    """Internal report API."""

    def __init__(self, scores: MongoScores, board: MongoLeaderboard | None = None) -> None:
        self._scores = scores
        self._board = board

    async def GetReport(
        self, request: report_service_pb2.GetReportRequest, context: grpc.aio.ServicerContext
    ) -> report_service_pb2.GetReportResponse:
        if not request.submission_id:
            raise InvalidArgument("submission_id is required")
        doc = await self._scores.report(request.submission_id)
        if doc is None or (request.tenant_id and doc["tenant_id"] != request.tenant_id):
            raise NotFound(f"no report for submission {request.submission_id}")
        report = report_to_proto(doc)
        entry = None if self._board is None else await self._board.entry(request.submission_id)
        if entry is not None and entry.get("equated") is not None:
            report.equated = entry["equated"]
        return report_service_pb2.GetReportResponse(report=report)

    async def StreamItemResults(
        self,
        request: report_service_pb2.StreamItemResultsRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[report_service_pb2.StreamItemResultsResponse]:
        if not request.submission_id:
            raise InvalidArgument("submission_id is required")
        doc = await self._scores.report(request.submission_id)
        if doc is None or (request.tenant_id and doc["tenant_id"] != request.tenant_id):
            raise NotFound(f"no report for submission {request.submission_id}")
        parts: dict[str, list[dict[str, Any]]] = {}
        for batch in await self._scores.batches(request.submission_id):
            for s in unpack(batch):
                held = parts.setdefault(s["item_id"], [])
                # A redelivered batch stored twice is impossible (keyed), but a part may be
                # re-scored under another batch id: keep one per component.
                if all(p["component"] != s["component"] for p in held):
                    held.append(s)
        out: list[report_pb2.ItemResult] = []
        for item_id in sorted(parts):
            out.append(item_result(item_id, parts[item_id]))
            if len(out) == 1000:
                yield report_service_pb2.StreamItemResultsResponse(items=out)
                out = []
        if out:
            yield report_service_pb2.StreamItemResultsResponse(items=out)

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
