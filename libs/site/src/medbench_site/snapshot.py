"""What the website shows, read from the platform over gRPC into plain immutable values.

Only published leaderboard entries are read; every other read (reports, dataset names) is for a
submission or dataset such an entry names. Nothing here can reach an unpublished submission.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc

from medbench.common.v1 import common_pb2
from medbench.leaderboard.v1 import leaderboard_service_pb2 as lb
from medbench.leaderboard.v1 import leaderboard_service_pb2_grpc
from medbench.report.v1 import report_service_pb2, report_service_pb2_grpc
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc

TRACKS = {
    "llm": common_pb2.TRACK_LLM,
    "multimodal": common_pb2.TRACK_MULTIMODAL,
    "agent": common_pb2.TRACK_AGENT,
}
BOARDS = {"api": taskpool_pb2.BOARD_API, "upload": taskpool_pb2.BOARD_UPLOAD}
PAGE = 500


@dataclass(frozen=True)
class Score:
    """A 0-100 score with its 95% interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Entry:
    """One published submission on one board and cycle."""

    submission_id: str
    tenant_id: str
    model_name: str
    model_version: str
    organisation: str
    open_source: bool
    parameter_count: str
    release_date: str
    cycle: str
    pool_id: str
    rank: int
    group: int
    overall: Score
    dimensions: Mapping[str, Score]
    published_at: datetime
    equated: float | None = None
    partial: bool = False
    """The entry's report misses some dimension or dataset of its track: it is listed after
    the ranked entries, with rank and group 0."""
    missing_dimensions: tuple[str, ...] = ()
    missing_datasets: tuple[str, ...] = ()

    @property
    def model_key(self) -> tuple[str, str, str]:
        """One model of one institution (its submissions are one row of the history)."""
        return (self.tenant_id, self.model_name, self.model_version)


@dataclass(frozen=True)
class DatasetScore:
    dataset: str
    dimension: str
    score: Score
    items: int
    units: int
    rule: str


@dataclass(frozen=True)
class Report:
    """The public part of a published submission's report."""

    submission_id: str
    overall: Score
    dimensions: Mapping[str, Score]
    datasets: tuple[DatasetScore, ...]
    scored_items: int
    created_at: datetime
    lineage: Mapping[str, str | tuple[str, ...]]
    equated: float | None = None
    partial: bool = False
    """Some dataset of the track has no scored item: the overall averages the dimensions
    present only."""
    missing_dimensions: tuple[str, ...] = ()
    missing_datasets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Board:
    """One track's board: its cycles, newest first, and each cycle's ranked entries."""

    track: str
    board: str
    cycles: tuple[str, ...]
    entries: Mapping[str, tuple[Entry, ...]]

    @property
    def slug(self) -> str:
        return f"{self.track}-{self.board}"


@dataclass(frozen=True)
class DimensionInfo:
    code: str
    track: str
    name: str
    name_zh: str


@dataclass(frozen=True)
class Snapshot:
    generated_at: datetime
    boards: tuple[Board, ...]
    reports: Mapping[str, Report]
    dimensions: Mapping[str, DimensionInfo] = field(default_factory=dict)
    # Dataset -> metric spec (the column headers of the per-dataset tables).
    metrics: Mapping[str, str] = field(default_factory=dict)
    registry_version: str = ""

    def board(self, track: str, board: str) -> Board:
        return next(b for b in self.boards if b.track == track and b.board == board)


def _entry(e: lb.LeaderboardEntry) -> Entry:
    return Entry(
        submission_id=e.submission_id,
        tenant_id=e.tenant_id,
        model_name=e.model_name,
        model_version=e.model_version,
        organisation=e.organisation,
        open_source=e.open_source,
        parameter_count=e.parameter_count,
        release_date=e.release_date,
        cycle=e.cycle,
        pool_id=e.pool_id,
        rank=e.rank,
        group=e.group,
        overall=Score(e.overall, e.overall_low, e.overall_high),
        dimensions={d.dimension: Score(d.score, d.low, d.high) for d in e.dimensions},
        published_at=e.published_at.ToDatetime(tzinfo=UTC),
        equated=e.equated if e.HasField("equated") else None,
        partial=e.partial,
        missing_dimensions=tuple(e.missing_dimensions),
        missing_datasets=tuple(e.missing_datasets),
    )


def _report(r: Any) -> Report:
    lineage = r.lineage
    return Report(
        submission_id=r.submission_id,
        overall=Score(r.overall, r.overall_low, r.overall_high),
        dimensions={d.dimension: Score(d.score, d.low, d.high) for d in r.dimensions},
        datasets=tuple(
            DatasetScore(
                d.dataset, d.dimension, Score(d.score, d.low, d.high), d.items, d.units, d.rule
            )
            for d in r.datasets
        ),
        scored_items=r.scored_items,
        created_at=r.created_at.ToDatetime(tzinfo=UTC),
        lineage={
            "pool_id": lineage.pool_id,
            "scorer_version": lineage.scorer_version,
            "aggregator_version": lineage.aggregator_version,
            "item_scores_digest": lineage.item_scores_digest,
            "judge_models": tuple(lineage.judge_models),
            "rubric_versions": tuple(lineage.rubric_versions),
            "calibration_ids": tuple(lineage.calibration_ids),
            "endpoint_model": lineage.endpoint_model,
            "decoding": lineage.decoding,
        },
        equated=r.equated if r.HasField("equated") else None,
        partial=r.partial,
        missing_dimensions=tuple(r.missing_dimensions),
        missing_datasets=tuple(r.missing_datasets),
    )


async def _listing(
    stub: leaderboard_service_pb2_grpc.LeaderboardServiceStub, track: int, board: int, cycle: str
) -> list[lb.LeaderboardEntry]:
    out: list[lb.LeaderboardEntry] = []
    token = ""
    while True:
        response = await stub.ListLeaderboard(
            lb.ListLeaderboardRequest(
                track=track, board=board, cycle=cycle, page_size=PAGE, page_token=token
            )
        )
        out.extend(response.entries)
        token = response.next_page_token
        if not token:
            return out


async def fetch(aggregator: grpc.aio.Channel, rotator: grpc.aio.Channel) -> Snapshot:
    """Every board's published entries per cycle, their reports, and the registry's names."""
    boards_stub = leaderboard_service_pb2_grpc.LeaderboardServiceStub(aggregator)
    reports_stub = report_service_pb2_grpc.ReportServiceStub(aggregator)
    boards: list[Board] = []
    reports: dict[str, Report] = {}
    for track, track_enum in TRACKS.items():
        for board, board_enum in BOARDS.items():
            # Over every cycle first (one entry per model and cycle): which cycles exist.
            history = await _listing(boards_stub, track_enum, board_enum, "")
            cycles = tuple(sorted({e.cycle for e in history}, reverse=True))
            per_cycle: dict[str, tuple[Entry, ...]] = {}
            for cycle in cycles:
                # An empty cycle asks for every cycle: entries of pools published outside any
                # cycle are taken from the history listing instead.
                ranked = (
                    await _listing(boards_stub, track_enum, board_enum, cycle)
                    if cycle
                    else [e for e in history if not e.cycle]
                )
                per_cycle[cycle] = tuple(_entry(e) for e in ranked)
                for e in ranked:
                    if e.submission_id not in reports:
                        response = await reports_stub.GetReport(
                            report_service_pb2.GetReportRequest(
                                submission_id=e.submission_id, tenant_id=e.tenant_id
                            )
                        )
                        reports[e.submission_id] = _report(response.report)
            boards.append(Board(track, board, cycles, per_cycle))
    catalog = await taskpool_service_pb2_grpc.TaskPoolServiceStub(rotator).ListDatasets(
        taskpool_service_pb2.ListDatasetsRequest()
    )
    track_codes = {v: k for k, v in TRACKS.items()}
    return Snapshot(
        generated_at=datetime.now(UTC),
        boards=tuple(boards),
        reports=reports,
        dimensions={
            d.dimension: DimensionInfo(
                d.dimension, track_codes.get(d.track, ""), d.dimension_name, d.dimension_name_zh
            )
            for d in catalog.datasets
        },
        metrics={d.dataset: d.metric for d in catalog.datasets},
        registry_version=catalog.registry_version,
    )
