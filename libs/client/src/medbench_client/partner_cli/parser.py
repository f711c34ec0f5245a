"""The partner CLI's command line: every command's flags (argparse) and the table that maps a
command's name to the function that runs it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from medbench_client.cli_files import MAX_BATCH
from medbench_client.partner_cli.account import usage, whoami
from medbench_client.partner_cli.errors import EXIT_USAGE
from medbench_client.partner_cli.images import images
from medbench_client.partner_cli.output import BOARDS, MODES, RULES, STATES, TRACKS
from medbench_client.partner_cli.results import leaderboard, report
from medbench_client.partner_cli.session import Session
from medbench_client.partner_cli.submissions import (
    list_submissions,
    publish,
    resume,
    status,
    submit,
    watch,
)
from medbench_client.partner_cli.transfer import download, upload

DESCRIPTION = "`medbench`: the partner command line, over the public gRPC API of the gateway only."

COMMANDS: dict[str, Callable[[argparse.Namespace, Session], Awaitable[int]]] = {
    "whoami": whoami,
    "submit": submit,
    "download": download,
    "images": images,
    "upload": upload,
    "watch": watch,
    "status": status,
    "list": list_submissions,
    "report": report,
    "publish": publish,
    "resume": resume,
    "leaderboard": leaderboard,
    "usage": usage,
}


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Connection and output options, accepted before and after the command's name."""
    default: Any = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--gateway",
        metavar="HOST:PORT",
        default=default,
        help="the gateway (else MEDBENCH_GATEWAY, else the profile)",
    )
    group.add_argument(
        "--key",
        metavar="KEY",
        default=default,
        help="API key (else MEDBENCH_API_KEY, else the profile); prefer those: "
        "a command line is visible to other users",
    )
    group.add_argument(
        "--profile",
        metavar="NAME",
        default=default,
        help="config file profile (else MEDBENCH_PROFILE, else the default one)",
    )
    group.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=default,
        help="connect with TLS (system roots unless --ca-file)",
    )
    group.add_argument(
        "--ca-file",
        metavar="PEM",
        default=default,
        help="CA certificates to verify the gateway with (implies --tls)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print machine-readable JSON on stdout (and nothing else)",
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"medbench: INVALID_ARGUMENT: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="medbench",
        description=DESCRIPTION,
        epilog="Exit codes: 0 ok, 1 other, 2 bad usage, 3 not found, 4 not ready or failed, "
        "5 unreachable, 6 unauthenticated or denied, 7 quota exhausted. See libs/client/CLI.md. "
        "Operators: `medbench admin -h` (tenants, keys, quotas, bank, pools, audit log).",
    )
    _common(parser, suppress=False)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(name: str, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        _common(sub, suppress=True)
        return sub

    conf = command("configure", "store the gateway and API key in a profile of the config file")
    conf.add_argument("--default", action="store_true", help="make the profile the default one")

    command("whoami", "show the key id, tenant and role the gateway sees (checks the setup)")

    sub = command("submit", "create a submission (idempotent on --request-id)")
    sub.add_argument("--model", required=True, help="model name (shown on the leaderboard)")
    sub.add_argument("--model-version", default="")
    sub.add_argument("--organisation", default="", help="organisation shown on the leaderboard")
    sub.add_argument("--open-source", action="store_true", help="the weights are public")
    sub.add_argument("--parameter-count", default="", help='e.g. "72B"')
    sub.add_argument("--release-date", default="", help="the model's release date, YYYY-MM-DD")
    sub.add_argument("--request-id", help="idempotency key (default: a new one, printed)")
    sub.add_argument("--track", choices=sorted(TRACKS), default="llm")
    sub.add_argument(
        "--mode",
        choices=sorted(MODES),
        help="upload (default) or api (the platform calls --endpoint-url)",
    )
    sub.add_argument("--endpoint-url", help="API mode: OpenAI-compatible base URL")
    sub.add_argument("--endpoint-model", help="API mode: model name sent to the endpoint")
    sub.add_argument(
        "--endpoint-key-env",
        metavar="VAR",
        help="API mode: environment variable holding the endpoint's API key",
    )
    sub.add_argument("--max-concurrency", type=int, help="API mode: requests at once (1-256)")
    sub.add_argument(
        "--self-test",
        action="store_true",
        help="API mode: use the declared decoding settings (not on leaderboards)",
    )
    sub.add_argument("--temperature", type=float, help="declared decoding setting")
    sub.add_argument("--max-tokens", type=int, help="declared decoding setting")
    sub.add_argument("--context-window", type=int, help="declared decoding setting")
    sub.add_argument("--top-p", type=float, help="declared decoding setting")

    dl = command("download", "write an upload-mode submission's prompts (and images) for answering")
    dl.add_argument("submission")
    dl.add_argument(
        "--out",
        required=True,
        help="jsonl: a JSONL file (a partial one is completed); medbench: a folder",
    )
    dl.add_argument(
        "--format",
        choices=("jsonl", "medbench"),
        default="jsonl",
        help="jsonl: one prompt per line (default); medbench: the platform's own upload files, "
        "one <Dataset>.jsonl per dataset (other.id = item id, img_path = the images)",
    )
    dl.add_argument(
        "--images",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fetch the images of multimodal items into images/ beside the prompts (default)",
    )

    up = command(
        "upload",
        "check answer files against the download, then upload them (JSONL {item_id, answer}, "
        "CSV item_id,answer, or the platform's files)",
    )
    up.add_argument("submission")
    up.add_argument(
        "answers",
        nargs="+",
        help="answer files, or folders of them (e.g. a --format medbench download)",
    )
    up.add_argument(
        "--manifest",
        help="the download to check against (its prompts file or folder; default: the download "
        "folder the answers lie in, else the submission's items as the gateway lists them)",
    )
    up.add_argument(
        "--skip-invalid",
        action="store_true",
        help="send the valid lines and leave the invalid ones out (all named in the problems "
        "file); without it, one invalid line stops the upload before anything is sent",
    )
    up.add_argument(
        "--check-only", action="store_true", help="check the answer files, send nothing"
    )
    up.add_argument(
        "--problems-file",
        help="where every problem is listed by file:line (default: beside the first answer "
        "file, <file>.medbench-problems.txt, or medbench-problems.txt inside a folder)",
    )
    up.add_argument(
        "--batch-size", type=int, default=500, help=f"answers per batch (1-{MAX_BATCH})"
    )
    up.add_argument(
        "--final",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="end the upload with the last batch (unanswered items score 0)",
    )
    up.add_argument("--retries", type=int, default=8, help="attempts per batch when unreachable")

    wa = command("watch", "follow a submission until it is COMPLETED (exit 0) or FAILED (4)")
    wa.add_argument("submission")
    wa.add_argument("--retries", type=int, default=8, help="reconnections in a row")

    st = command("status", "show a submission's state and counters")
    st.add_argument("submission")

    ls = command("list", "list the tenant's own submissions, newest first")
    ls.add_argument(
        "--state",
        action="append",
        default=[],
        type=str.upper,
        choices=STATES,
        metavar="STATE",
        help=f"only this state (repeat for several): {', '.join(STATES)}",
    )
    ls.add_argument("--track", choices=sorted(TRACKS), help="only this track (default: all)")
    ls.add_argument(
        "--board", choices=sorted(MODES), help="only the api or the upload board (default: both)"
    )
    ls.add_argument(
        "--since",
        metavar="DATE",
        help="created at or after: YYYY-MM-DD (UTC) or an ISO 8601 time",
    )
    ls.add_argument(
        "--until",
        metavar="DATE",
        help="created before: an ISO 8601 time, or YYYY-MM-DD (that day included)",
    )
    ls.add_argument("--limit", type=int, default=50, help="submissions at most (default 50)")

    rep = command("report", "write a submission's report (JSON, CSV, MD, HTML)")
    rep.add_argument("submission")
    rep.add_argument("--out", default=".", help="folder for the files (default: here)")

    pub = command("publish", "put a COMPLETED submission on its leaderboard (or take it off)")
    pub.add_argument("submission")
    pub.add_argument("--withdraw", action="store_true", help="take it off the leaderboard")

    res = command("resume", "API mode: send the items that failed for infrastructure reasons")
    res.add_argument("submission")

    lb = command("leaderboard", "show a leaderboard")
    lb.add_argument("--track", choices=sorted(TRACKS), default="llm")
    lb.add_argument(
        "--board",
        choices=sorted(BOARDS),
        default="api",
        help="api: the official board (default); upload: uploaded answers",
    )
    lb.add_argument("--cycle", default="", help="evaluation cycle (default: every cycle)")
    lb.add_argument(
        "--rule",
        choices=sorted(RULES),
        default="latest",
        help="which submission of a model is shown",
    )
    lb.add_argument("--limit", type=int, default=100, help="entries at most")

    command("usage", "show the tenant's quota usage")

    im = command("images", "fetch the image files of an upload-mode submission's items")
    im.add_argument("submission")
    im.add_argument("--out", required=True, help="folder: each image at <out>/<its image path>")
    im.add_argument("--retries", type=int, default=8, help="attempts in a row without progress")
    return parser
