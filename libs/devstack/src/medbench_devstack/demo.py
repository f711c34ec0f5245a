"""`make run`: the local stack, one real evaluation through the public gRPC API, its report.

python -m medbench_devstack.demo up     # start (or reuse) everything, evaluate, print
python -m medbench_devstack.demo down   # stop the services, Kafka and the Mongo-wire server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from medbench_devstack.__main__ import main as infra_main
from medbench_devstack.answers import translate
from medbench_devstack.errors import DevstackError
from medbench_devstack.ports import free_port
from medbench_devstack.processes import (
    ManagedProcess,
    pid_alive,
    stop_pid,
    stop_recorded,
    wait_http_ok,
)
from medbench_devstack.review_app import reviewer_key, start_review, stop_review
from medbench_devstack.services import JUDGE_SERVICE, SERVICES, ServiceStack

STACK_DIR = Path(".stack")
SERVICES_FILE = "services.json"
SITE_FILE = "site.json"
SITE_REFRESH_S = 30
TENANT = "demo-hospital"
POOL_ID = "llm-sample-v1"
# src/medbench_devstack/demo.py -> the workspace root (the workspace installs editable).
WORKSPACE = Path(__file__).resolve().parents[4]
SAMPLE_BANK = Path("services/rotator/src/rotator/sample_bank")


def sample_bank() -> Path:
    """The rotator's sample bank (items and baseline answers) in the workspace the stack runs
    from: read as files, like any bank a maintainer imports."""
    for root in (WORKSPACE, Path.cwd()):
        if (root / SAMPLE_BANK / "items.jsonl").is_file():
            return root / SAMPLE_BANK
    raise DevstackError(
        f"no sample bank at {WORKSPACE / SAMPLE_BANK} or {Path.cwd() / SAMPLE_BANK}: "
        "run from a clone of the repository"
    )


def _infra_state(stack_dir: Path) -> dict[str, Any]:
    return dict(json.loads((stack_dir / "state.json").read_text()))


def stop_site(stack_dir: Path) -> None:
    """Stops the website server a previous `up` left running."""
    stop_recorded(stack_dir / SITE_FILE, "medbench_site", "the website")


def start_site(stack_dir: Path, stack: ServiceStack) -> str:
    """Builds the public website from the stack and serves it (rebuilt every SITE_REFRESH_S);
    returns its address."""
    stop_site(stack_dir)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDBENCH_")}
    # The site's own service token: it may read reports, boards and datasets, nothing else.
    env["MEDBENCH_AUTH__SERVICE_TOKEN"] = stack.service_tokens["site"]
    site = ManagedProcess(
        "site",
        [
            sys.executable,
            "-m",
            "medbench_site",
            "serve",
            "--out",
            str(stack_dir / "site"),
            "--port",
            str(port),
            "--refresh-s",
            str(SITE_REFRESH_S),
            "--aggregator",
            stack.address("aggregator"),
            "--rotator",
            stack.address("rotator"),
        ],
        env,
        stack_dir / "services" / "site.log",
    )
    site.start()
    url = f"http://127.0.0.1:{port}/"
    (stack_dir / SITE_FILE).write_text(json.dumps({"pid": site.pid, "url": url}) + "\n")
    wait_http_ok(site, url + "healthz", "the website")
    return url


def stop_services(stack_dir: Path) -> None:
    """Stops the services (and the website, the review app) a previous `up` left running."""
    stop_site(stack_dir)
    stop_review(stack_dir)
    path = stack_dir / SERVICES_FILE
    if not path.exists():
        return
    recorded = json.loads(path.read_text())
    for name, info in recorded.items():
        module = next(s.module for s in SERVICES if s.name == name)
        if stop_pid(info["pid"], 15, expect_in_cmdline=f"-m {module}"):
            print(f"stopped {name} (pid {info['pid']})")
    path.unlink()


def start_infra(stack_dir: Path) -> dict[str, Any]:
    """Reuses a running Kafka + Mongo-wire server, or starts them detached."""
    if (stack_dir / "state.json").exists() and infra_main(["status", "--dir", str(stack_dir)]) == 0:
        print("reusing the running Kafka and Mongo-wire server")
    elif infra_main(["up", "--dir", str(stack_dir)]) != 0:
        raise DevstackError("could not start Kafka and the Mongo-wire server (see above)")
    return _infra_state(stack_dir)


def start_services(
    stack_dir: Path, infra: dict[str, Any], judge_env: dict[str, str] | None = None
) -> ServiceStack:
    """The six services on the local infrastructure. The judge scorer takes the user's judge
    settings from the environment (USER_JUDGE_SETTINGS: README "Pointing make run at a
    judge"), unless `judge_env` (make demo-llm: its own model server) replaces them."""
    stop_services(stack_dir)
    # The local database outlives a run, so its credentials do too (owner-only file).
    credentials = stack_dir / "credentials.json"
    pinned = json.loads(credentials.read_text()) if credentials.exists() else {}
    stack = ServiceStack(
        stack_dir / "services",
        infra["mongo"]["uri"],
        "medbench",
        infra["kafka"]["bootstrap"],
        "",
        extra_env=pinned,
        service_env={JUDGE_SERVICE: judge_env} if judge_env is not None else None,
        user_judge_settings=judge_env is None,
    )
    kept = {
        # The seed of every service's own token (ServiceStack.service_tokens).
        "MEDBENCH_AUTH__SERVICE_TOKEN": stack.service_token_seed,
        "MEDBENCH_AUTH__BOOTSTRAP_KEY": stack.admin_key,
        "MEDBENCH_METRICS_TOKEN": stack.metrics_token,
        # Seals the partners' endpoint API keys the local database keeps while runs last.
        "MEDBENCH_SECRETS__KEYS": stack.secrets_keys,
    }
    if pinned != kept:  # first run, or a file from before the metrics token or secrets key
        credentials.touch(mode=0o600)
        credentials.write_text(json.dumps(kept))
    token_file = stack_dir / "metrics.token"
    token_file.touch(mode=0o600)
    token_file.write_text(stack.metrics_token)
    started = time.monotonic()
    stack.start(timeout_s=120)
    print(f"six services SERVING after {time.monotonic() - started:.1f} s; {judge_line(stack)}")
    (stack_dir / SERVICES_FILE).write_text(
        json.dumps(
            {
                name: {
                    "pid": stack.process(name).pid,
                    "grpc": stack.address(name),
                    "metrics": stack.metrics_url(name),
                    "log": str(stack.log_path(name)),
                }
                for name in stack.names
            },
            indent=2,
        )
        + "\n"
    )
    return stack


def judge_line(stack: ServiceStack) -> str:
    """Which judge models the judge scorer was given (names only, never keys)."""
    raw = stack.env(JUDGE_SERVICE).get("MEDBENCH_JUDGE__MODELS", "")
    try:
        models = [str(m.get("model", "?")) for m in json.loads(raw)] if raw else []
    except (ValueError, AttributeError, TypeError):
        return "MEDBENCH_JUDGE__MODELS is not a JSON list of judge models (see the judge's log)"
    if not models:
        return "no judge configured (MEDBENCH_JUDGE__MODELS unset: judge requests dead-lettered)"
    return f"judge: {', '.join(models)}"


async def demo_tenant_key(stack: ServiceStack, tenant: str) -> str:
    """A partner key of the local demo tenant, created when absent. Its quota record raises
    the caps per pool (README "Caps per pool"), so the demo runs on one pool as often as you
    like; the platform's defaults stay as they are for every other tenant."""
    from medbench.identity.v1 import identity_pb2, identity_service_pb2
    from medbench_client.api import IdentityAdmin, channel, provision_key

    key = provision_key(stack.address("gateway"), stack.admin_key, tenant)
    admin = IdentityAdmin(channel(stack.address("gateway"), stack.admin_key))
    many = 1_000_000
    await admin.stub.UpdateTenant(
        identity_service_pb2.UpdateTenantRequest(
            tenant_id=tenant,
            quotas=identity_pb2.Quotas(
                official_per_cycle=many, hidden_per_day=many, hidden_per_cycle=many
            ),
        )
    )
    return key


async def evaluate(stack: ServiceStack) -> str:
    from medbench.submission.v1 import submission_pb2
    from medbench_client.api import AdminClient, PartnerClient, channel, chunked
    from medbench_client.bank_files import answers_by_item, import_item, read_jsonl
    from medbench_devstack.report_table import dimension_names, report_table

    bank = sample_bank()
    rows = list(read_jsonl(bank / "items.jsonl"))
    rotator = channel(stack.address("rotator"), stack.admin_key)
    admin = AdminClient(rotator)
    imported = await admin.import_items([import_item(r) for r in rows])
    # The sample bank's datasets only: `make demo-llm` imports more items into the same bank.
    pool = await admin.publish(POOL_ID, datasets=sorted({r["dataset"] for r in rows}))
    print(
        f"task bank: {imported.imported} items imported, {imported.unchanged} unchanged; "
        f"pool {pool.pool_id}: {pool.item_count} items in {len(pool.datasets)} datasets"
    )

    partner_key = await demo_tenant_key(stack, TENANT)
    partner = PartnerClient(channel(stack.address("gateway"), partner_key))
    key_file = stack.work_dir.parent / "partner.key"
    key_file.touch(mode=0o600)
    key_file.write_text(partner_key)
    created = await partner.create(f"demo-{time.strftime('%Y%m%dT%H%M%S')}", "baseline-answers")
    sid = created.submission.submission_id
    prompts = await partner.prompts(sid)
    print(f"submission {sid}: {len(prompts)} prompts downloaded (no references in them)")
    answers = answers_by_item(read_jsonl(bank / "baseline_answers.jsonl"))
    canonical = {r["item_id"]: r["question"] for r in rows}
    # The download shows options in this tenant's own order (leak tracing); the canned answers
    # are written for the bank's order, so they are moved to the shown order, as a model
    # answering the shown question would (a canary's options too: its key follows the texts).
    upload = await partner.upload(
        sid,
        chunked(
            [
                (
                    p.item_id,
                    translate(answers[p.item_id], canonical[p.item_id], p.question)
                    if p.item_id in answers
                    else "<A>",
                )
                for p in prompts
            ],
            25,
        ),
    )
    print(f"uploaded {upload.accepted_answers} answers in {upload.accepted_batches} batches")
    async for update in partner.watch(sid):
        s = update.submission
        print(
            f"  {submission_pb2.SubmissionState.Name(s.state):36} answered "
            f"{s.progress.answered_items}/{s.progress.expected_items}, scored "
            f"{s.progress.scored_items}"
        )
    report = await partner.report(sid)
    # Opt-in publication, as a partner would: the website shows published submissions only.
    await partner.publish(sid)
    table = report_table(report, await dimension_names(rotator))
    print(
        f"\nReport of {sid} (pool {report.lineage.pool_id}, "
        f"digest {report.lineage.item_scores_digest[:12]}):\n"
    )
    print(table)
    # The public board the submission now stands on, read through the gateway like anyone's.
    from medbench.common.v1 import common_pb2
    from medbench.leaderboard.v1 import leaderboard_service_pb2, leaderboard_service_pb2_grpc
    from medbench.taskpool.v1 import taskpool_pb2
    from medbench_client.partner_cli import board_lines

    boards = leaderboard_service_pb2_grpc.LeaderboardServiceStub(
        channel(stack.address("gateway"), partner_key)
    )
    page = await boards.ListLeaderboard(
        leaderboard_service_pb2.ListLeaderboardRequest(
            track=common_pb2.TRACK_LLM, board=taskpool_pb2.BOARD_UPLOAD, page_size=20
        )
    )
    lines = board_lines("Leaderboard: LLM / upload board", list(page.entries), page.total)
    print("\n" + "\n".join(lines) + "\n")
    return sid


def _how_to(stack: ServiceStack, sid: str) -> str:
    gateway = stack.address("gateway")
    metrics = "\n".join(f"  {name:14} {stack.metrics_url(name)}" for name in stack.names)
    return f"""The stack keeps running. Reach the public API (gRPC, reflection on) at {gateway}:
  grpcurl -plaintext {gateway} list
  grpcurl -plaintext -H "authorization: Bearer $(cat .stack/partner.key)" \\
      -d '{{"submission_id": "{sid}"}}' \\
      {gateway} medbench.submission.v1.SubmissionService/GetReport
  (grpcurl: `make load-tools` puts it in .tools/bin; or go install
  github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4)
Prometheus metrics (they answer only the bearer token in .stack/metrics.token):
{metrics}
  curl -H "Authorization: Bearer $(cat .stack/metrics.token)" {stack.metrics_url("gateway")}
The partner key of tenant {TENANT} is in .stack/partner.key; the maintainer key is
MEDBENCH_AUTH__BOOTSTRAP_KEY in .stack/credentials.json (both readable by you only).
Logs: .stack/services/<service>.log   State: .stack/state.json, .stack/services.json
Stop everything: make stop"""


def up(stack_dir: Path) -> int:
    stack_dir.mkdir(parents=True, exist_ok=True)
    infra = start_infra(stack_dir)
    stack = start_services(stack_dir, infra)
    try:
        sid = asyncio.run(evaluate(stack))
        url = start_site(stack_dir, stack)
        print(_how_to(stack, sid))
        print(
            f"The public website (published results only; rebuilt every {SITE_REFRESH_S} s): "
            f"{url}\n  Chinese: {url}zh/index.html   English: {url}en/index.html"
        )
        review_url = start_review(stack_dir, stack)
        key_file = reviewer_key(stack_dir, stack)
        print(
            f"The physician review app (sign in with the reviewer key in {key_file}, or the "
            f"maintainer key to import ratings and read calibration reports): {review_url}"
        )
    except BaseException:
        print("the evaluation failed; service logs are in .stack/services/", file=sys.stderr)
        for name in stack.names:
            if not pid_alive(stack.process(name).pid or -1):
                print(f"--- {name} exited:\n{stack.process(name).tail(20)}", file=sys.stderr)
        raise
    return 0


def down(stack_dir: Path) -> int:
    stop_services(stack_dir)
    return infra_main(["down", "--dir", str(stack_dir)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medbench_devstack.demo")
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", default=STACK_DIR, type=Path)
    args = parser.parse_args(argv)
    try:
        return {"up": up, "down": down}[args.command](args.dir.resolve())
    except DevstackError as exc:
        print(f"make run failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
