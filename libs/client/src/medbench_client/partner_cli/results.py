"""Commands that show results: `report` (the report files of one submission) and `leaderboard`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from medbench.common.v1 import common_pb2
from medbench.leaderboard.v1 import leaderboard_service_pb2
from medbench.report.v1 import report_pb2
from medbench.submission.v1 import submission_pb2
from medbench_client.partner_cli.errors import EXIT_OK, usage_error
from medbench_client.partner_cli.output import BOARDS, RULES, TRACKS, emit, iso, table
from medbench_client.partner_cli.session import Session
from medbench_client.render import (
    DatasetRow,
    DimensionRow,
    ItemResult,
    ReportDocument,
    partial_text,
    write_report,
)


def _interval(score: float, low: float, high: float) -> tuple[float, float]:
    """A report built before intervals existed has none (both 0): show the score alone."""
    return (score, score) if low == high == 0.0 else (low, high)


def document(
    sub: submission_pb2.Submission,
    report: report_pb2.Report,
    items: Sequence[report_pb2.ItemResult] = (),
    items_withheld: str = "",
) -> ReportDocument:
    """The report and the owner's item results as a renderable document; items_withheld: why
    the gateway withheld them (the pool is live), "" when they are shown."""
    lineage = report.lineage
    return ReportDocument(
        submission_id=report.submission_id,
        model=sub.model.name + (f" {sub.model.version}" if sub.model.version else ""),
        track=common_pb2.Track.Name(sub.track).removeprefix("TRACK_").lower(),
        board="api" if sub.mode == common_pb2.SUBMISSION_MODE_API else "upload",
        pool_id=lineage.pool_id,
        created_at=report.created_at.ToDatetime().astimezone(),
        overall=report.overall,
        overall_low=_interval(report.overall, report.overall_low, report.overall_high)[0],
        overall_high=_interval(report.overall, report.overall_low, report.overall_high)[1],
        equated=report.equated if report.HasField("equated") else None,
        dimensions=tuple(
            DimensionRow(d.dimension, None, d.score, *_interval(d.score, d.low, d.high), d.datasets)
            for d in report.dimensions
        ),
        datasets=tuple(
            DatasetRow(
                d.dataset,
                d.dimension,
                d.score,
                *_interval(d.score, d.low, d.high),
                d.items,
                d.units,
                d.rule,
                d.metric or "n/a",  # reports built before the metric was recorded
                item_mean=d.item_mean,
            )
            for d in report.datasets
        ),
        items=tuple(
            ItemResult(
                i.item_id,
                i.dataset,
                i.score,
                "; ".join(p.parsed for p in i.parts if p.parsed),
            )
            for i in items
            if i.HasField("score")  # an item no judge could score has no score to show
        ),
        lineage={
            "pool": lineage.pool_id,
            "scorer version": lineage.scorer_version,
            "aggregator version": lineage.aggregator_version,
            "item scores digest": lineage.item_scores_digest,
            "model": lineage.model,
            "endpoint model": lineage.endpoint_model,
            "decoding": lineage.decoding,
            "judge models": ", ".join(lineage.judge_models),
            "rubric versions": ", ".join(lineage.rubric_versions),
            "calibrations": ", ".join(lineage.calibration_ids),
        },
        partial=report.partial,
        missing_dimensions=tuple(report.missing_dimensions),
        missing_datasets=tuple(report.missing_datasets),
        items_withheld=items_withheld,
        live_steps=tuple((d.dataset, d.step) for d in report.datasets) if report.live else (),
    )


async def item_results(
    s: Session, submission_id: str
) -> tuple[Sequence[report_pb2.ItemResult], str]:
    """The owner's item results, or none and the gateway's reason when it withholds them: a
    completed submission's (its report was read first) are refused with FAILED_PRECONDITION
    only while its pool is live, which is not an error of the report."""
    try:
        return await s.partner.item_results(submission_id), ""
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise
        return (), exc.details() or "the submission's pool is live"


async def report(args: argparse.Namespace, s: Session) -> int:
    partner = s.partner
    sub = await partner.get(args.submission)
    report_ = await partner.report(args.submission)
    items, withheld = await item_results(s, args.submission)
    doc = document(sub, report_, items, withheld)
    files = write_report(doc, Path(args.out))
    interval = f"[{doc.overall_low:.1f}, {doc.overall_high:.1f}]"
    emit(
        args,
        {
            "submission_id": doc.submission_id,
            "model": doc.model,
            "overall": doc.overall,
            "overall_low": doc.overall_low,
            "overall_high": doc.overall_high,
            "equated": doc.equated,
            "partial": doc.partial,
            "missing_dimensions": list(doc.missing_dimensions),
            "missing_datasets": list(doc.missing_datasets),
            "items_withheld": doc.items_withheld,
            "files": {name: str(path) for name, path in files.items()},
        },
        [f"{doc.model}: overall {doc.overall:.1f} {interval}"]
        + ([partial_text(doc)] if doc.partial else [])
        + ([f"No items.csv: {doc.items_withheld}"] if doc.items_withheld else [])
        + [f"  {name:14s} {path}" for name, path in files.items()],
    )
    return EXIT_OK


def _missing(e: leaderboard_service_pb2.LeaderboardEntry) -> str:
    """A partial entry's mark: the dimensions it has of its track's, or the datasets missing."""
    if e.missing_dimensions:
        return f"{len(e.dimensions)} of {len(e.dimensions) + len(e.missing_dimensions)} dimensions"
    return f"{len(e.missing_datasets)} datasets missing"


def entry_dict(e: leaderboard_service_pb2.LeaderboardEntry) -> dict[str, Any]:
    return {
        "rank": e.rank,
        "group": e.group,
        "submission_id": e.submission_id,
        "tenant_id": e.tenant_id,
        "model_name": e.model_name,
        "model_version": e.model_version,
        "organisation": e.organisation,
        "open_source": e.open_source,
        "parameter_count": e.parameter_count,
        "release_date": e.release_date,
        "cycle": e.cycle,
        "pool_id": e.pool_id,
        "overall": e.overall,
        "overall_low": e.overall_low,
        "overall_high": e.overall_high,
        "equated": e.equated if e.HasField("equated") else None,
        "partial": e.partial,
        "missing_dimensions": list(e.missing_dimensions),
        "missing_datasets": list(e.missing_datasets),
        "dimensions": [
            {"dimension": d.dimension, "score": d.score, "low": d.low, "high": d.high}
            for d in e.dimensions
        ],
        "published_at": iso(e, "published_at"),
    }


async def leaderboard(args: argparse.Namespace, s: Session) -> int:
    if not 1 <= args.limit <= 10_000:
        raise usage_error("--limit must be within 1-10000")
    entries: list[leaderboard_service_pb2.LeaderboardEntry] = []
    token = ""
    total = 0
    while len(entries) < args.limit:
        page = await s.leaderboard.ListLeaderboard(
            leaderboard_service_pb2.ListLeaderboardRequest(
                track=TRACKS[args.track],
                board=BOARDS[args.board],
                cycle=args.cycle,
                rule=RULES[args.rule],
                page_size=min(500, args.limit - len(entries)),
                page_token=token,
            )
        )
        entries.extend(page.entries)
        total = page.total
        token = page.next_page_token
        if not token:
            break
    data = {
        "track": args.track,
        "board": args.board,
        "cycle": args.cycle,
        "rule": args.rule,
        "total": total,
        "entries": [entry_dict(e) for e in entries],
    }
    title = f"{args.track} / {args.board} board" + (f", cycle {args.cycle}" if args.cycle else "")
    emit(args, data, board_lines(title, entries, total, show_cycle=not args.cycle))
    return EXIT_OK


def board_lines(
    title: str,
    entries: list[leaderboard_service_pb2.LeaderboardEntry],
    total: int,
    show_cycle: bool = True,
) -> list[str]:
    """A leaderboard page as text: a title line, then rank, model, organisation, overall and
    its interval (equated and cycle columns when some entry has one)."""
    if not entries:
        return [f"{title}: no published submissions"]
    equated = any(e.HasField("equated") for e in entries)
    show_cycle = show_cycle and any(e.cycle for e in entries)
    partial = any(e.partial for e in entries)
    header = ["rank", "model", "organisation", "overall", "95% interval"]
    header += ["equated"] if equated else []
    header += ["cycle"] if show_cycle else []
    header += ["partial"] if partial else []
    rows = []
    for e in entries:
        row = [
            "-" if e.partial else str(e.rank),  # a partial entry is never ranked
            " ".join(x for x in (e.model_name, e.model_version) if x),
            e.organisation or e.tenant_id,
            f"{e.overall:.1f}",
            f"[{e.overall_low:.1f}, {e.overall_high:.1f}]",
        ]
        if equated:
            row.append(f"{e.equated:.1f}" if e.HasField("equated") else "-")
        if show_cycle:
            row.append(e.cycle)
        if partial:
            row.append(_missing(e) if e.partial else "")
        rows.append(row)
    more = f" (first {len(entries)} of {total})" if total > len(entries) else ""
    return [f"{title}{more}", *table(header, rows, right={0, 3})]
