"""The partner CLI's entry point: parse, run the command on a session, map failures to exit
codes."""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc

from medbench_client import admin_cli, cli_config
from medbench_client.cli_config import ConfigError
from medbench_client.cli_files import InputError
from medbench_client.partner_cli.account import configure
from medbench_client.partner_cli.errors import (
    EXIT_OTHER,
    EXIT_USAGE,
    CliError,
    exit_code_for,
    rpc_error_message,
)
from medbench_client.partner_cli.parser import COMMANDS, build_parser
from medbench_client.partner_cli.session import Session


async def run(args: argparse.Namespace) -> int:
    settings = cli_config.resolve(
        gateway=args.gateway,
        api_key=args.key,
        profile=args.profile,
        tls=args.tls,
        ca_file=args.ca_file,
    )
    session = Session(settings)
    try:
        return await COMMANDS[args.command](args, session)
    finally:
        await session.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["admin"]:
        # The operator commands (medbench_client.admin_cli): their own parser, flags and exit
        # codes, their options after `admin`.
        return admin_cli.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "configure":
            return configure(args)
        return asyncio.run(run(args))
    except grpc.aio.AioRpcError as exc:
        print(rpc_error_message(exc), file=sys.stderr)
        return exit_code_for(exc.code())
    except CliError as exc:
        print(f"medbench: {exc.code}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except (ConfigError, InputError) as exc:
        print(f"medbench: INVALID_ARGUMENT: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"medbench: IO_ERROR: {exc}", file=sys.stderr)
        return EXIT_OTHER
    except KeyboardInterrupt:
        print("medbench: CANCELLED: interrupted", file=sys.stderr)
        return 130
