"""Pools: rotate a board's pool, list the current pool of every board, show one pool, disclose
a pool out of service (the rotator's TaskPoolService). There is no RPC listing every pool ever
built: `pools list` asks GetPool for the current pool of each (track, board)."""

from __future__ import annotations

import argparse
from typing import Any

import grpc

from medbench.common.v1 import common_pb2
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2
from medbench_client.admin_cli.context import Context
from medbench_client.admin_cli.output import emit, enum_name, message_dict, stamp, table, when
from medbench_client.bank_files import TRACKS
from medbench_client.cli import BOARDS, rotate_request


def pool_row(p: taskpool_pb2.Pool) -> list[str]:
    return [
        p.pool_id,
        enum_name(common_pb2.Track, p.track),
        enum_name(taskpool_pb2.Board, p.board),
        p.cycle or "-",
        str(p.item_count),
        str(p.group_count),
        str(p.anchor_groups),
        p.registry_version,
        "current" if p.current else ("disclosed" if p.disclosed_at.seconds else "retired"),
        when(p.published_at),
    ]


POOL_HEADER = [
    "POOL", "TRACK", "BOARD", "CYCLE", "ITEMS", "GROUPS", "ANCHORS", "REGISTRY", "STATE",
    "PUBLISHED",
]  # fmt: skip


def pool_dict(p: taskpool_pb2.Pool) -> dict[str, Any]:
    return message_dict(p)


async def rotate(args: argparse.Namespace, ctx: Context) -> int:
    response = await ctx.taskpool.RotatePool(rotate_request(args))
    pool = response.pool
    lines = [
        f"pool {pool.pool_id}: {pool.item_count} items, {pool.group_count} groups, "
        f"{pool.anchor_groups} anchors, seed {pool.seed}, digest {pool.digest[:16]}, "
        f"registry version {pool.registry_version}",
        *(f"  short: {s}" for s in response.shortfalls),
    ]
    emit(args, {"pool": pool_dict(pool), "shortfalls": list(response.shortfalls)}, lines)
    return 0


async def pools_list(args: argparse.Namespace, ctx: Context) -> int:
    """The current pool of every (track, board); boards without one are named as such."""
    found, empty = [], []
    tracks = [args.track] if args.track else list(TRACKS)
    for track in tracks:
        for board in BOARDS:
            try:
                response = await ctx.taskpool.GetPool(
                    taskpool_service_pb2.GetPoolRequest(track=TRACKS[track], board=BOARDS[board])
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                empty.append({"track": track, "board": board})
                continue
            found.append(response.pool)
    lines = table(POOL_HEADER, [pool_row(p) for p in found], {4, 5, 6})
    lines += [f"{e['track']} {e['board']}: no pool" for e in empty]
    emit(args, {"pools": [pool_dict(p) for p in found], "without_pool": empty}, lines)
    return 0


async def pools_show(args: argparse.Namespace, ctx: Context) -> int:
    response = await ctx.taskpool.GetPool(taskpool_service_pb2.GetPoolRequest(pool_id=args.pool_id))
    p = response.pool
    lines = table(POOL_HEADER, [pool_row(p)], {4, 5, 6})
    lines += [f"  {d.dataset:<28} {d.items:>6}" for d in p.datasets]
    lines.append(f"digest {p.digest}, seed {p.seed}, method {p.method}")
    emit(args, pool_dict(p), lines)
    return 0


async def disclose(args: argparse.Namespace, ctx: Context) -> int:
    response = await ctx.taskpool.DisclosePool(
        taskpool_service_pb2.DisclosePoolRequest(pool_id=args.pool_id)
    )
    pool = response.pool
    what = "disclosed" if response.newly_disclosed else "already disclosed"
    text = (
        f"pool {pool.pool_id} {what} at {stamp(pool.disclosed_at)}: per-item results of its "
        f"submissions are released to their owners; {response.retired_groups} question groups "
        "retired from rotation for ever"
    )
    emit(args, message_dict(response), text)
    return 0
