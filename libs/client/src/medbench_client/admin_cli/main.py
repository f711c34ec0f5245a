"""The operator CLI's entry point: parse, run the command with a context, map failures to exit
codes (0 ok, 1 refused: `medbench: <gRPC status>: <message>` on stderr, 2 bad usage)."""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc

from medbench_client.admin_cli.context import Context
from medbench_client.admin_cli.parser import COMMANDS, EXIT_USAGE, build_parser
from medbench_client.cli_config import ConfigError
from medbench_client.cli_files import InputError

EXIT_OK = 0
EXIT_REFUSED = 1


async def run(args: argparse.Namespace) -> int:
    ctx = Context.from_args(args)
    try:
        return await COMMANDS[(args.group, args.action)](args, ctx)
    finally:
        await ctx.close()


def main(argv: list[str] | None = None, prog: str = "medbench admin") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        return asyncio.run(run(args))
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        name = code.name if code is not None else "UNKNOWN"
        print(f"medbench: {name}: {exc.details() or '(no details)'}", file=sys.stderr)
        return EXIT_REFUSED
    except (ConfigError, InputError, ValueError) as exc:
        print(f"medbench: INVALID_ARGUMENT: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"medbench: IO_ERROR: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print("medbench: CANCELLED: interrupted", file=sys.stderr)
        return 130
