"""`python -m medbench_client`: task-bank administration from files, and pool rotation (the older
maintainer commands; `medbench admin ...`, medbench_client.admin_cli, covers them and more).

import-medbench POOL.jsonl... [--gold-dir DIR] [--images-dir DIR]
import-jsonl FILE --map SPEC        import-csv FILE --map SPEC
datasets [--track llm] [--version N | --pool ID]
rotate --track llm --board upload --cycle 2026-11
disclose POOL_ID      (release its per-item results; retire its question groups for ever)
registry show [--version N] [--dataset NAME | --json]     registry versions [--limit N]
registry put DATASET.json --revises N [--note TEXT]
quarantine list [--status held]     quarantine retry ENTRY    quarantine drop ENTRY  (--gateway)
probing [--tenant T] [--pool ID]    probing findings: near-identical runs on a pool (--gateway)
calibration RUBRIC [--version N] [--measure]   a rubric's calibration report (--judge-scorer)
judging-cost SUBMISSION_ID...    what judging cost: per dataset and judge model (--judge-scorer)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from medbench.common.v1 import common_pb2
from medbench.judge.v1 import judge_service_pb2
from medbench.ops.v1 import (
    probing_service_pb2,
    probing_service_pb2_grpc,
    quarantine_service_pb2,
    quarantine_service_pb2_grpc,
)
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_client.api import JudgeAdmin, channel, message_batches, service_stub
from medbench_client.bank_files import TRACKS, read_jsonl
from medbench_client.importers import (
    FieldMapping,
    ImportRow,
    LineError,
    ReadResult,
    read_csv_mapped,
    read_jsonl_mapped,
    read_medbench_pool,
    summarise,
)
from medbench_client.registry_cli import run_put, run_show, run_versions
from medbench_runtime.images import FORMATS, image_type

BOARDS = {"api": taskpool_pb2.BOARD_API, "upload": taskpool_pb2.BOARD_UPLOAD}
BATCH = 2000


def image_file(images_dir: Path, path: str) -> tuple[Path | None, str]:
    """The file path names inside images_dir, or (None, why not): an absolute path, or one that
    resolves (`..`, symlinks followed) outside the folder, is refused."""
    folder = images_dir.resolve()
    if Path(path).is_absolute():
        return None, f"image {path} is an absolute path; give it relative to {images_dir}"
    try:
        resolved = (folder / path).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL
        return None, f"image {path} cannot be resolved: {exc}"
    if not resolved.is_relative_to(folder):
        return None, f"image {path} resolves outside {images_dir}; only files inside it are read"
    return resolved, ""


def to_item(row: ImportRow, images_dir: Path | None) -> tuple[taskpool_pb2.ImportItem, str, bool]:
    """An ImportRow as an ImportItem, a problem text ("" when none) and whether the problem is
    only a missing image file (--allow-missing-images imports the item without it). Images are
    read only from inside images_dir, and only when their bytes are a PNG, JPEG, GIF or WebP."""
    item = taskpool_pb2.ImportItem(
        task=taskpool_pb2.Task(
            item_id=row.item_id,
            dataset=row.dataset,
            source=row.source,
            specialties=row.specialties,
            question=row.question,
            image_paths=row.image_paths,
            answer_format=row.answer_format,
            group_id=row.group_id,
            provenance=row.provenance,
            licence=row.licence,
            messages=[taskpool_pb2.ChatMessage(role=r, content=c) for r, c in row.messages],
        ),
        ref=f"{row.file}:{row.line}",
    )
    if row.reference:
        item.key.CopyFrom(taskpool_pb2.SealedKey(item_id=row.item_id, reference=row.reference))
    missing = ""
    if images_dir is not None:
        for path in row.image_paths:
            file, refused = image_file(images_dir, path)
            if file is None:
                return item, refused, False
            if not file.is_file():
                missing = f"image {path} not found under {images_dir}"
                continue
            content = file.read_bytes()
            media_type = image_type(content)
            if media_type is None:
                return item, f"image {path} is not a {FORMATS} file (by its first bytes)", False
            item.images.append(
                taskpool_pb2.ImageBlob(path=path, content=content, media_type=media_type)
            )
    return item, missing, True


def maintainer_channel(address: str) -> grpc.aio.Channel:
    """A channel carrying the maintainer's API key (--key or MEDBENCH_API_KEY)."""
    return channel(address, os.environ.get("MEDBENCH_API_KEY") or None)


async def send_items(
    stub: taskpool_service_pb2_grpc.TaskPoolServiceStub, items: Sequence[taskpool_pb2.ImportItem]
) -> taskpool_service_pb2.ImportTasksResponse:
    """ImportTasks: items streamed in messages of at most BATCH items (and MESSAGE_BYTES)."""

    async def messages() -> AsyncIterator[taskpool_service_pb2.ImportTasksRequest]:
        for part in message_batches(items, BATCH):
            yield taskpool_service_pb2.ImportTasksRequest(items=part)

    response: taskpool_service_pb2.ImportTasksResponse = await stub.ImportTasks(messages())
    return response


def _refs(refs: Sequence[str], shown: int = 3) -> str:
    more = f" and {len(refs) - shown} more" if len(refs) > shown else ""
    return ", ".join(refs[:shown]) + more


def unknown_datasets(
    rows: Sequence[ImportRow], known: Sequence[str]
) -> tuple[list[ImportRow], list[str]]:
    """The rows naming a dataset of the registry (or none: a source tag the rotator resolves),
    and one line per unknown dataset, naming its lines and the known datasets: such rows are
    not sent, since every one of them would be rejected for the same reason."""
    names = set(known)
    kept: list[ImportRow] = []
    unknown: dict[str, list[str]] = {}
    for row in rows:
        if row.dataset and row.dataset not in names:
            unknown.setdefault(row.dataset, []).append(f"{row.file}:{row.line}")
        else:
            kept.append(row)
    lines = [
        f"unknown dataset {name!r} in {len(refs)} lines ({_refs(refs)}), not sent; "
        f"known datasets: {', '.join(sorted(names))}"
        for name, refs in unknown.items()
    ]
    return kept, lines


def grouped_rejections(rejected: Sequence[taskpool_pb2.ImportRejection]) -> list[str]:
    """The server's rejections, one line per distinct (field, reason): the reason's leading
    "item <id>: " is dropped so that lines refused for the same cause are counted together."""
    groups: dict[tuple[str, str], list[str]] = {}
    for r in rejected:
        reason = r.reason.removeprefix(f"item {r.item_id}: ") if r.item_id else r.reason
        groups.setdefault((r.field, reason), []).append(r.ref or r.item_id)
    return [
        f"  {refs[0]}: {field}: {reason}"
        if len(refs) == 1
        else f"  {len(refs)} lines ({_refs(refs)}): {field}: {reason}"
        for (field, reason), refs in groups.items()
    ]


def report(
    read: ReadResult,
    response: taskpool_service_pb2.ImportTasksResponse | None,
    problems: Sequence[LineError],
    refused: Sequence[str] = (),
) -> str:
    lines = [summarise(read)]
    lines += [f"  {line}" for line in refused]
    for p in problems:
        lines.append(f"  {p.file}:{p.line}: {p.field}: {p.reason}")
    if response is not None:
        lines.append(
            f"server: {response.imported} imported, {response.new_versions} new versions, "
            f"{response.unchanged} unchanged, {len(response.rejected)} rejected, "
            f"{response.images_stored} images stored"
        )
        lines += grouped_rejections(response.rejected)
    return "\n".join(lines)


async def import_read(
    stub: taskpool_service_pb2_grpc.TaskPoolServiceStub,
    read: ReadResult,
    images_dir: Path | None,
    allow_missing_images: bool,
) -> tuple[taskpool_service_pb2.ImportTasksResponse | None, list[LineError], list[str]]:
    """Sends the rows read (those naming a known dataset, with their images): the server's
    response (None when nothing was sent), the lines not sent for their images, and one line
    per unknown dataset (see unknown_datasets)."""
    items, problems = [], []
    refused: list[str] = []
    rows: Sequence[ImportRow] = read.rows
    if any(row.dataset for row in read.rows):
        listing = await stub.ListDatasets(taskpool_service_pb2.ListDatasetsRequest())
        rows, refused = unknown_datasets(read.rows, [d.dataset for d in listing.datasets])
    for row in rows:
        item, problem, only_missing = to_item(row, images_dir)
        if problem and not (only_missing and allow_missing_images):
            problems.append(LineError(row.file, row.line, "img_path", problem))
            continue
        items.append(item)
    response = await send_items(stub, items) if items else None
    return response, problems, refused


async def run_import(
    address: str, read: ReadResult, images_dir: Path | None, allow_missing_images: bool
) -> int:
    stub = service_stub(taskpool_service_pb2_grpc.TaskPoolServiceStub, maintainer_channel(address))
    response, problems, refused = await import_read(stub, read, images_dir, allow_missing_images)
    print(report(read, response, problems, refused))
    rejected = len(response.rejected) if response else 0
    return 1 if (read.errors or problems or refused or rejected) else 0


async def run_datasets(address: str, track: str | None, version: int = 0, pool: str = "") -> int:
    stub = service_stub(taskpool_service_pb2_grpc.TaskPoolServiceStub, maintainer_channel(address))
    listing = await stub.ListDatasets(
        taskpool_service_pb2.ListDatasetsRequest(
            track=TRACKS[track] if track else common_pb2.TRACK_UNSPECIFIED,
            version=version,
            pool_id=pool,
        )
    )
    print(f"registry version {listing.registry_version}" + (f" (pool {pool})" if pool else ""))
    for d in listing.datasets:
        print(
            f"  {d.dataset:22} {d.dimension:28} {d.metric:34} bank {d.bank_items:7} "
            f"keyed {d.keyed_items:7}"
        )
    return 0


def leaked_items(path: Path) -> list[taskpool_pb2.LeakedItem]:
    """Lines of a leaked file: our download format ({"item_id", "question"}) or the MedBench
    upload format ({"question", "other": {"id"}}); lines without a question are skipped."""
    items = []
    for row in read_jsonl(path):
        found = row.get("other")
        other: dict[str, Any] = found if isinstance(found, dict) else {}
        item_id = row.get("item_id") or other.get("id") or ""
        if isinstance(row.get("question"), str) and row["question"]:
            items.append(taskpool_pb2.LeakedItem(item_id=str(item_id), question=row["question"]))
    return items


async def run_trace(address: str, path: Path) -> int:
    stub = service_stub(taskpool_service_pb2_grpc.TaskPoolServiceStub, maintainer_channel(address))
    items = leaked_items(path)

    async def messages() -> AsyncIterator[taskpool_service_pb2.TraceLeakRequest]:
        for part in message_batches(items, BATCH):
            yield taskpool_service_pb2.TraceLeakRequest(items=part)

    response = await stub.TraceLeak(messages())
    print(f"{path}: {response.lines} lines traced")
    for s in response.suspects:
        print(
            f"  tenant {s.tenant_id} submission {s.submission_id} pool {s.pool_id}: "
            f"matched {s.matched_items}/{s.checked_items}, canaries {s.canary_hits}, "
            f"chance {s.chance:.1e}"
        )
    if not response.suspects:
        print("  no download matches this file")
        return 1
    return 0


async def run_signals(address: str, tenant: str, pool: str, limit: int) -> int:
    """Prints leak signals (ListLeakSignals), one a line: time, tenant, submission, pool, item,
    dataset, kind and what the answer gave of the original's."""
    stub = service_stub(taskpool_service_pb2_grpc.TaskPoolServiceStub, maintainer_channel(address))
    response = await stub.ListLeakSignals(
        taskpool_service_pb2.ListLeakSignalsRequest(tenant_id=tenant, pool_id=pool, limit=limit)
    )
    for s in response.signals:
        print(
            f"{s.recorded_at.ToJsonString()} tenant {s.tenant_id} submission {s.submission_id} "
            f"pool {s.pool_id} item {s.item_id} ({s.dataset}, {s.kind}): {s.matched}"
        )
    print(f"{len(response.signals)} leak signals")
    return 0


def rotate_request(args: argparse.Namespace) -> taskpool_service_pb2.RotatePoolRequest:
    """The RotatePool request of the rotate command's arguments (both CLIs)."""
    return taskpool_service_pb2.RotatePoolRequest(
        track=TRACKS[args.track],
        board=BOARDS[args.board],
        cycle=args.cycle,
        seed=args.seed,
        groups_per_dataset=args.groups,
        exposure_cap=args.exposure_cap,
        anchors_per_dataset=args.anchors,
        datasets=args.dataset or [],
    )


async def run_rotate(address: str, args: argparse.Namespace) -> int:
    stub = service_stub(taskpool_service_pb2_grpc.TaskPoolServiceStub, maintainer_channel(address))
    response = await stub.RotatePool(rotate_request(args))
    pool = response.pool
    print(
        f"pool {pool.pool_id}: {pool.item_count} items, {pool.group_count} groups, "
        f"{pool.anchor_groups} anchors, seed {pool.seed}, digest {pool.digest[:16]}, "
        f"registry version {pool.registry_version}"
    )
    for shortfall in response.shortfalls:
        print(f"  short: {shortfall}")
    return 0


async def run_disclose(address: str, pool_id: str) -> int:
    """DisclosePool: a pool no board serves any more, its per-item results released."""
    stub = service_stub(taskpool_service_pb2_grpc.TaskPoolServiceStub, maintainer_channel(address))
    response = await stub.DisclosePool(taskpool_service_pb2.DisclosePoolRequest(pool_id=pool_id))
    pool = response.pool
    what = "disclosed" if response.newly_disclosed else "already disclosed"
    print(
        f"pool {pool.pool_id} {what} at {_when(pool.disclosed_at)} UTC: per-item results of its "
        f"submissions are released to their owners; {response.retired_groups} question groups "
        f"retired from rotation for ever"
    )
    return 0


def calibration_text(c: judge_service_pb2.Calibration) -> str:
    """A calibration report as a maintainer reads it: the decision and why, n, both kappas
    with their intervals, per dimension, the confusion matrix, the physicians' ceiling and the
    agreement per criterion."""

    def kappa(k: judge_service_pb2.KappaInterval) -> str:
        return f"{k.kappa:.3f} [{k.low:.3f}, {k.high:.3f}]"

    decision = "CALIBRATED" if c.calibrated else "NOT CALIBRATED"
    lines = [
        f"{c.judge} on {c.rubric_id} v{c.rubric_version} ({c.rubric_hash[:12]}): {decision}",
        f"  {c.reason}" if c.reason else "",
        f"  rated answers {c.answers} (ratings {c.n}; minimum {c.min_ratings}), threshold "
        f"{c.threshold:.2f} on the lower bound of {c.gated_on or 'quadratic'} kappa",
        f"  quadratic kappa {kappa(c.quadratic)}   unweighted kappa {kappa(c.unweighted)}"
        f"   ({c.interval_method})",
        f"  judge failures {c.judge_failures}; measured {_when(c.measured_at)} UTC",
    ]
    for d in c.dimensions:
        mark = "pass" if d.passed else "FAIL"
        lines.append(
            f"  {d.dimension:<28} {mark}  answers {d.answers:>5}  quadratic {kappa(d.quadratic)}"
            f"  unweighted {kappa(d.unweighted)}"
        )
    if c.confusion:
        bins = [f"{b:g}" for b in c.score_bins]
        lines.append("  confusion (rows: judge score, columns: physician score)")
        lines.append("  " + " " * 6 + "".join(f"{b:>6}" for b in bins))
        for b, row in zip(bins, c.confusion, strict=False):
            lines.append(f"  {b:>6}" + "".join(f"{n:>6}" for n in row.counts))
    if c.HasField("physician_ceiling") and c.physician_ceiling.answers:
        p = c.physician_ceiling
        lines.append(
            f"  physician-physician ceiling: quadratic kappa {kappa(p.quadratic)} over "
            f"{p.answers} double-rated answers ({p.pairs} pairs)"
        )
    if c.criteria:
        lines.append("  per criterion (judge vs physician; reported, not gating)")
    for k in c.criteria:
        agreed = (
            f"quadratic {kappa(k.quadratic)}  unweighted {kappa(k.unweighted)}"
            if k.n
            else "no answer scored per criterion by both"
        )
        lines.append(f"  {k.criterion:<28} n {k.n:>5}  answers {k.answers:>5}  {agreed}")
    return "\n".join(line for line in lines if line)


async def run_calibration(address: str, rubric: str, version: int, measure: bool) -> int:
    """GetCalibration (or Calibrate, measuring again) of a rubric version: the report."""
    admin = JudgeAdmin(maintainer_channel(address))
    call = admin.calibrate if measure else admin.calibration
    print(calibration_text(await call(rubric, version)))
    return 0


def judging_cost_text(cost: judge_service_pb2.JudgingCost) -> str:
    """A submission's judging cost as a maintainer reads it (GetJudgingCost): per dataset and
    judge model, each dataset over its judges, and the submission's total: items, calls, cache
    hits, prompt and completion tokens, tokens and estimated GPU-seconds per item, structured
    verdicts and failures."""
    header = (
        "dataset", "judge model", "items", "calls", "cache hits", "prompt tok",
        "completion tok", "tok/item", "GPU-s", "GPU-s/item", "structured", "failures",
    )  # fmt: skip
    rows = [header]
    models = {(r.dataset, r.judge_model) for r in cost.rows if r.judge_model}
    for r in cost.rows:
        alone = sum(1 for d, _ in models if d == r.dataset) == 1
        if r.dataset and not r.judge_model and alone:
            continue  # a dataset with one judge: its row over judges says the same again
        per_item = max(r.items, 1)
        rows.append(
            (
                r.dataset or "(submission)",
                r.judge_model or "(all judges)",
                f"{r.items:,}",
                f"{r.calls:,}",
                f"{r.cache_hits:,}",
                f"{r.prompt_tokens:,}",
                f"{r.completion_tokens:,}",
                f"{(r.prompt_tokens + r.completion_tokens) / per_item:,.0f}",
                f"{r.gpu_seconds:,.1f}",
                f"{r.gpu_seconds / per_item:,.2f}",
                f"{r.structured_verdicts:,}",
                f"{r.failures:,}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        f"Judging cost of {cost.submission_id} (tokens as the judge servers reported them; "
        "GPU-seconds estimated: call time x the judge's declared GPUs, an upper estimate)"
    ]
    for row in rows:
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


async def run_judging_cost(address: str, submission_ids: Sequence[str]) -> int:
    """GetJudgingCost of each submission: its cost table."""
    admin = JudgeAdmin(maintainer_channel(address))
    texts = []
    for sid in submission_ids:
        request = judge_service_pb2.GetJudgingCostRequest(submission_id=sid)
        texts.append(judging_cost_text(await admin.stub.GetJudgingCost(request)))
    print("\n\n".join(texts))
    return 0


def _when(ts: object) -> str:
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if ts.seconds else "-"  # type: ignore[attr-defined]


async def run_quarantine(address: str, args: argparse.Namespace) -> int:
    """Lists quarantined events, or retries or drops one (audited on the gateway)."""
    stub = service_stub(
        quarantine_service_pb2_grpc.QuarantineServiceStub, maintainer_channel(address)
    )
    if args.action in ("retry", "drop"):
        call = stub.RetryQuarantined if args.action == "retry" else stub.DropQuarantined
        entry = await call(quarantine_service_pb2.QuarantinedEntryRequest(entry_id=args.entry))
        print(f"{entry.entry_id}: {entry.status} ({entry.service} {entry.source} {entry.topic})")
        return 0
    token, shown = "", 0
    while True:
        page = await stub.ListQuarantined(
            quarantine_service_pb2.ListQuarantinedRequest(
                status=args.status, service=args.service, page_size=200, page_token=token
            )
        )
        if not shown:
            print(f"{page.held} held")
        for e in page.events:
            shown += 1
            print(
                f"{e.entry_id}  {e.status:<7} {_when(e.last_at)}  {e.service}/{e.source}  "
                f"{e.topic}  key {e.key}  {e.size} bytes  x{e.times}\n    {e.reason}"
            )
        token = page.next_page_token
        if not token or shown >= args.limit:
            return 0


async def run_probing(address: str, args: argparse.Namespace) -> int:
    """Lists probing findings, newest first: pairs of a tenant's submissions on one pool whose
    answers differ in at most max(5, 2% of the items)."""
    stub = service_stub(probing_service_pb2_grpc.ProbingServiceStub, maintainer_channel(address))
    token, shown = "", 0
    while True:
        page = await stub.ListProbingFindings(
            probing_service_pb2.ListProbingFindingsRequest(
                tenant_id=args.tenant, pool_id=args.pool, page_size=200, page_token=token
            )
        )
        for f in page.findings:
            shown += 1
            track = common_pb2.Track.Name(f.track).removeprefix("TRACK_").lower()
            differing = ", ".join(
                f"{d.dataset} {d.differing}/{d.items}" for d in f.datasets if d.differing
            )
            print(
                f"{_when(f.found_at)}  tenant {f.tenant_id}  pool {f.pool_id} ({track})\n"
                f"    {f.earlier_submission_id} -> {f.later_submission_id}: {f.differing} of "
                f"{f.items} answers differ (threshold {f.threshold})"
                + (f": {differing}" if differing else ": identical answers")
            )
        token = page.next_page_token
        if not token or shown >= args.limit:
            if not shown:
                print("no probing findings")
            return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m medbench_client",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rotator", default="127.0.0.1:50052", help="rotator host:port")
    parser.add_argument("--gateway", default="127.0.0.1:50051", help="gateway host:port")
    parser.add_argument("--judge-scorer", default="127.0.0.1:50055", help="judge scorer host:port")
    parser.add_argument(
        "--key", default="", help="maintainer API key (default: the MEDBENCH_API_KEY variable)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    medbench = sub.add_parser("import-medbench", help="MedBench upload-format pool files")
    medbench.add_argument("pool", nargs="+", type=Path)
    medbench.add_argument(
        "--gold-dir",
        type=Path,
        help="gold files (same names, answers filled) line-aligned with pools",
    )
    medbench.add_argument("--images-dir", type=Path)
    medbench.add_argument("--allow-missing-images", action="store_true")
    medbench.add_argument("--provenance", default="")
    medbench.add_argument("--licence", default="")
    for name in ("import-jsonl", "import-csv"):
        generic = sub.add_parser(name, help=f"{name[7:]} file with a field mapping")
        generic.add_argument("file", type=Path)
        generic.add_argument(
            "--map",
            required=True,
            help="e.g. item_id=id,question=prompt,reference=answer,dataset=:MedExam",
        )
        generic.add_argument("--images-dir", type=Path)
        generic.add_argument("--allow-missing-images", action="store_true")
    datasets = sub.add_parser("datasets", help="registry datasets with bank counts")
    datasets.add_argument("--track", choices=sorted(TRACKS))
    datasets.add_argument("--version", type=int, default=0, help="registry version (current)")
    datasets.add_argument("--pool", default="", help="a pool's datasets, under its version")
    registry = sub.add_parser("registry", help="the dataset registry's versions; put a dataset")
    registry_actions = registry.add_subparsers(dest="action", required=True)
    show = registry_actions.add_parser("show", help="a registry version (the current one)")
    show.add_argument("--version", type=int, default=0)
    shown = show.add_mutually_exclusive_group()
    shown.add_argument("--dataset", default="", help="print one dataset as JSON, to edit and put")
    shown.add_argument("--json", action="store_true", help="the whole version as a registry file")
    put = registry_actions.add_parser(
        "put", help="add a dataset or revise one: makes the next version (audited)"
    )
    put.add_argument("file", type=Path, help="one dataset as JSON (a registry 'datasets' entry)")
    put.add_argument(
        "--revises",
        type=int,
        required=True,
        help="the version you read (ABORTED if the registry has changed since)",
    )
    put.add_argument("--note", default="", help="why (kept with the version)")
    versions = registry_actions.add_parser("versions", help="registry versions, newest first")
    versions.add_argument("--limit", type=int, default=50)
    rotate = sub.add_parser("rotate", help="rotate the pool of a track's board")
    rotate.add_argument("--track", choices=sorted(TRACKS), required=True)
    rotate.add_argument("--board", choices=sorted(BOARDS), required=True)
    rotate.add_argument("--cycle", required=True)
    rotate.add_argument("--seed", type=int, default=0)
    rotate.add_argument("--groups", type=int, default=0, help="groups per dataset (30)")
    rotate.add_argument("--exposure-cap", type=int, default=0, help="(3)")
    rotate.add_argument("--anchors", type=int, default=0, help="anchors per dataset (3)")
    rotate.add_argument("--dataset", action="append")
    disclose = sub.add_parser(
        "disclose",
        help="disclose a pool no board serves: release its per-item results, retire its groups",
    )
    disclose.add_argument("pool_id")
    leak = sub.add_parser("trace-leak", help="name the download a leaked prompt file comes from")
    leak.add_argument("file", type=Path)
    signals = sub.add_parser(
        "leak-signals", help="canaries answered with their original's right answer, newest first"
    )
    signals.add_argument("--tenant", default="")
    signals.add_argument("--pool", default="")
    signals.add_argument("--limit", type=int, default=100)
    held = sub.add_parser("quarantine", help="events held for a maintainer: list, retry, drop")
    held_actions = held.add_subparsers(dest="action", required=True)
    listing = held_actions.add_parser("list", help="entries, newest first")
    listing.add_argument("--status", choices=["held", "retried", "dropped"], default="")
    listing.add_argument("--service", default="")
    listing.add_argument("--limit", type=int, default=200)
    for action in ("retry", "drop"):
        one = held_actions.add_parser(action, help=f"{action} one held entry (audited)")
        one.add_argument("entry")
    probing = sub.add_parser(
        "probing", help="probing findings: a tenant's near-identical runs on one pool"
    )
    probing.add_argument("--tenant", default="", help="only this tenant's findings")
    probing.add_argument("--pool", default="", help="only findings on this pool")
    probing.add_argument("--limit", type=int, default=200)
    calibration = sub.add_parser(
        "calibration", help="a rubric's calibration report: the gate's decision and why"
    )
    calibration.add_argument("rubric")
    calibration.add_argument("--version", type=int, default=0, help="0: the latest")
    calibration.add_argument("--measure", action="store_true", help="calibrate again first")
    cost = sub.add_parser(
        "judging-cost", help="what judging submissions cost: tokens, calls, cache hits, GPU-s"
    )
    cost.add_argument("submission_id", nargs="+")
    args = parser.parse_args(argv)
    if args.key:
        os.environ["MEDBENCH_API_KEY"] = args.key
    try:
        if args.command == "import-medbench":
            read = ReadResult.combine(
                [
                    read_medbench_pool(
                        pool,
                        args.gold_dir / pool.name if args.gold_dir else None,
                        provenance=args.provenance,
                        licence=args.licence,
                    )
                    for pool in args.pool
                ]
            )
            return asyncio.run(
                run_import(args.rotator, read, args.images_dir, args.allow_missing_images)
            )
        if args.command in ("import-jsonl", "import-csv"):
            mapping = FieldMapping.from_spec(args.map)
            reader = read_jsonl_mapped if args.command == "import-jsonl" else read_csv_mapped
            return asyncio.run(
                run_import(
                    args.rotator,
                    reader(args.file, mapping),
                    args.images_dir,
                    args.allow_missing_images,
                )
            )
        if args.command == "trace-leak":
            return asyncio.run(run_trace(args.rotator, args.file))
        if args.command == "leak-signals":
            return asyncio.run(run_signals(args.rotator, args.tenant, args.pool, args.limit))
        if args.command == "quarantine":
            return asyncio.run(run_quarantine(args.gateway, args))
        if args.command == "probing":
            return asyncio.run(run_probing(args.gateway, args))
        if args.command == "disclose":
            return asyncio.run(run_disclose(args.rotator, args.pool_id))
        if args.command == "calibration":
            return asyncio.run(
                run_calibration(args.judge_scorer, args.rubric, args.version, args.measure)
            )
        if args.command == "judging-cost":
            return asyncio.run(run_judging_cost(args.judge_scorer, args.submission_id))
        if args.command == "datasets":
            return asyncio.run(run_datasets(args.rotator, args.track, args.version, args.pool))
        if args.command == "registry":
            key = os.environ.get("MEDBENCH_API_KEY") or None
            if args.action == "show":
                return asyncio.run(
                    run_show(args.rotator, key, args.version, args.dataset, args.json)
                )
            if args.action == "put":
                return asyncio.run(run_put(args.rotator, key, args.file, args.revises, args.note))
            return asyncio.run(run_versions(args.rotator, key, args.limit))
        return asyncio.run(run_rotate(args.rotator, args))
    except grpc.aio.AioRpcError as exc:
        print(f"{args.command} failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2
