"""The partner CLI's seams: the parser builds every command and hands it to its function, the
session opens one channel when first used, and retries are bounded and noted on stderr."""

from __future__ import annotations

import argparse
import inspect
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from medbench_client import partner_cli
from medbench_client.cli_config import Settings
from medbench_client.partner_cli import (
    account,
    images,
    parser,
    results,
    session,
    submissions,
    transfer,
)
from medbench_client.partner_cli.errors import EXIT_USAGE, CliError
from tests.libs.client.test_partner_cli_unit import KEY_A, rpc_error

# The smallest valid command line of every command, and the module that runs it.
MINIMAL = {
    "configure": ([], account),
    "whoami": ([], account),
    "usage": ([], account),
    "submit": (["--model", "m"], submissions),
    "status": (["sub_1"], submissions),
    "watch": (["sub_1"], submissions),
    "publish": (["sub_1"], submissions),
    "resume": (["sub_1"], submissions),
    "list": ([], submissions),
    "download": (["sub_1", "--out", "p.jsonl"], transfer),
    "upload": (["sub_1", "a.jsonl"], transfer),
    "images": (["sub_1", "--out", "img"], images),
    "report": (["sub_1"], results),
    "leaderboard": ([], results),
}


def _subcommands(root: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_has_a_parser_and_a_function_and_nothing_else() -> None:
    built = _subcommands(parser.build_parser())
    assert set(built) == set(MINIMAL)
    # configure runs before any session exists; every other command gets one.
    assert set(parser.COMMANDS) == set(MINIMAL) - {"configure"}


@pytest.mark.parametrize("name", sorted(MINIMAL))
def test_the_parser_builds_each_command_with_the_shared_options_after_its_name(
    name: str,
) -> None:
    extra, module = MINIMAL[name]
    argv = [name, *extra, "--gateway", "gw:1", "--key", KEY_A, "--json", "--no-tls"]
    args = parser.build_parser().parse_args(argv)
    assert args.command == name
    assert (args.gateway, args.key, args.json, args.tls) == ("gw:1", KEY_A, True, False)
    run = account.configure if name == "configure" else parser.COMMANDS[name]
    assert run.__module__ == module.__name__
    assert inspect.iscoroutinefunction(run) is (name != "configure")


def test_options_before_the_command_reach_it_and_its_own_defaults_hold() -> None:
    args = parser.build_parser().parse_args(["--gateway", "gw:2", "upload", "s", "a.jsonl"])
    assert (args.gateway, args.json, args.batch_size, args.final, args.retries) == (
        "gw:2",
        False,
        500,
        True,
        8,
    )
    args = parser.build_parser().parse_args(["leaderboard", "--board", "upload"])
    assert (args.track, args.board, args.rule, args.limit) == ("llm", "upload", "latest", 100)


def test_an_unknown_choice_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parser.build_parser().parse_args(["leaderboard", "--track", "nope"])
    assert exit_.value.code == EXIT_USAGE
    assert "medbench: INVALID_ARGUMENT:" in capsys.readouterr().err


def _settings(gateway: str, tls: bool = False, ca_file: str = "") -> Settings:
    return Settings(gateway, KEY_A, "default", Path("x"), tls=tls, ca_file=ca_file)


async def test_a_session_opens_one_channel_on_first_use(
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = session.Session(_settings("gateway.example.org:443"))
    await s.close()  # nothing opened yet: nothing to close
    assert capsys.readouterr().err == ""
    first = s.chan
    assert s.chan is first
    err = capsys.readouterr().err
    assert err.count("without TLS") == 1 and "gateway.example.org:443" in err
    assert s.partner is not s.partner  # clients are cheap views over the one channel
    await s.close()


async def test_a_loopback_or_tls_session_does_not_warn(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for settings in (_settings("127.0.0.1:5"), _settings("gateway.example.org:443", tls=True)):
        s = session.Session(settings)
        assert s.chan is not None
        await s.close()
    assert "without TLS" not in capsys.readouterr().err


def test_an_unreadable_ca_file_is_a_usage_error(tmp_path: Path) -> None:
    s = session.Session(_settings("gw:1", ca_file=str(tmp_path / "missing.pem")))
    with pytest.raises(CliError) as err:
        s.chan  # noqa: B018
    assert err.value.exit_code == EXIT_USAGE and "missing.pem" in err.value.message


async def test_aborted_is_retried_and_every_retry_is_noted_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    outcomes = [rpc_error(grpc.StatusCode.ABORTED), rpc_error(grpc.StatusCode.UNAVAILABLE)]

    async def flaky() -> int:
        if outcomes:
            raise outcomes.pop(0)
        return 7

    assert await session.with_retries(flaky, 3, "batch b1", sleep, rng=lambda: 0.0) == 7
    assert pauses == [0.25, 0.5]
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "medbench: batch b1: ABORTED, retrying in 0.2 s (1/2)",
        "medbench: batch b1: UNAVAILABLE, retrying in 0.5 s (2/2)",
    ]


def test_the_backoff_doubles_up_to_its_cap() -> None:
    ceilings = [session.backoff_s(n, rng=lambda: 1.0) for n in range(1, 10)]
    assert ceilings[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(ceilings) == session.BACKOFF_CAP_S == ceilings[-1]
    assert all(session.backoff_s(n, rng=lambda: 0.0) == c / 2 for n, c in enumerate(ceilings, 1))


def test_the_package_keeps_the_names_other_code_imports() -> None:
    for name in ("main", "board_lines", "build_parser", "run", "document", "with_retries"):
        assert callable(getattr(partner_cli, name))
    assert partner_cli.board_lines is results.board_lines


def test_list_dates_are_utc_days_or_iso_times_and_until_a_day_includes_it() -> None:
    assert submissions.list_time("--since", "2026-12-06") == datetime(2026, 12, 6, tzinfo=UTC)
    assert submissions.list_time("--until", "2026-12-06", end_of_day=True) == datetime(
        2026, 12, 7, tzinfo=UTC
    )
    assert submissions.list_time("--since", "2026-12-06T08:00:00+08:00") == datetime(
        2026, 12, 6, tzinfo=UTC
    )
    assert submissions.list_time("--since", "2026-12-06T08:30:00Z") == datetime(
        2026, 12, 6, 8, 30, tzinfo=UTC
    )
    assert submissions.list_time("--since", "2026-12-06 08:30") == datetime(
        2026, 12, 6, 8, 30, tzinfo=UTC
    )
    for bad in ("yesterday", "2026-13-01", ""):
        with pytest.raises(CliError) as refused:
            submissions.list_time("--since", bad)
        assert refused.value.exit_code == EXIT_USAGE
