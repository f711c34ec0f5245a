"""The task bank: the registry's datasets with bank counts, the registry's versions (show, put,
versions) and imports of item files (the MedBench upload format, or JSONL/CSV with a field
mapping), against the rotator's TaskPoolService. The readers and checks are those of
`python -m medbench_client` (cli.py, registry_cli.py, importers.py)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from medbench.common.v1 import common_pb2
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2
from medbench_client.admin_cli.context import Context
from medbench_client.admin_cli.output import emit, message_dict, table
from medbench_client.bank_files import TRACKS
from medbench_client.cli import import_read, report
from medbench_client.importers import (
    FieldMapping,
    ReadResult,
    read_csv_mapped,
    read_jsonl_mapped,
    read_medbench_pool,
)
from medbench_client.registry_cli import (
    dataset_from_file,
    registry_document,
    summary,
    version_line,
)


async def datasets(args: argparse.Namespace, ctx: Context) -> int:
    listing = await ctx.taskpool.ListDatasets(
        taskpool_service_pb2.ListDatasetsRequest(
            track=TRACKS[args.track] if args.track else common_pb2.TRACK_UNSPECIFIED,
            version=args.version,
            pool_id=args.pool,
        )
    )
    rows = [
        [d.dataset, d.dimension, d.metric, str(d.bank_items), str(d.keyed_items)]
        for d in listing.datasets
    ]
    head = f"registry version {listing.registry_version}" + (
        f" (pool {args.pool})" if args.pool else ""
    )
    emit(
        args,
        {
            "registry_version": listing.registry_version,
            "pool_id": args.pool,
            "datasets": [message_dict(d) for d in listing.datasets],
        },
        [head, *table(["DATASET", "DIMENSION", "METRIC", "BANK", "KEYED"], rows, {3, 4})],
    )
    return 0


async def registry_show(args: argparse.Namespace, ctx: Context) -> int:
    registry = await ctx.taskpool.GetRegistry(
        taskpool_service_pb2.GetRegistryRequest(version=args.version)
    )
    document = registry_document(registry)
    if args.dataset:
        found = next((d for d in document["datasets"] if d.get("name") == args.dataset), None)
        if found is None:
            known = ", ".join(d.name for d in registry.datasets)
            print(
                f"medbench: NOT_FOUND: registry version {registry.version.version} has no "
                f"dataset {args.dataset!r}; known: {known}",
                file=sys.stderr,
            )
            return 1
        emit(args, found, json.dumps(found, ensure_ascii=False, indent=2))
        return 0
    document["registry_version"] = message_dict(registry.version)
    emit(args, document, summary(registry))
    return 0


async def registry_put(args: argparse.Namespace, ctx: Context) -> int:
    dataset = dataset_from_file(args.file)
    put = await ctx.taskpool.PutDataset(
        taskpool_service_pb2.PutDatasetRequest(
            revises=args.revises, dataset=dataset, note=args.note
        )
    )
    v = put.version
    if put.unchanged:
        text = f"unchanged: registry version {v.version} already holds {dataset.name} as given"
    else:
        text = f"registry version {v.version}: {v.change} (current; new pools use it)"
    emit(args, message_dict(put), text)
    return 0


async def registry_versions(args: argparse.Namespace, ctx: Context) -> int:
    before, current = 0, 0
    found: list[taskpool_pb2.RegistryVersion] = []
    while len(found) < args.limit:
        page = await ctx.taskpool.ListRegistryVersions(
            taskpool_service_pb2.ListRegistryVersionsRequest(
                before=before, limit=min(200, args.limit - len(found))
            )
        )
        current = page.current
        found.extend(page.versions)
        if not page.versions or page.versions[-1].version <= 1:
            break
        before = page.versions[-1].version
    emit(
        args,
        {"current": current, "versions": [message_dict(v) for v in found]},
        [f"current registry version: {current}", *(version_line(v) for v in found)],
    )
    return 0


def read_files(args: argparse.Namespace) -> ReadResult:
    """The rows of the files the import command names, and the lines that could not be read."""
    if args.format == "medbench":
        return ReadResult.combine(
            read_medbench_pool(
                pool,
                args.gold_dir / pool.name if args.gold_dir else None,
                provenance=args.provenance,
                licence=args.licence,
            )
            for pool in args.files
        )
    mapping = FieldMapping.from_spec(args.map)
    reader = read_jsonl_mapped if args.format == "jsonl" else read_csv_mapped
    return ReadResult.combine(
        reader(path, mapping, provenance=args.provenance, licence=args.licence)
        for path in args.files
    )


async def import_files(args: argparse.Namespace, ctx: Context) -> int:
    """Imports the files; exit 1 when a line was not read, not sent or rejected by the server."""
    read = read_files(args)
    response, problems, refused = await import_read(
        ctx.taskpool, read, args.images_dir, args.allow_missing_images
    )
    data: dict[str, Any] = {
        "rows": len(read.rows),
        "unreadable": [asdict(e) for e in read.errors],
        "unknown_datasets": refused,
        "not_sent": [asdict(p) for p in problems],
        "server": message_dict(response) if response is not None else None,
    }
    emit(args, data, report(read, response, problems, refused))
    rejected = len(response.rejected) if response else 0
    return 1 if (read.errors or problems or refused or rejected) else 0
