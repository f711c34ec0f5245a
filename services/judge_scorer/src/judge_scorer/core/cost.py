"""Judging cost: what a submission's judgments cost, per dataset and judge model (pure).

Read from the judgments' verdict records (usecases/judging.py `_judgment`): each judge's part of
an item records its completion calls (a repair turn counts), whether it was a cache hit (no call,
no tokens), the server's prompt and completion tokens, and estimated GPU-seconds (wall time of
its calls x the judge's declared GPU count: the server is shared and batches requests, so this
is an upper estimate, not a measurement). Judgments recorded before usage was kept count their
calls as unknown (0) and their cache hits as hits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JudgingCost:
    """What judging some items cost."""

    dataset: str
    """"" for a total over datasets."""
    judge_model: str
    """"" for a total over the panel's models."""
    items: int
    """Items judged (each counted once however many judges it had)."""
    calls: int
    cache_hits: int
    prompt_tokens: int
    completion_tokens: int
    gpu_seconds: float
    structured: int
    """Verdicts read as decoded under the verdict schema."""
    failures: int
    """Judge parts with no readable verdict."""


def judging_cost(judgments: Iterable[Mapping[str, Any]]) -> list[JudgingCost]:
    """Rows per (dataset, judge model), sorted, then one total per dataset (judge_model ""),
    then the submission's total (dataset "" and judge_model "")."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for doc in judgments:
        dataset = str(doc.get("dataset", ""))
        seen: set[tuple[str, str]] = set()
        for verdict in doc.get("verdicts", ()):
            model = str(verdict.get("model", ""))
            for key in ((dataset, model), (dataset, ""), ("", "")):
                row = rows.setdefault(key, _empty())
                if key not in seen:
                    row["items"] += 1
                    seen.add(key)
                row["calls"] += int(verdict.get("calls", 0))
                row["cache_hits"] += 1 if verdict.get("cached") else 0
                row["prompt_tokens"] += int(verdict.get("prompt_tokens", 0))
                row["completion_tokens"] += int(verdict.get("completion_tokens", 0))
                row["gpu_seconds"] += float(verdict.get("gpu_seconds", 0.0))
                row["structured"] += 1 if verdict.get("structured") else 0
                row["failures"] += 1 if verdict.get("score") is None else 0
    order = sorted(rows, key=lambda k: (k[0] == "", k[0], k[1] == "", k[1]))
    return [JudgingCost(dataset=d, judge_model=m, **rows[d, m]) for d, m in order]


def _empty() -> dict[str, Any]:
    return {
        "items": 0,
        "calls": 0,
        "cache_hits": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "gpu_seconds": 0.0,
        "structured": 0,
        "failures": 0,
    }
