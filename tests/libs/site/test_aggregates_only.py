"""The website shows aggregates only: its snapshot reads published entries, their reports and the
registry's names, never per-item results, so no item of a hidden pool reaches a page. Checked
against in-process fakes of the aggregator and the rotator that would serve item results if
asked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from medbench_site.render import render_site
from medbench_site.snapshot import fetch
from medbench_site.text import METHODS

from medbench.common.v1 import common_pb2
from medbench.leaderboard.v1 import leaderboard_service_pb2 as lb
from medbench.leaderboard.v1 import leaderboard_service_pb2_grpc
from medbench.report.v1 import report_pb2, report_service_pb2, report_service_pb2_grpc
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc

ITEM = "MedExam-ITEMID-7f3a"
ENTRY = lb.LeaderboardEntry(
    submission_id="sub_pub",
    tenant_id="hospital-a",
    model_name="model-a",
    cycle="2026-q4",
    pool_id="llm-upload-2026-q4",
    rank=1,
    group=1,
    overall=80.0,
    overall_low=75.0,
    overall_high=85.0,
    dimensions=[lb.EntryDimension(dimension="knowledge_qa", score=80.0, low=75.0, high=85.0)],
)


class Calls:
    def __init__(self) -> None:
        self.methods: list[str] = []


class Boards(leaderboard_service_pb2_grpc.LeaderboardServiceServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def ListLeaderboard(self, request: Any, context: Any) -> Any:
        self.calls.methods.append("ListLeaderboard")
        found = request.track == common_pb2.TRACK_LLM and request.board == taskpool_pb2.BOARD_UPLOAD
        return lb.ListLeaderboardResponse(entries=[ENTRY] if found else [], total=int(found))


class Reports(report_service_pb2_grpc.ReportServiceServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def GetReport(self, request: Any, context: Any) -> Any:
        self.calls.methods.append("GetReport")
        report = report_pb2.Report(
            submission_id=request.submission_id,
            overall=80.0,
            overall_low=75.0,
            overall_high=85.0,
            scored_items=10,
            dimensions=[
                report_pb2.DimensionScore(
                    dimension="knowledge_qa", score=80.0, datasets=1, low=75.0, high=85.0
                )
            ],
            datasets=[
                report_pb2.DatasetScore(
                    dataset="MedExam",
                    dimension="knowledge_qa",
                    score=80.0,
                    items=10,
                    units=2,
                    rule="all_permutations",
                    low=75.0,
                    high=85.0,
                )
            ],
        )
        report.lineage.pool_id = ENTRY.pool_id
        report.created_at.GetCurrentTime()
        return report_service_pb2.GetReportResponse(report=report)

    async def StreamItemResults(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.calls.methods.append("StreamItemResults")
        yield report_service_pb2.StreamItemResultsResponse(
            items=[report_pb2.ItemResult(item_id=ITEM, dataset="MedExam", score=1.0)]
        )


class Pools(taskpool_service_pb2_grpc.TaskPoolServiceServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def ListDatasets(self, request: Any, context: Any) -> Any:
        self.calls.methods.append("ListDatasets")
        return taskpool_service_pb2.ListDatasetsResponse(
            datasets=[
                taskpool_pb2.DatasetInfo(
                    dataset="MedExam",
                    track=common_pb2.TRACK_LLM,
                    dimension="knowledge_qa",
                    metric="choice_single",
                    dimension_name="Medical Knowledge QA",
                    dimension_name_zh="医学知识问答",
                )
            ],
            registry_version="1",
        )


async def test_the_site_reads_and_shows_aggregates_only() -> None:
    calls = Calls()
    server = grpc.aio.server()
    leaderboard_service_pb2_grpc.add_LeaderboardServiceServicer_to_server(Boards(calls), server)
    report_service_pb2_grpc.add_ReportServiceServicer_to_server(Reports(calls), server)
    taskpool_service_pb2_grpc.add_TaskPoolServiceServicer_to_server(Pools(calls), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            snapshot = await fetch(chan, chan)
    finally:
        await server.stop(None)
    assert set(calls.methods) == {"ListLeaderboard", "GetReport", "ListDatasets"}
    files = render_site(snapshot)
    pages = [p for p in files if p.endswith(".html")]
    assert any("sub_pub" in p for p in pages)  # the published submission has its page
    assert not [p for p, data in files.items() if ITEM.encode() in data]


def test_the_methods_page_says_what_partners_see_in_both_languages() -> None:
    english = " ".join(line for _, lines in METHODS["en"] for line in lines)
    chinese = " ".join(line for _, lines in METHODS["zh"] for line in lines)
    assert "never per item" in english and "maintainers disclose it" in english
    assert "看不到逐题结果" in chinese and "由维护者公开后" in chinese
