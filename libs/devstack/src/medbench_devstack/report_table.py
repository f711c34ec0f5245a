"""The report table `make run` prints: a medbench.report.v1.Report as fixed-width text, its
dimensions named as the rotator's registry names them (read over gRPC, ListDatasets)."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence

import grpc

from medbench.report.v1 import report_pb2
from medbench.taskpool.v1 import taskpool_service_pb2, taskpool_service_pb2_grpc


async def dimension_names(rotator: grpc.aio.Channel) -> dict[str, str]:
    """Dimension code -> "code 中文名", for every dimension that has a dataset in the registry
    the rotator serves (a maintainer's or the service's key)."""
    listed = await taskpool_service_pb2_grpc.TaskPoolServiceStub(rotator).ListDatasets(
        taskpool_service_pb2.ListDatasetsRequest()
    )
    return {d.dimension: f"{d.dimension} {d.dimension_name_zh}".rstrip() for d in listed.datasets}


def report_table(report: report_pb2.Report, names: Mapping[str, str]) -> str:
    """Datasets, dimensions (named by names, else by code), overall with its 95% interval (and,
    for a partial report, what it misses; for a live view, each dataset's step and what that
    means); columns stay aligned with CJK names."""
    live = report.live
    dataset_lines = _table(
        ("dataset", "dimension", "n", "units", "score", *(("step",) if live else ())),
        [
            (
                d.dataset,
                names.get(d.dimension, d.dimension),
                str(d.items),
                str(d.units),
                f"{d.score:.1f}",
                *((f"{d.step:g}",) if live else ()),
            )
            for d in report.datasets
        ],
        right=frozenset({2, 3, 4, 5}),
    )
    dimension_lines = _table(
        ("dimension", "datasets", "score"),
        [
            (names.get(d.dimension, d.dimension), str(d.datasets), f"{d.score:.1f}")
            for d in report.dimensions
        ],
        right=frozenset({1, 2}),
    )
    overall = (
        f"overall  {report.overall:.1f}  "
        f"(95% interval {report.overall_low:.1f}-{report.overall_high:.1f})"
    )
    if report.partial:
        dimensions = ", ".join(names.get(d, d) for d in report.missing_dimensions) or "none"
        overall += (
            f"\nPARTIAL: the mean of the {len(report.dimensions)} dimensions present; no scored "
            f"item in dimensions {dimensions}; {len(report.missing_datasets)} datasets missing "
            f"({', '.join(report.missing_datasets)})"
        )
    if live:
        overall += (
            "\nLIVE VIEW: the pool is live (hidden), so each dataset's score is rounded to its "
            "step (at least 3 of its scoring units, after a dither) and dimensions and the overall "
            "come from the shown scores; the exact report is shown once the pool is disclosed"
        )
    return "\n".join([*dataset_lines, "", *dimension_lines, "", overall]) + "\n"


def _width(text: str) -> int:
    """Display width in a terminal (CJK characters take two columns)."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int]
) -> list[str]:
    widths = [max(_width(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = []
        for column, cell in enumerate(row):
            padding = " " * (widths[column] - _width(cell))
            cells.append(padding + cell if column in right else cell + padding)
        lines.append("  ".join(cells).rstrip())
    return lines
