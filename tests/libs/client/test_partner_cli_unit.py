"""Unit tests of the partner CLI: configuration, answer files, upload batches, downloads, exit
codes. No gateway: everything here is local (a call to a closed port at most)."""

from __future__ import annotations

import io
import json
import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from medbench.submission.v1 import (
    submission_pb2,
    submission_service_pb2,
    submission_service_pb2_grpc,
)
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client import cli_config, partner_cli
from medbench_client.answer_files import AnswerLine, problems_path
from medbench_client.api import message_batches
from medbench_client.cli_config import ConfigError
from medbench_client.cli_files import (
    MAX_BATCH_BYTES,
    InputError,
    ProgressLine,
    UploadState,
    batch_id,
    final_marker_id,
    plan_batches,
    prepare_download,
    state_path,
)
from medbench_client.partner_cli import session

KEY_A = "mbk_0123456789abcdef_" + "A" * 43
KEY_B = "mbk_fedcba9876543210_" + "b-_" * 14 + "b"
KEY_C = "mbk_00000000000000ff_" + "c" * 43
BATCH_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # what the gateway accepts


def config_file(tmp_path: Path) -> Path:
    return tmp_path / "xdg" / "medbench" / "config.json"


# -- configuration --------------------------------------------------------------------------


def test_the_config_file_lives_under_xdg_config_home_or_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cli_config.config_path({"XDG_CONFIG_HOME": "/etc/x"}) == Path(
        "/etc/x/medbench/config.json"
    )
    home = tmp_path / "home" / ".config" / "medbench" / "config.json"
    assert cli_config.config_path({}) == home
    # A relative XDG_CONFIG_HOME is invalid (XDG spec) and ignored.
    assert cli_config.config_path({"XDG_CONFIG_HOME": "rel"}) == home


def test_profiles_are_written_with_mode_0600_and_values_kept(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    cli_config.save_profile(path, "default", gateway="gw:1", api_key=KEY_A)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # A second profile, then a change of one value: the rest is kept, the mode too.
    cli_config.save_profile(path, "staging", gateway="gw:2", api_key=f"  {KEY_B}\n")
    cli_config.save_profile(path, "default", gateway="gw:3")
    data = json.loads(path.read_text())
    assert data["default_profile"] == "default"  # the first profile written
    assert data["profiles"]["default"] == {"gateway": "gw:3", "api_key": KEY_A}
    assert data["profiles"]["staging"] == {"gateway": "gw:2", "api_key": KEY_B}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temp file left
    cli_config.save_profile(path, "staging", make_default=True)
    assert json.loads(path.read_text())["default_profile"] == "staging"
    with pytest.raises(ConfigError, match="does not look like"):
        cli_config.save_profile(path, "default", api_key="sk-not-ours")
    with pytest.raises(ConfigError, match="profile name"):
        cli_config.save_profile(path, "../evil", gateway="x")


def test_flags_beat_environment_beat_config_file(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    cli_config.save_profile(path, "default", gateway="file-gw:1", api_key=KEY_A)
    cli_config.save_profile(path, "staging", gateway="staging-gw:1", api_key=KEY_B)

    from_file = cli_config.resolve(env={}, path=path)
    assert (from_file.gateway, from_file.api_key, from_file.profile) == (
        "file-gw:1",
        KEY_A,
        "default",
    )
    assert from_file.sources["gateway"].startswith("profile default")

    env = {"MEDBENCH_GATEWAY": "env-gw:1"}
    mixed = cli_config.resolve(env=env, path=path)
    assert (mixed.gateway, mixed.api_key) == ("env-gw:1", KEY_A)
    assert mixed.sources == {"gateway": "MEDBENCH_GATEWAY", "api_key": mixed.sources["api_key"]}

    env = {"MEDBENCH_GATEWAY": "env-gw:1", "MEDBENCH_API_KEY": KEY_C}
    flagged = cli_config.resolve(gateway="flag-gw:1", env=env, path=path)
    assert (flagged.gateway, flagged.api_key) == ("flag-gw:1", KEY_C)
    assert flagged.sources == {"gateway": "flag", "api_key": "MEDBENCH_API_KEY"}
    assert cli_config.resolve(api_key=KEY_B, env=env, path=path).api_key == KEY_B

    # The profile: --profile > MEDBENCH_PROFILE > the file's default.
    by_env = cli_config.resolve(env={"MEDBENCH_PROFILE": "staging"}, path=path)
    assert (by_env.profile, by_env.gateway, by_env.api_key) == ("staging", "staging-gw:1", KEY_B)
    by_flag = cli_config.resolve(profile="default", env={"MEDBENCH_PROFILE": "staging"}, path=path)
    assert (by_flag.profile, by_flag.gateway) == ("default", "file-gw:1")


def test_missing_settings_and_unknown_profiles_are_usage_errors(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    with pytest.raises(ConfigError, match="no gateway"):
        cli_config.resolve(env={"MEDBENCH_API_KEY": KEY_A}, path=path)
    with pytest.raises(ConfigError, match="no API key"):
        cli_config.resolve(env={"MEDBENCH_GATEWAY": "gw:1"}, path=path)
    with pytest.raises(ConfigError, match="'nope'.*MEDBENCH_PROFILE"):
        cli_config.resolve(env={"MEDBENCH_PROFILE": "nope"}, path=path)
    # Everything given otherwise: an absent profile does not matter.
    done = cli_config.resolve(gateway="gw:1", api_key=KEY_A, profile="nope", env={}, path=path)
    assert done.gateway == "gw:1"
    with pytest.raises(ConfigError, match="cannot be sent"):
        cli_config.resolve(gateway="gw:1", api_key="mbk_x y", env={}, path=path)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        cli_config.resolve(env={}, path=path)


def test_a_config_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    cli_config.save_profile(path, "default", gateway="gw:1", api_key=KEY_A)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        cli_config.resolve(env={}, path=path)
    # A key from the environment does not come from the file: no refusal.
    assert cli_config.resolve(env={"MEDBENCH_API_KEY": KEY_B}, path=path).api_key == KEY_B


def test_tls_settings_follow_the_same_precedence(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    cli_config.save_profile(path, "default", gateway="gw:443", api_key=KEY_A, tls=True)
    assert cli_config.resolve(env={}, path=path).tls is True
    assert cli_config.resolve(env={"MEDBENCH_TLS": "0"}, path=path).tls is False
    assert cli_config.resolve(tls=True, env={"MEDBENCH_TLS": "0"}, path=path).tls is True
    with pytest.raises(ConfigError, match="tls must be true or false"):
        cli_config.resolve(env={"MEDBENCH_TLS": "maybe"}, path=path)


def test_configure_writes_the_profile_and_never_prints_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MEDBENCH_PROFILE", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(KEY_B + "\n"))
    code = partner_cli.main(["configure", "--gateway", "gw:9", "--key", "-", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    shown = json.loads(out)
    assert shown["key_id"] == "mbk_fedcba9876543210" and shown["gateway"] == "gw:9"
    assert KEY_B not in out and KEY_B not in err
    path = config_file(tmp_path)
    assert shown["config_file"] == str(path)
    assert json.loads(path.read_text())["profiles"]["default"]["api_key"] == KEY_B
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert partner_cli.main(["configure", "--key", "oops"]) == 2
    assert "INVALID_ARGUMENT" in capsys.readouterr().err


# -- answer files ---------------------------------------------------------------------------


def test_upload_reports_an_invalid_file_before_calling_the_gateway(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text('{"item_id": "a", "answer": "<A>"}\n{"item_id": "a", "answer": "<B>"}\n')
    # Port 1 is closed: reaching the gateway would be exit code 5, not 2.
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"item_id": "a", "dataset": "MedExam", "answer_format": "choice_single"}\n')
    argv = ["--gateway", "127.0.0.1:1", "--key", KEY_A, "upload", "sub_x", str(path)]
    assert partner_cli.main([*argv, "--manifest", str(prompts)]) == 2
    err = capsys.readouterr().err
    assert "1 valid, 1 invalid: 1 answered twice" in err
    assert err.splitlines()[-1].startswith("medbench: INVALID_ARGUMENT: 1 lines cannot be sent")
    problems = (tmp_path / "answers.jsonl.medbench-problems.txt").read_text(encoding="utf-8")
    assert f"{path}:2: item_id: item 'a' is answered twice (first at {path}:1)" in problems
    assert not state_path(path).exists()


# -- batches and upload state ---------------------------------------------------------------


def answers(n: int, prefix: str = "item") -> list[AnswerLine]:
    return [AnswerLine(i + 1, f"{prefix}-{i}", f"<{'ABCD'[i % 4]}>") for i in range(n)]


def test_batches_of_long_answers_stay_under_the_gateways_message_limit() -> None:
    """500 answers of 32 KiB would be 16 MiB in one message; the gateway takes 8 MiB."""
    long = [AnswerLine(i + 1, f"item-{i}", "答" * 10_922) for i in range(600)]
    batches = plan_batches(long, 500, final=True)
    assert all(sum(len(a.encode()) for _, a in b.answers) <= MAX_BATCH_BYTES for b in batches)
    assert [i for b in batches for i, _ in b.answers] == [a.item_id for a in long]
    assert [b.final for b in batches] == [False] * (len(batches) - 1) + [True]
    assert len(batches) == 3  # 256 + 256 + 88: full messages, in file order
    again = plan_batches(list(long), 500, final=True)
    assert [b.batch_id for b in again] == [b.batch_id for b in batches]


def test_message_batches_cut_large_items_by_bytes() -> None:
    items = [
        taskpool_pb2.ImportItem(task=taskpool_pb2.Task(item_id=f"i{n}", question="长" * 87_000))
        for n in range(100)
    ]
    parts = message_batches(items, 2000)
    assert [x for p in parts for x in p] == items
    assert all(sum(x.ByteSize() for x in p) <= 8 * 1024 * 1024 for p in parts)
    assert message_batches(items[:3], 2) == [items[:2], items[2:3]]


def test_batch_ids_depend_on_the_content_only() -> None:
    rows = answers(25)
    first = plan_batches(rows, 10, final=True)
    again = plan_batches(list(rows), 10, final=True)
    assert [b.batch_id for b in first] == [b.batch_id for b in again]
    assert [len(b.answers) for b in first] == [10, 10, 5]
    assert [b.final for b in first] == [False, False, True]
    assert [b.first_line for b in first] == [1, 11, 21]
    assert len({b.batch_id for b in first}) == 3
    assert all(BATCH_ID.match(b.batch_id) for b in first)
    # The same answers on other lines (a blank line added, say) make the same batches.
    moved = [AnswerLine(a.line + 7, a.item_id, a.answer) for a in rows]
    assert [b.batch_id for b in plan_batches(moved, 10, True)] == [b.batch_id for b in first]
    # Another answer, or the final flag, is another batch.
    changed = [*rows[:3], AnswerLine(4, rows[3].item_id, "<Z>"), *rows[4:]]
    assert plan_batches(changed, 10, True)[0].batch_id != first[0].batch_id
    assert plan_batches(changed, 10, True)[1:] == first[1:]
    not_final = plan_batches(rows, 10, final=False)
    assert not_final[:2] == first[:2] and not_final[2].batch_id != first[2].batch_id
    assert batch_id([("a", "b")], False) == batch_id((("a", "b"),), False)
    assert batch_id([("a", "b")], False) != batch_id([("ab", "")], False)


def test_a_cut_upload_resends_the_same_batches() -> None:
    rows = answers(53)
    full = plan_batches(rows, 10, final=True)
    # Half the file uploaded first without final: its batches reappear in the whole file's.
    half = plan_batches(rows[:30], 10, final=False)
    assert [b.batch_id for b in half] == [b.batch_id for b in full[:3]]
    # Skipping the answers of whole accepted batches cuts the rest as before.
    accepted = {i for b in full[:2] for i in b.item_ids}
    rest = plan_batches([a for a in rows if a.item_id not in accepted], 10, final=True)
    assert rest == full[2:]
    assert final_marker_id(rows) != final_marker_id(rows[:-1])
    assert BATCH_ID.match(final_marker_id(rows))
    with pytest.raises(InputError, match="batch-size"):
        plan_batches(rows, 0, True)
    with pytest.raises(InputError, match="batch-size"):
        plan_batches(rows, 5001, True)


def test_the_upload_state_records_accepted_batches_per_submission(tmp_path: Path) -> None:
    answers_file = tmp_path / "answers.jsonl"
    path = state_path(answers_file)
    assert path.name == "answers.jsonl.medbench-upload.json"
    batches = plan_batches(answers(12), 5, final=True)
    state = UploadState(path, "sub_1")
    assert state.accepted_items == set() and not state.final_sent
    state.record(batches[0], "accepted")
    state.record(batches[2], "replayed")
    again = UploadState(path, "sub_1")
    assert again.accepted_items == {*batches[0].item_ids, *batches[2].item_ids}
    assert again.final_sent
    other = UploadState(path, "sub_2")
    assert other.accepted_items == set()
    other.record(batches[1], "accepted")
    assert UploadState(path, "sub_1").accepted_items == again.accepted_items
    assert UploadState(path, "sub_2").accepted_items == set(batches[1].item_ids)
    path.write_text("{cut")
    with pytest.raises(InputError, match="unreadable upload state"):
        UploadState(path, "sub_1")


# -- downloads ------------------------------------------------------------------------------


def test_a_partial_download_keeps_whole_lines_and_drops_a_cut_one(tmp_path: Path) -> None:
    out = tmp_path / "prompts.jsonl"
    assert prepare_download(out).item_ids == []
    lines = [
        json.dumps({"item_id": f"i{k}", "question": "题目"}, ensure_ascii=False) for k in "123"
    ]
    whole = "\n".join(lines[:2]) + "\n"
    out.write_text(whole + lines[2][:9], encoding="utf-8")
    partial = prepare_download(out)
    assert partial.item_ids == ["i1", "i2"] and partial.dropped_bytes == 9
    assert out.read_text(encoding="utf-8") == whole
    # A complete file stays as it is.
    out.write_text(whole + lines[2] + "\n", encoding="utf-8")
    assert prepare_download(out).item_ids == ["i1", "i2", "i3"]
    assert out.read_text(encoding="utf-8") == whole + lines[2] + "\n"
    # Cut inside a multi-byte character.
    cut = len(whole.encode()) + lines[2].encode().index("题".encode()) + 1
    out.write_bytes((whole + lines[2]).encode()[:cut])
    assert prepare_download(out).item_ids == ["i1", "i2"]
    # Not a download at all.
    out.write_text("hello\n" + whole)
    with pytest.raises(InputError, match=":1: not a prompt line"):
        prepare_download(out)


def test_the_progress_line_draws_only_on_a_terminal() -> None:
    quiet = io.StringIO()
    line = ProgressLine("upload", 4, stream=quiet)
    line.advance(2)
    line.close()
    assert quiet.getvalue() == ""  # StringIO is no terminal
    shown = io.StringIO()
    line = ProgressLine("upload", 4, stream=shown, enabled=True)
    line.advance(4)
    line.close()
    assert shown.getvalue().endswith("\rupload [" + "#" * 30 + "] 4/4\n")
    assert ProgressLine("download", None, enabled=False).render() == "download 0"


# -- exit codes and retries -----------------------------------------------------------------


def rpc_error(
    code: grpc.StatusCode, details: str = "", trailing: tuple[tuple[str, str], ...] = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details=details
    )


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 2),
        (grpc.StatusCode.ALREADY_EXISTS, 2),
        (grpc.StatusCode.NOT_FOUND, 3),
        (grpc.StatusCode.FAILED_PRECONDITION, 4),
        (grpc.StatusCode.UNAVAILABLE, 5),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 5),
        (grpc.StatusCode.UNAUTHENTICATED, 6),
        (grpc.StatusCode.PERMISSION_DENIED, 6),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 7),
        (grpc.StatusCode.INTERNAL, 1),
        (grpc.StatusCode.UNKNOWN, 1),
        (None, 1),
    ],
)
def test_status_codes_map_to_exit_codes(code: grpc.StatusCode | None, exit_code: int) -> None:
    assert partner_cli.exit_code_for(code) == exit_code


def test_an_exhausted_quota_names_when_to_retry() -> None:
    exc = rpc_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "used its 1 submissions", (("retry-after", "7200"),)
    )
    assert partner_cli.retry_after(exc) == 7200
    assert partner_cli.rpc_error_message(exc) == (
        "medbench: RESOURCE_EXHAUSTED: used its 1 submissions (retry-after: 7200 s, about 2.0 h)"
    )
    bare = rpc_error(grpc.StatusCode.NOT_FOUND, "submission x not found")
    assert partner_cli.retry_after(bare) is None
    assert partner_cli.rpc_error_message(bare) == "medbench: NOT_FOUND: submission x not found"


def test_an_unreachable_gateway_is_exit_code_5(capsys: pytest.CaptureFixture[str]) -> None:
    assert partner_cli.main(["--gateway", "127.0.0.1:1", "--key", KEY_A, "whoami"]) == 5
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("medbench: UNAVAILABLE: ")


def test_bad_usage_is_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        partner_cli.main(["submit"])
    assert done.value.code == 2
    assert "medbench: INVALID_ARGUMENT: " in capsys.readouterr().err
    argv = ["--gateway", "127.0.0.1:1", "--key", KEY_A, "submit", "--model", "m"]
    assert partner_cli.main([*argv, "--request-id", "with space"]) == 2
    assert partner_cli.main([*argv, "--endpoint-model", "x", "--mode", "upload"]) == 2
    assert partner_cli.main([*argv, "--mode", "api"]) == 2
    assert "--endpoint-url" in capsys.readouterr().err
    missing_env = [*argv, "--endpoint-url", "http://h/v1", "--endpoint-model", "m"]
    assert partner_cli.main([*missing_env, "--endpoint-key-env", "MEDBENCH_NO_SUCH_VAR_X"]) == 2
    assert "MEDBENCH_NO_SUCH_VAR_X" in capsys.readouterr().err


async def test_unavailable_is_retried_with_backoff_and_others_are_not() -> None:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    calls = iter(
        [rpc_error(grpc.StatusCode.UNAVAILABLE), rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED), "ok"]
    )

    async def flaky() -> str:
        outcome = next(calls)
        if isinstance(outcome, grpc.aio.AioRpcError):
            raise outcome
        return outcome

    assert await partner_cli.with_retries(flaky, 5, "batch", sleep, rng=lambda: 1.0) == "ok"
    assert pauses == [0.5, 1.0]  # exponential from 0.5 s

    async def refused() -> str:
        raise rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad")

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await partner_cli.with_retries(refused, 5, "batch", sleep)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(pauses) == 2

    async def down() -> str:
        raise rpc_error(grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(grpc.aio.AioRpcError):
        await partner_cli.with_retries(down, 3, "batch", sleep, rng=lambda: 0.0)
    assert pauses[2:] == [0.25, 0.5]  # 3 attempts, 2 pauses, half jittered
    assert partner_cli.backoff_s(20, rng=lambda: 1.0) == partner_cli.BACKOFF_CAP_S


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("localhost:50051", True),
        ("[::1]:443", True),
        ("dns:///127.0.0.1:80", True),
        ("gateway.example.org:443", False),
        ("10.0.0.7:50051", False),
    ],
)
def test_plaintext_keys_are_flagged_off_loopback(address: str, loopback: bool) -> None:
    assert session._is_loopback(address) is loopback  # noqa: SLF001


# -- the upload command against an in-process fake gateway --------------------------------


class FakeGateway(submission_service_pb2_grpc.SubmissionServiceServicer):
    """A toy SubmissionService with the gateway's upload rules: batches replayed by id and
    content, answers taken only while AWAITING_ANSWERS, which ends when every counted item is
    answered or a final batch comes; extra items (the fictitious canaries of a download made
    before canaries were pool items, still served to such submissions) are accepted but not
    counted."""

    def __init__(self, counted: list[str], canaries: list[str]) -> None:
        self.counted = set(counted)
        self.known = self.counted | set(canaries)
        self.state = submission_pb2.SUBMISSION_STATE_AWAITING_ANSWERS
        self.answered: set[str] = set()
        self.batches: dict[str, tuple[tuple[str, str], ...]] = {}
        self.messages = 0
        self.lose_response_of: set[int] = set()  # message numbers accepted, then UNAVAILABLE
        self.api_mode = False

    def view(self) -> submission_pb2.Submission:
        return submission_pb2.Submission(
            submission_id="sub_fake",
            state=self.state,
            progress=submission_pb2.Progress(
                expected_items=len(self.counted),
                answered_items=len(self.answered & self.counted),
            ),
        )

    async def GetSubmission(self, request: Any, context: Any) -> Any:
        return submission_service_pb2.GetSubmissionResponse(submission=self.view())

    async def DownloadPrompts(self, request: Any, context: Any) -> AsyncIterator[Any]:
        if self.api_mode:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "API mode: no prompts")
        prompts = [
            submission_pb2.Prompt(
                item_id=i,
                dataset="MedExam",
                question=f"问题 {i}",
                answer_format="choice_single",
                messages=[submission_pb2.ChatMessage(role="user", content="你好")],
            )
            for i in sorted(self.known)
        ]
        for start in range(0, len(prompts), 10):
            yield submission_service_pb2.DownloadPromptsResponse(
                prompts=prompts[start : start + 10]
            )

    async def UploadAnswers(self, request_iterator: Any, context: Any) -> Any:
        accepted = replayed = answers = 0
        async for m in request_iterator:
            self.messages += 1
            content = (tuple((a.item_id, a.answer) for a in m.answers), m.final)
            if m.batch_id in self.batches:
                if self.batches[m.batch_id] != content:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "batch id reused")
                replayed += 1
                continue
            if self.state != submission_pb2.SUBMISSION_STATE_AWAITING_ANSWERS:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not awaiting answers")
            ids = {a.item_id for a in m.answers}
            unknown = [
                f"answers[{n}] (item {a.item_id!r})"
                for n, a in enumerate(m.answers)
                if a.item_id not in self.known
            ]
            if unknown:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{len(unknown)} answers are for items not served in this submission: "
                    + ", ".join(unknown),
                )
            if ids & self.answered:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "answered twice")
            self.batches[m.batch_id] = content
            self.answered |= ids
            accepted += 1
            answers += len(ids)
            if m.final or self.counted <= self.answered:
                self.state = submission_pb2.SUBMISSION_STATE_SCORING
            if self.messages in self.lose_response_of:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        return submission_service_pb2.UploadAnswersResponse(
            accepted_batches=accepted,
            replayed_batches=replayed,
            accepted_answers=answers,
            progress=self.view().progress,
            state=self.state,
        )


@pytest.fixture
async def fake_gateway() -> AsyncIterator[tuple[FakeGateway, str]]:
    counted = [f"item-{i}" for i in range(23)]
    fake = FakeGateway(counted, ["canary-1", "canary-2"])
    server = grpc.aio.server()
    submission_service_pb2_grpc.add_SubmissionServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def cli_upload(
    address: str, path: Path, *extra: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    argv = ["--gateway", address, "--key", KEY_A, "upload", "sub_fake", str(path), "--json"]
    args = partner_cli.build_parser().parse_args([*argv, *extra])
    assert await partner_cli.run(args) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1  # one JSON document, nothing else
    return json.loads(out)


def write_answers(path: Path, ids: list[str]) -> Path:
    path.write_text("".join(json.dumps({"item_id": i, "answer": "<A>"}) + "\n" for i in ids))
    return path


async def test_a_cut_upload_resumes_without_counting_twice(
    fake_gateway: tuple[FakeGateway, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake, address = fake_gateway
    monkeypatch.setattr(session, "BACKOFF_BASE_S", 0.001)
    ids = [f"item-{i}" for i in range(23)]
    ids.insert(7, "canary-1")
    answers = write_answers(tmp_path / "answers.jsonl", ids)
    half = write_answers(tmp_path / "half.jsonl", ids[:10])
    first = await cli_upload(address, half, "--batch-size", "5", "--no-final", capsys=capsys)
    assert (first["accepted_batches"], first["replayed_batches"], first["batches"]) == (2, 0, 2)
    assert first["state"] == "AWAITING_ANSWERS"
    # The whole file; the answer to its 4th batch is lost, and the batch is resent.
    fake.lose_response_of = {fake.messages + 2}
    full = await cli_upload(address, answers, "--batch-size", "5", capsys=capsys)
    assert (full["accepted_batches"], full["replayed_batches"]) == (3, 2)
    assert full["progress"]["answered_items"] == 23 and full["state"] == "SCORING"
    assert fake.answered == set(ids) and len(fake.batches) == 5
    # A re-run sends nothing: the state file lists every batch.
    sent = fake.messages
    again = await cli_upload(address, answers, "--batch-size", "5", capsys=capsys)
    assert (again["batches"], again["skipped_answers"], fake.messages) == (0, 24, sent)
    # Another batch size changes nothing either: the state file works on items.
    again = await cli_upload(address, answers, "--batch-size", "7", capsys=capsys)
    assert (again["batches"], fake.messages) == (0, sent)


async def test_answers_left_after_the_last_counted_item_are_not_needed(
    fake_gateway: tuple[FakeGateway, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, address = fake_gateway
    ids = [f"item-{i}" for i in range(23)] + ["canary-1", "canary-2"]
    answers = write_answers(tmp_path / "answers.jsonl", ids)
    done = await cli_upload(address, answers, "--batch-size", "23", capsys=capsys)
    assert (done["accepted_batches"], done["unneeded_batches"], done["unneeded_answers"]) == (
        1,
        1,
        2,
    )
    assert done["state"] == "SCORING" and done["progress"]["answered_items"] == 23
    again = await cli_upload(address, answers, "--batch-size", "23", capsys=capsys)
    assert (again["batches"], again["skipped_answers"]) == (0, 25)


async def test_an_upload_sent_without_final_is_ended_by_an_empty_final_batch(
    fake_gateway: tuple[FakeGateway, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, address = fake_gateway
    some = write_answers(tmp_path / "some.jsonl", [f"item-{i}" for i in range(5)])
    first = await cli_upload(address, some, "--no-final", capsys=capsys)
    assert first["state"] == "AWAITING_ANSWERS"
    final = await cli_upload(address, some, capsys=capsys)
    assert (final["batches"], final["accepted_batches"], final["state"]) == (0, 1, "SCORING")
    assert final["final_marker_sent"] and not first["final_marker_sent"]
    assert len(fake.answered) == 5
    # Ended: nothing more goes out.
    sent = fake.messages
    assert (await cli_upload(address, some, capsys=capsys))["accepted_batches"] == 0
    assert fake.messages == sent


async def test_an_unserved_line_is_named_before_anything_is_sent(
    fake_gateway: tuple[FakeGateway, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, address = fake_gateway
    answers = write_answers(tmp_path / "answers.jsonl", ["item-1", "not-an-item", "item-2"])
    argv = ["--gateway", address, "--key", KEY_A, "upload", "sub_fake", str(answers)]
    with pytest.raises(partner_cli.CliError) as err:
        await partner_cli.run(partner_cli.build_parser().parse_args(argv))
    assert err.value.exit_code == 2 and fake.messages == 0
    problems = problems_path([answers]).read_text(encoding="utf-8")  # noqa: ASYNC240 (a test)
    assert f"{answers}:2: item_id: item 'not-an-item' is not served in this submission" in problems
    # --skip-invalid sends the other two and says which line was left out.
    done = await cli_upload(address, answers, "--skip-invalid", "--no-final", capsys=capsys)
    assert done["accepted_answers"] == 2 and fake.answered == {"item-1", "item-2"}
    assert done["check"]["invalid_lines"] == 1


async def test_a_gateway_refusal_names_the_lines_of_the_file(
    fake_gateway: tuple[FakeGateway, str], tmp_path: Path
) -> None:
    """A line the local check let through (here: a manifest that lists an item the gateway does
    not know) is refused by the gateway by its place in the batch; the CLI names its line."""
    _, address = fake_gateway
    manifest = tmp_path / "prompts.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"item_id": i, "dataset": "MedExam", "answer_format": "free_text"}) + "\n"
            for i in ["item-1", "ghost", "item-2"]
        )
    )
    answers = write_answers(tmp_path / "answers.jsonl", ["item-1", "ghost", "item-2"])
    argv = ["--gateway", address, "--key", KEY_A, "upload", "sub_fake", str(answers)]
    with pytest.raises(partner_cli.CliError) as err:
        await partner_cli.run(
            partner_cli.build_parser().parse_args([*argv, "--manifest", str(manifest)])
        )
    assert err.value.exit_code == 2
    assert f"{answers}:2 (answers[1]) (item 'ghost')" in err.value.message


async def cli_download(address: str, out: Path, capsys: pytest.CaptureFixture[str]) -> int:
    argv = ["--gateway", address, "--key", KEY_A, "download", "sub_fake", "--out", str(out)]
    return await partner_cli.run(partner_cli.build_parser().parse_args([*argv, "--json"]))


async def test_a_download_completes_a_partial_file_and_refuses_a_foreign_one(
    fake_gateway: tuple[FakeGateway, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, address = fake_gateway
    out = tmp_path / "prompts.jsonl"
    assert await cli_download(address, out, capsys) == 0
    assert json.loads(capsys.readouterr().out) == {
        "submission_id": "sub_fake",
        "out": str(out),
        "format": "jsonl",
        "items": 25,
        "appended": 25,
        "kept": 0,
    }
    whole = out.read_text(encoding="utf-8")
    first = json.loads(whole.splitlines()[0])
    assert first == {
        "item_id": "canary-1",
        "dataset": "MedExam",
        "question": "问题 canary-1",
        "answer_format": "choice_single",
        "image_paths": [],
        "messages": [{"role": "user", "content": "你好"}],
    }
    # Cut after 12 lines and inside the 13th: the rest is appended, the same file results.
    lines = whole.splitlines(keepends=True)
    out.write_text("".join(lines[:12]) + lines[12][:5], encoding="utf-8")
    assert await cli_download(address, out, capsys) == 0
    assert json.loads(capsys.readouterr().out)["kept"] == 12
    assert out.read_text(encoding="utf-8") == whole
    # A file of another download is left alone.
    foreign = "".join(lines[3:5])
    out.write_text(foreign, encoding="utf-8")
    with pytest.raises(InputError, match="another download"):
        await cli_download(address, out, capsys)
    assert out.read_text(encoding="utf-8") == foreign
    # API mode has no prompts to download: refused, and no empty file is left.
    fake.api_mode = True
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await cli_download(address, tmp_path / "none.jsonl", capsys)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert not (tmp_path / "none.jsonl").exists()


def test_a_board_page_shows_equated_and_cycle_columns_only_when_some_entry_has_one() -> None:
    from medbench.leaderboard.v1 import leaderboard_service_pb2 as lb

    def entry(rank: int, overall: float, **kw: Any) -> lb.LeaderboardEntry:
        return lb.LeaderboardEntry(
            rank=rank,
            model_name="m",
            organisation="某医院",
            overall=overall,
            overall_low=overall - 5,
            overall_high=overall + 5,
            **kw,
        )

    plain = partner_cli.board_lines("LLM board", [entry(1, 70.0), entry(1, 66.5)], 2)
    assert plain[0] == "LLM board"
    assert plain[1].split() == ["rank", "model", "organisation", "overall", "95%", "interval"]
    assert plain[3].split() == ["1", "m", "某医院", "66.5", "[61.5,", "71.5]"]
    full = partner_cli.board_lines(
        "LLM board", [entry(1, 70.0, cycle="2026Q4", equated=71.2), entry(2, 50.0)], 30
    )
    assert full[0] == "LLM board (first 2 of 30)"
    assert full[1].split()[-2:] == ["equated", "cycle"]
    assert full[2].split()[-2:] == ["71.2", "2026Q4"]
    assert full[3].split()[-1] == "-"  # no equated score; no cycle (an empty cell)
    assert partner_cli.board_lines("LLM board", [], 0) == ["LLM board: no published submissions"]
