"""The report table `make run` prints, and the dimension names it reads from the rotator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from medbench.common.v1 import common_pb2
from medbench.report.v1 import report_pb2
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_devstack.report_table import dimension_names, report_table

NAMES = {
    "knowledge_qa": "knowledge_qa 医学知识问答",
    "safety_ethics": "safety_ethics 医疗安全与伦理",
}
REPORT = report_pb2.Report(
    overall=60.41666,
    overall_low=48.25,
    overall_high=71.04,
    datasets=[
        report_pb2.DatasetScore(
            dataset="MedExam", dimension="knowledge_qa", score=75.0, items=20, units=4
        ),
        report_pb2.DatasetScore(
            dataset="MedEthics", dimension="safety_ethics", score=66.666, items=15, units=3
        ),
        report_pb2.DatasetScore(
            dataset="X", dimension="other_dim", score=5.55, items=100, units=100
        ),
    ],
    dimensions=[
        report_pb2.DimensionScore(dimension="knowledge_qa", score=75.0, datasets=1),
        report_pb2.DimensionScore(dimension="other_dim", score=5.55, datasets=1),
        report_pb2.DimensionScore(dimension="safety_ethics", score=50.0, datasets=2),
    ],
)
# What `make run` printed before the table moved out of the aggregator (the same report).
EXPECTED = """\
dataset    dimension                       n  units  score
MedExam    knowledge_qa 医学知识问答      20      4   75.0
MedEthics  safety_ethics 医疗安全与伦理   15      3   66.7
X          other_dim                     100    100    5.5

dimension                     datasets  score
knowledge_qa 医学知识问答            1   75.0
other_dim                            1    5.5
safety_ethics 医疗安全与伦理         2   50.0

overall  60.4  (95% interval 48.2-71.0)
"""


def test_the_table_names_dimensions_keeps_cjk_columns_aligned_and_ends_with_the_interval() -> None:
    assert report_table(REPORT, NAMES) == EXPECTED


def test_a_dimension_without_a_name_shows_its_code() -> None:
    lines = report_table(REPORT, {}).splitlines()
    assert lines[1].split() == ["MedExam", "knowledge_qa", "20", "4", "75.0"]
    assert lines[-1] == "overall  60.4  (95% interval 48.2-71.0)"


def test_a_partial_report_says_what_it_misses_after_its_overall() -> None:
    partial = report_pb2.Report()
    partial.CopyFrom(REPORT)
    partial.partial = True
    partial.missing_dimensions.append("language_generation")
    partial.missing_datasets.extend(["MedPopular", "MedTeach"])
    names = {**NAMES, "language_generation": "language_generation 医学语言生成"}
    lines = report_table(partial, names).splitlines()
    assert lines[-2] == "overall  60.4  (95% interval 48.2-71.0)"
    assert lines[-1] == (
        "PARTIAL: the mean of the 3 dimensions present; no scored item in dimensions "
        "language_generation 医学语言生成; 2 datasets missing (MedPopular, MedTeach)"
    )


def test_a_live_view_shows_each_datasets_step_and_says_what_it_is() -> None:
    live = report_pb2.Report()
    live.CopyFrom(REPORT)
    live.live = True
    for d in live.datasets:
        d.step = 25.0
    lines = report_table(live, {}).splitlines()
    assert lines[0].split() == ["dataset", "dimension", "n", "units", "score", "step"]
    assert lines[1].split() == ["MedExam", "knowledge_qa", "20", "4", "75.0", "25"]
    assert lines[-2] == "overall  60.4  (95% interval 48.2-71.0)"
    assert lines[-1].startswith("LIVE VIEW: the pool is live (hidden)")
    assert "LIVE VIEW" not in report_table(REPORT, {})


class _Rotator(taskpool_service_pb2_grpc.TaskPoolServiceServicer):
    async def ListDatasets(
        self, request: taskpool_service_pb2.ListDatasetsRequest, context: grpc.aio.ServicerContext
    ) -> taskpool_service_pb2.ListDatasetsResponse:
        assert request.track == common_pb2.TRACK_UNSPECIFIED
        return taskpool_service_pb2.ListDatasetsResponse(
            datasets=[
                taskpool_pb2.DatasetInfo(
                    dataset="MedExam", dimension="knowledge_qa", dimension_name_zh="医学知识问答"
                ),
                taskpool_pb2.DatasetInfo(
                    dataset="MedQA", dimension="knowledge_qa", dimension_name_zh="医学知识问答"
                ),
                taskpool_pb2.DatasetInfo(
                    dataset="MedEthics",
                    dimension="safety_ethics",
                    dimension_name_zh="医疗安全与伦理",
                ),
            ]
        )


@pytest.fixture
async def rotator() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    taskpool_service_pb2_grpc.add_TaskPoolServiceServicer_to_server(_Rotator(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            yield chan
    finally:
        await server.stop(None)


async def test_dimension_names_come_from_the_rotators_dataset_listing(
    rotator: grpc.aio.Channel,
) -> None:
    assert await dimension_names(rotator) == NAMES
