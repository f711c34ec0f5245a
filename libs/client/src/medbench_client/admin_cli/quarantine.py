"""Quarantined events (held for an operator: list, retry, drop) and probing findings, on the
gateway's QuarantineService and ProbingService."""

from __future__ import annotations

import argparse

from medbench.ops.v1 import probing_service_pb2, quarantine_service_pb2
from medbench_client.admin_cli.context import Context
from medbench_client.admin_cli.output import emit, message_dict, table, when


async def quarantine_list(args: argparse.Namespace, ctx: Context) -> int:
    token, held = args.page_token, 0
    found: list[quarantine_service_pb2.QuarantinedEvent] = []
    while True:
        page = await ctx.quarantine.ListQuarantined(
            quarantine_service_pb2.ListQuarantinedRequest(
                status=args.status,
                service=args.service,
                page_size=min(200, args.limit - len(found)),
                page_token=token,
            )
        )
        held = page.held
        found.extend(page.events)
        token = page.next_page_token
        if not token or len(found) >= args.limit:
            break
    rows = [
        [
            e.entry_id,
            e.status,
            when(e.last_at),
            f"{e.service}/{e.source}",
            e.topic,
            str(e.times),
            e.reason[:60],
        ]
        for e in found
    ]
    lines = [f"{held} held"]
    lines += table(
        ["ENTRY", "STATUS", "LAST", "SERVICE/SOURCE", "TOPIC", "TIMES", "REASON"], rows, {5}
    )
    if token:
        lines.append(f"more: --page-token {token}")
    emit(
        args,
        {"held": held, "events": [message_dict(e) for e in found], "next_page_token": token},
        lines,
    )
    return 0


async def _resolve(args: argparse.Namespace, ctx: Context, retry: bool) -> int:
    stub = ctx.quarantine
    call = stub.RetryQuarantined if retry else stub.DropQuarantined
    e = await call(quarantine_service_pb2.QuarantinedEntryRequest(entry_id=args.entry))
    emit(args, message_dict(e), f"{e.entry_id}: {e.status} ({e.service} {e.source} {e.topic})")
    return 0


async def quarantine_retry(args: argparse.Namespace, ctx: Context) -> int:
    return await _resolve(args, ctx, True)


async def quarantine_drop(args: argparse.Namespace, ctx: Context) -> int:
    return await _resolve(args, ctx, False)


async def probing_list(args: argparse.Namespace, ctx: Context) -> int:
    """Probing findings, newest first: a tenant's near-identical runs on one pool."""
    token = ""
    found: list[probing_service_pb2.ProbingFinding] = []
    while True:
        page = await ctx.probing.ListProbingFindings(
            probing_service_pb2.ListProbingFindingsRequest(
                tenant_id=args.tenant, pool_id=args.pool, page_size=200, page_token=token
            )
        )
        found.extend(page.findings)
        token = page.next_page_token
        if not token or len(found) >= args.limit:
            break
    rows = [
        [
            when(f.found_at),
            f.tenant_id,
            f.pool_id,
            f"{f.earlier_submission_id} -> {f.later_submission_id}",
            f"{f.differing}/{f.items}",
            str(f.threshold),
        ]
        for f in found
    ]
    header = ["FOUND", "TENANT", "POOL", "SUBMISSIONS", "DIFFERING", "THRESHOLD"]
    emit(args, {"findings": [message_dict(f) for f in found]}, table(header, rows, {4, 5}))
    return 0
