"""Benchmark: the real small model as judge (Gemma 3 270M Q4_K_M, llama-cpp-python's server,
the cached build of `make llm`), with and without structured decoding.

Ten answers to one MedHC question (paraphrases, negations, keyword stuffing, refusals, partial
answers) are judged through the real judge path (JudgeClient over HTTP, the generic rubric's
prompt, the panel with its repair turn), once with no schema (the text parser reads the reply)
and once decoded under the verdict's JSON Schema in llama-cpp-python's json_object_schema
style. Records the verdict failure rate (no readable verdict after the repair turn), the share
of verdicts read as structured, and judge throughput in verdicts per minute (one server, one
call at a time, on this machine's cores); and what judging costs, as GetJudgingCost counts it:
calls, prompt and completion tokens per verdict, and estimated GPU-seconds per item (call wall
time x the judge's declared GPUs: 1, the CPU server). The same answers judged again are all
cache hits (no call, no token): recorded as the second pass's share of cache hits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from judge_scorer.adapters.judge_client import JudgeClient
from judge_scorer.core.rubric import load_rubrics
from judge_scorer.settings import JudgeModel, JudgeSettings
from judge_scorer.usecases.panel import JudgeInput, Panel
from medbench_devstack import demo_llm
from medbench_runtime.http_client import HttpClient
from medbench_runtime.openai_endpoint import OpenAIEndpoint
from tests.bench.results import record
from tests.services.judge_scorer.fakes import InMemoryJudgeStore

QUESTION = "高血压患者日常生活中应注意什么？"
POINTS = ("低盐饮食", "规律服药", "监测血压", "控制体重", "戒烟限酒")
ANSWERS = (
    "少吃盐，按医嘱每天吃降压药，家里自己量血压，减肥，不抽烟少喝酒。",
    "不需要低盐饮食，不必规律服用降压药。",
    "低盐饮食 规律服药 监测血压 控制体重 戒烟限酒",
    "应当低盐饮食、规律服药，并定期监测血压。",
    "多喝热水，注意休息。",
    "高血压患者应控制体重，戒烟限酒，保持心情舒畅。",
    "我不知道。",
    "建议每日食盐不超过5克，坚持服药，每周测量血压并记录，适当运动减重，戒烟。",
    "血压高了就吃药，不高就停药。",
    "注意饮食清淡，少油少盐，规律作息，遵医嘱服药，定期复查。",
)
STYLES = ("none", "json_object_schema")


async def judge_all(
    base_url: str, api_key: str, style: str, answers: int = len(ANSWERS)
) -> dict[str, Any]:
    """Judges the ten answers (the first `answers`) one at a time (the server answers one call
    at a time), then all of them again (from the cache)."""
    rubric = load_rubrics().for_dataset("MedHC")
    settings = JudgeSettings(timeout_s=600, max_attempts=2)
    config = JudgeModel(
        model=demo_llm.MODEL_ALIAS,
        base_url=base_url,
        api_key=api_key,  # type: ignore[arg-type]
        structured=style,  # type: ignore[arg-type]
        max_concurrency=1,
    )
    client = JudgeClient(config, OpenAIEndpoint(HttpClient(), timeout_s=600), settings)
    panel = Panel([client], InMemoryJudgeStore(), concurrency=1)
    inputs = [JudgeInput(rubric, QUESTION, "", POINTS, a) for a in ANSWERS[:answers]]
    started = time.monotonic()
    results = await panel.judge(inputs)
    seconds = time.monotonic() - started
    outcomes = [r.outcomes[0] for r in results]
    # The answers with a verdict judged again: from the cache (the panel's store), nothing
    # asked (a failure is not cached: it would be asked again, so it is left out).
    read = [i for i, o in zip(inputs, outcomes, strict=True) if o.verdict is not None]
    again = [r.outcomes[0] for r in await panel.judge(read)] if read else []
    return {
        "style": style,
        "answers": len(outcomes),
        "failed": sum(o.verdict is None for o in outcomes),
        "structured": sum(o.structured for o in outcomes),
        "calls": sum(o.calls for o in outcomes),
        "prompt_tokens": sum(o.prompt_tokens for o in outcomes),
        "completion_tokens": sum(o.completion_tokens for o in outcomes),
        "gpu_seconds": round(sum(o.gpu_seconds for o in outcomes), 1),
        "judged_again": len(again),
        "cache_hits_again": sum(o.cached for o in again),
        "calls_again": sum(o.calls for o in again),
        "seconds": round(seconds, 1),
        "scores": [None if o.verdict is None else o.verdict.score for o in outcomes],
        "errors": sorted({o.error[:80] for o in outcomes if o.error}),
        "sample": outcomes[0].raw_output[:200],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--llm-dir", type=Path, default=demo_llm.LLM_DIR)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--styles", default=",".join(STYLES))
    parser.add_argument(
        "--answers", type=int, default=len(ANSWERS), help="judge only the first N answers"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-judge-llm-") as work:
        server = demo_llm.start_model_server(Path(work), args.llm_dir.resolve(), args.threads)
        try:
            for style in args.styles.split(","):
                m = asyncio.run(
                    judge_all(server["base_url"], server["api_key"], style, args.answers)
                )
                print(json.dumps(m, ensure_ascii=False), flush=True)
                label = "no schema" if style == "none" else style
                n = m["answers"]
                # Targets: the issue asks for the rates, not a bar; structured decoding is
                # expected to leave no verdict unreadable.
                record(
                    "judge (real 270M model)",
                    f"verdict failures ({label})",
                    100 * m["failed"] / n,
                    "%",
                    0.0 if style != "none" else None,
                    higher_is_better=False,
                )
                if style != "none":
                    record(
                        "judge (real 270M model)",
                        f"structured verdicts ({label})",
                        100 * m["structured"] / n,
                        "%",
                    )
                record(
                    "judge (real 270M model)",
                    f"throughput ({label}, {args.threads} threads)",
                    60 * n / m["seconds"],
                    "verdicts/min",
                )
                record(
                    "judge (real 270M model)",
                    f"tokens per verdict ({label})",
                    (m["prompt_tokens"] + m["completion_tokens"]) / n,
                    "tokens",
                )
                # Judging cost (README "The judge", Cost), per judged answer.
                for figure, value, unit in (
                    ("prompt tokens per verdict", m["prompt_tokens"] / n, "tokens"),
                    ("completion tokens per verdict", m["completion_tokens"] / n, "tokens"),
                    ("calls per verdict", m["calls"] / n, "calls"),
                    ("estimated GPU-seconds per item", m["gpu_seconds"] / n, "s"),
                ):
                    record("judge (real 270M model)", f"{figure} ({label})", value, unit)
                if m["judged_again"]:
                    record(
                        "judge (real 270M model)",
                        f"cache hits, read verdicts judged again ({label})",
                        100 * m["cache_hits_again"] / m["judged_again"],
                        "%",
                        100.0,
                    )
        finally:
            demo_llm.stop_model_server(Path(work))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
