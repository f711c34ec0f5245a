"""`medbench`: the partner command line, over the public gRPC API only.

    medbench --gateway HOST:PORT --tenant TENANT report SUBMISSION [--out DIR] [--json]

The gateway and tenant can also come from MEDBENCH_GATEWAY and MEDBENCH_TENANT. Exit codes:
0 done, 2 bad usage, 3 not found, 4 not ready (e.g. not COMPLETED), 5 unreachable, 1 other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from medbench.common.v1 import common_pb2
from medbench.report.v1 import report_pb2
from medbench.submission.v1 import submission_pb2
from medbench_client.api import PartnerClient, channel
from medbench_client.render import (
    DatasetRow,
    DimensionRow,
    ItemResult,
    ReportDocument,
    write_report,
)

EXIT_CODES = {
    grpc.StatusCode.NOT_FOUND: 3,
    grpc.StatusCode.FAILED_PRECONDITION: 4,
    grpc.StatusCode.UNAVAILABLE: 5,
    grpc.StatusCode.DEADLINE_EXCEEDED: 5,
    grpc.StatusCode.INVALID_ARGUMENT: 2,
}


def _interval(score: float, low: float, high: float) -> tuple[float, float]:
    """A report built before intervals existed has none (both 0): show the score alone."""
    return (score, score) if low == high == 0.0 else (low, high)


def document(
    sub: submission_pb2.Submission,
    report: report_pb2.Report,
    items: Sequence[report_pb2.ItemResult] = (),
) -> ReportDocument:
    """The report and the owner's item results as a renderable document."""
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
                "n/a",  # the public report does not name the metric yet
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
    )


async def report(args: argparse.Namespace) -> int:
    partner = PartnerClient(channel(args.gateway), args.tenant)
    sub = await partner.get(args.submission)
    report_ = await partner.report(args.submission)
    doc = document(sub, report_, await partner.item_results(args.submission))
    files = write_report(doc, Path(args.out))
    if args.json:
        print(json.dumps({name: str(path) for name, path in files.items()}))
    else:
        interval = f"[{doc.overall_low:.1f}, {doc.overall_high:.1f}]"
        print(f"{doc.model}: overall {doc.overall:.1f} {interval}")
        for name, path in files.items():
            print(f"  {name:14s} {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medbench", description=__doc__.split("\n")[0])
    parser.add_argument("--gateway", default=os.environ.get("MEDBENCH_GATEWAY", ""))
    parser.add_argument("--tenant", default=os.environ.get("MEDBENCH_TENANT", ""))
    commands = parser.add_subparsers(dest="command", required=True)
    rep = commands.add_parser("report", help="write a submission's report (JSON, CSV, MD, HTML)")
    rep.add_argument("submission")
    rep.add_argument("--out", default=".", help="folder for the files (default: here)")
    rep.add_argument("--json", action="store_true", help="print the written files as JSON")
    args = parser.parse_args(argv)
    if not args.gateway or not args.tenant:
        parser.error("--gateway and --tenant (or MEDBENCH_GATEWAY, MEDBENCH_TENANT) are needed")
    try:
        return asyncio.run(report(args))
    except grpc.aio.AioRpcError as exc:
        print(f"medbench: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return EXIT_CODES.get(exc.code(), 1)


if __name__ == "__main__":
    sys.exit(main())
