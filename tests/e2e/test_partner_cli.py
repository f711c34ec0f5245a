"""The partner CLI `medbench` against the running stack: configure, evaluate, publish, and the
exit codes of its failures. The CLI runs as a subprocess (its installed entry point)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from medbench.identity.v1 import access_pb2, identity_pb2
from medbench_client.api import IdentityAdmin
from medbench_client.bank_files import read_jsonl
from medbench_devstack.answers import translate
from medbench_devstack.services import ServiceStack
from tests.e2e.harness import Evaluation, admin_channel, load_pool, partner_key

pytestmark = [pytest.mark.e2e]

BANK = Path(__file__).resolve().parents[2] / "services/rotator/src/rotator/sample_bank"
ROWS = list(read_jsonl(BANK / "items.jsonl"))
QUESTIONS = {r["item_id"]: r["question"] for r in ROWS}
RIGHT = {r["item_id"]: "<" + ", ".join(r["reference"]) + ">" for r in ROWS}
POOL = "partner-cli-pool"
BATCH = 10
UNKNOWN_KEY = "mbk_0123456789abcdef_" + "x" * 43


class Cli:
    """Runs `medbench` with its own config folder and none of the caller's MEDBENCH_* vars."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MEDBENCH_")}
        self.config_home = tmp_path / "config"
        self.env = {**base, "XDG_CONFIG_HOME": str(self.config_home), **env}
        self.exe = str(Path(sys.executable).with_name("medbench"))

    async def run(
        self, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [self.exe, *args],
            env={**self.env, **(env or {})},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    async def ok(self, *args: str, **kw: Any) -> Any:
        """Runs a --json command that must succeed; its stdout parsed."""
        done = await self.run(*args, "--json", **kw)
        assert done.returncode == 0, (args, done.returncode, done.stderr)
        return json.loads(done.stdout)


@pytest.fixture(scope="module")
async def pool(stack: ServiceStack) -> str:
    await load_pool(stack, ROWS, POOL)
    return POOL


def read_json(path: str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def answer_lines(prompts_file: Path) -> list[str]:
    """The right answer for every downloaded prompt (in the order shown to this tenant, which
    a canary's key follows too); an item the answer set does not know gets `<A>`."""
    out = []
    for line in prompts_file.read_text(encoding="utf-8").splitlines():
        p = json.loads(line)
        known = p["item_id"] in RIGHT
        answer = (
            translate(RIGHT[p["item_id"]], QUESTIONS[p["item_id"]], p["question"])
            if known
            else "<A>"
        )
        out.append(json.dumps({"item_id": p["item_id"], "answer": answer}, ensure_ascii=False))
    return out


async def test_a_partner_evaluates_a_model_with_the_cli(
    stack: ServiceStack, pool: str, tmp_path: Path
) -> None:
    key = partner_key(stack, "cli-hospital")
    cli = Cli(tmp_path)

    # configure: the key read from stdin, stored 0600, never echoed.
    done = await cli.run(
        "configure", "--gateway", stack.address("gateway"), "--key", "-", "--json", stdin=key
    )
    assert done.returncode == 0, done.stderr
    config = cli.config_home / "medbench" / "config.json"
    assert json.loads(done.stdout)["config_file"] == str(config)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert key not in done.stdout + done.stderr
    me = await cli.ok("whoami")
    assert (me["tenant_id"], me["role"]) == ("cli-hospital", "partner_submitter")
    assert key.startswith(me["key_id"] + "_")
    human = await cli.run("whoami")
    assert "cli-hospital" in human.stdout and key not in human.stdout

    # submit: a generated request id, printed; the same id again is the same submission.
    created = await cli.ok("submit", "--model", "cli-model", "--organisation", "CLI 医院")
    sid, request_id = created["submission_id"], created["request_id"]
    assert created["created"] and created["state"] == "AWAITING_ANSWERS"
    # Every shown prompt counts: the pool's items (canaries are some of them, shown altered).
    assert created["pool_id"] == pool and created["progress"]["expected_items"] == len(ROWS)
    again = await cli.ok(
        "submit", "--model", "cli-model", "--organisation", "CLI 医院", "--request-id", request_id
    )
    assert (again["submission_id"], again["created"]) == (sid, False)

    # download, cut midway and resumed: the same file as one download in one go.
    prompts = tmp_path / "prompts.jsonl"
    first = await cli.ok("download", sid, "--out", str(prompts))
    assert first["items"] == first["appended"] == len(ROWS)
    whole = prompts.read_text(encoding="utf-8")
    rows = whole.splitlines()
    assert {json.loads(r)["item_id"] for r in rows} >= set(RIGHT)
    assert set(json.loads(rows[0])) == {
        "item_id",
        "dataset",
        "question",
        "answer_format",
        "image_paths",
        "messages",
    }
    cut = "\n".join(rows[:20]) + "\n" + rows[20][: len(rows[20]) // 2]
    prompts.write_text(cut, encoding="utf-8")
    resumed = await cli.ok("download", sid, "--out", str(prompts))
    assert (resumed["kept"], resumed["appended"]) == (20, len(rows) - 20)
    assert prompts.read_text(encoding="utf-8") == whole

    # upload, cut midway: half the answers first (not final), then the whole file.
    lines = answer_lines(prompts)
    answers, half = tmp_path / "answers.jsonl", tmp_path / "half.jsonl"
    answers.write_text("\n".join(lines) + "\n", encoding="utf-8")
    half.write_text("\n".join(lines[: 3 * BATCH]) + "\n", encoding="utf-8")
    size = ["--batch-size", str(BATCH)]
    early = await cli.ok("upload", sid, str(half), *size, "--no-final")
    assert (early["accepted_batches"], early["replayed_batches"]) == (3, 0)
    assert early["state"] == "AWAITING_ANSWERS"
    assert early["progress"]["answered_items"] == 3 * BATCH
    batches = -(-len(lines) // BATCH)
    full = await cli.ok("upload", sid, str(answers), *size)
    assert full["replayed_batches"] == 3  # the first half, recognised: not counted twice
    # Every shown item is taken; the last batch ends the upload.
    assert (full["accepted_batches"], full["unneeded_batches"]) == (batches - 3, 0)
    assert full["progress"]["answered_items"] == full["progress"]["expected_items"] == len(lines)
    # Run again: the state file says every batch is in; nothing is sent.
    rerun = await cli.ok("upload", sid, str(answers), *size)
    assert (rerun["batches"], rerun["skipped_answers"]) == (0, len(lines))

    # watch until COMPLETED: one JSON line per change, the last one COMPLETED.
    watched = await cli.run("watch", sid, "--json")
    assert watched.returncode == 0, watched.stderr
    changes = [json.loads(line) for line in watched.stdout.splitlines()]
    assert changes[-1]["state"] == "COMPLETED"
    assert changes[-1]["scored_items"] == len(ROWS)

    # report, publish, leaderboard, usage.
    report = await cli.ok("report", sid, "--out", str(tmp_path / "report"))
    assert report["overall"] == pytest.approx(100.0)
    assert {"report.html", "report.md", "radar.png", "datasets.csv"} <= set(report["files"])
    # The pool is live: aggregates only, no item rows anywhere, and the CLI says why.
    assert "items.csv" not in report["files"] and not (tmp_path / "report/items.csv").exists()
    assert "is a live hidden pool" in report["items_withheld"]
    doc = read_json(report["files"]["report.json"])
    assert doc["overall"] == pytest.approx(report["overall"])
    assert (doc["items"], doc["items_withheld"]) == ([], report["items_withheld"])
    human = await cli.run("report", sid, "--out", str(tmp_path / "report-text"))
    assert human.returncode == 0 and "No items.csv: per-item results of submission" in human.stdout
    assert (await cli.ok("status", sid))["state"] == "COMPLETED"
    board = ["--track", "llm", "--board", "upload"]
    assert (await cli.ok("leaderboard", *board))["entries"] == []
    assert (await cli.ok("publish", sid))["published"] is True
    listed = await cli.ok("leaderboard", *board)
    assert listed["total"] == 1
    entry = listed["entries"][0]
    assert (entry["submission_id"], entry["organisation"]) == (sid, "CLI 医院")
    # The sample bank is 5 of the LLM track's 36 datasets: a partial entry, never ranked.
    assert (entry["rank"], entry["partial"]) == (0, True)
    assert entry["missing_dimensions"] == ["language_generation"]
    assert entry["overall_low"] <= entry["overall"] == pytest.approx(100.0)
    table = await cli.run("leaderboard", *board)
    assert table.returncode == 0, table.stderr
    assert "cli-model" in table.stdout and "CLI 医院" in table.stdout and "100.0" in table.stdout
    cycle = entry["cycle"]
    assert (await cli.ok("leaderboard", *board, "--cycle", cycle))["total"] == 1
    assert (await cli.ok("leaderboard", "--board", "api"))["entries"] == []
    used = await cli.ok("usage")
    assert used["tenant_id"] == "cli-hospital"
    assert (used["submissions_today"], used["active_submissions"]) == (1, 0)
    assert used["items_this_month"] == len(ROWS)
    assert (await cli.ok("publish", sid, "--withdraw"))["published"] is False
    assert (await cli.ok("leaderboard", *board))["entries"] == []

    # Not an API-mode submission: nothing to resume (failed precondition, exit code 4).
    not_api = await cli.run("resume", sid)
    assert not_api.returncode == 4 and "FAILED_PRECONDITION" in not_api.stderr


async def test_failures_have_their_exit_codes(
    stack: ServiceStack, pool: str, tmp_path: Path
) -> None:
    gateway = stack.address("gateway")
    owner = Evaluation(stack, "cli-owner", "cli-owned", {})
    sid = await owner.create()
    cli = Cli(tmp_path, MEDBENCH_GATEWAY=gateway)

    # Unknown key: unauthenticated (6).
    wrong = await cli.run("whoami", env={"MEDBENCH_API_KEY": UNKNOWN_KEY})
    assert wrong.returncode == 6, wrong.stderr
    assert wrong.stderr.startswith("medbench: UNAUTHENTICATED: ") and wrong.stdout == ""
    # A viewer may read but not submit: permission denied (6).
    viewer = {"MEDBENCH_API_KEY": partner_key(stack, "cli-owner", access_pb2.ROLE_PARTNER_VIEWER)}
    assert (await cli.run("status", sid, env=viewer)).returncode == 0
    denied = await cli.run("submit", "--model", "m", env=viewer)
    assert denied.returncode == 6 and "PERMISSION_DENIED" in denied.stderr
    # Another tenant's submission is not found (3), for every command that names one.
    stranger = {"MEDBENCH_API_KEY": partner_key(stack, "cli-stranger")}
    for args in (
        ["status", sid],
        ["download", sid, "--out", str(tmp_path / "p.jsonl")],
        ["watch", sid],
        ["publish", sid],
    ):
        other = await cli.run(*args, env=stranger)
        assert other.returncode == 3, (args, other.stderr)
        assert other.stderr.startswith("medbench: NOT_FOUND: ")
    # Not ready: no report before COMPLETED (4).
    early = await cli.run("report", sid, "--out", str(tmp_path / "r"), env=viewer)
    assert early.returncode == 4 and "FAILED_PRECONDITION" in early.stderr
    # Unreachable gateway (5); no configuration at all (2).
    owner_key = {"MEDBENCH_API_KEY": partner_key(stack, "cli-owner")}
    down = await cli.run("status", sid, "--gateway", "127.0.0.1:1", env=owner_key)
    assert down.returncode == 5 and "UNAVAILABLE" in down.stderr
    bare = Cli(tmp_path / "bare")
    unconfigured = await bare.run("whoami")
    assert unconfigured.returncode == 2 and "no gateway" in unconfigured.stderr
    # A profile picks the key: flags and environment still win over it.
    assert (
        await bare.run(
            "configure",
            "--profile",
            "owner",
            "--gateway",
            gateway,
            "--key",
            owner_key["MEDBENCH_API_KEY"],
        )
    ).returncode == 0
    assert (await bare.ok("--profile", "owner", "whoami"))["tenant_id"] == "cli-owner"
    overridden = await bare.ok("whoami", env={"MEDBENCH_API_KEY": stranger["MEDBENCH_API_KEY"]})
    assert overridden["tenant_id"] == "cli-stranger"
    assert overridden["sources"]["api_key"] == "MEDBENCH_API_KEY"


async def test_an_exhausted_quota_is_exit_code_7_with_when_to_retry(
    stack: ServiceStack, pool: str, tmp_path: Path
) -> None:
    admin = IdentityAdmin(admin_channel(stack, "gateway"))
    await admin.ensure_tenant("cli-quota", quotas=identity_pb2.Quotas(submissions_per_day=1))
    cli = Cli(
        tmp_path,
        MEDBENCH_GATEWAY=stack.address("gateway"),
        MEDBENCH_API_KEY=partner_key(stack, "cli-quota"),
    )
    assert (await cli.ok("submit", "--model", "m", "--request-id", "q-1"))["created"]
    refused = await cli.run("submit", "--model", "m", "--request-id", "q-2", "--json")
    assert refused.returncode == 7, refused.stderr
    assert refused.stdout == ""
    assert refused.stderr.startswith("medbench: RESOURCE_EXHAUSTED: ")
    assert "midnight UTC" in refused.stderr and "(retry-after: " in refused.stderr
    # The retry of the first request is no new submission: no quota needed.
    assert not (await cli.ok("submit", "--model", "m", "--request-id", "q-1"))["created"]
    used = await cli.ok("usage")
    assert (used["submissions_today"], used["quotas"]["submissions_per_day"]) == (1, 1)
