"""Panel: judges answers with one or more judge models, through the cache.

For each answer: the rubric's messages are built (the answer fenced as data), every judge of the
panel is asked unless the cache already holds its reply to exactly these messages, a malformed
reply is asked for once more, and the panel's scores are combined by the configured rule.
Answers flagged as attempts to manipulate the judge are capped at the rubric's bottom quarter.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from judge_scorer.adapters.judge_client import JudgeClient
from judge_scorer.adapters.mongo_judge import MongoJudge, utcnow
from judge_scorer.core.agreement import aggregate_panel, panel_spread
from judge_scorer.core.injection import detect_injection
from judge_scorer.core.prompt import build_messages, injection_cap, prompt_hash
from judge_scorer.core.rubric import Rubric
from judge_scorer.core.verdict import MalformedVerdict, Verdict, parse_verdict

CACHE = Counter("medbench_judge_cache_total", "Judge cache lookups by result.", ["result"])
REPAIR_PROMPT = (
    "你上一条输出无法按要求解析（{error}）。请重新评分，只输出一个符合要求的 JSON 对象，"
    "不要输出任何其他文字。"
)


@dataclass(frozen=True)
class JudgeInput:
    """One answer to judge, with the sealed side it is judged against."""

    rubric: Rubric
    question: str
    reference: str
    key_points: tuple[str, ...]
    answer: str


@dataclass(frozen=True)
class JudgeOutcome:
    """One judge's part: a verdict, or the reason there is none."""

    model: str
    verdict: Verdict | None
    raw_output: str
    error: str = ""
    cached: bool = False


@dataclass(frozen=True)
class PanelResult:
    """The panel's judgment of one answer."""

    rubric: Rubric
    prompt_hash: str
    outcomes: tuple[JudgeOutcome, ...]
    flags: tuple[str, ...]
    score: float | None
    """In [0, 1] after the injection cap; None when no judge gave a readable verdict."""
    spread: float
    """max - min of the judges' normalised scores; 0 for a single judge."""

    @property
    def scores(self) -> list[float]:
        """The judges' scores on the rubric's scale (readable verdicts only)."""
        return [o.verdict.score for o in self.outcomes if o.verdict is not None]


def cache_key(model: str, prompt_hash_: str) -> str:
    return hashlib.sha256(f"{model}\0{prompt_hash_}".encode()).hexdigest()


class Panel:
    """One or more judge models and the rule that combines them."""

    def __init__(
        self,
        clients: Sequence[JudgeClient],
        store: MongoJudge,
        rule: str = "median",
        concurrency: int = 64,
    ) -> None:
        if not clients:
            raise ValueError("a panel needs at least one judge")
        if rule not in ("mean", "median", "majority"):
            raise ValueError(f"panel rule must be mean, median or majority, got {rule!r}")
        self._clients = list(clients)
        self._store = store
        self.rule = rule
        self._concurrency = asyncio.Semaphore(concurrency)

    @property
    def models(self) -> list[str]:
        return [c.model for c in self._clients]

    @property
    def name(self) -> str:
        """The judge configuration a calibration is about, e.g. "qwen2.5-72b" or "a+b|median"."""
        if len(self._clients) == 1:
            return self._clients[0].model
        return "+".join(sorted(self.models)) + f"|{self.rule}"

    async def judge(self, inputs: Sequence[JudgeInput]) -> list[PanelResult]:
        """Judges every input; cached replies are read in one round trip, the rest called."""
        prepared = []
        for item in inputs:
            messages = build_messages(
                item.rubric,
                question=item.question,
                reference=item.reference,
                key_points=item.key_points,
                answer=item.answer,
            )
            prepared.append((item, messages, prompt_hash(messages)))
        keys = [cache_key(c.model, ph) for _, _, ph in prepared for c in self._clients]
        hits = await self._store.cached(keys)
        CACHE.labels("hit").inc(len(hits))
        CACHE.labels("miss").inc(len(keys) - len(hits))
        new_entries: list[dict[str, Any]] = []
        results = await asyncio.gather(
            *(self._judge_one(item, msgs, ph, hits, new_entries) for item, msgs, ph in prepared)
        )
        await self._store.cache(new_entries)
        return list(results)

    async def _judge_one(
        self,
        item: JudgeInput,
        messages: list[dict[str, str]],
        ph: str,
        hits: dict[str, dict[str, Any]],
        new_entries: list[dict[str, Any]],
    ) -> PanelResult:
        outcomes = await asyncio.gather(
            *(self._ask(client, item, messages, ph, hits, new_entries) for client in self._clients)
        )
        flags = tuple(detect_injection(item.answer))
        verdicts = [o.verdict for o in outcomes if o.verdict is not None]
        scale = item.rubric.scale
        if not verdicts:
            return PanelResult(item.rubric, ph, tuple(outcomes), flags, None, 0.0)
        combined = aggregate_panel([v.score for v in verdicts], self.rule)
        score = scale.normalise(combined)
        if flags:
            # The rubric tells the judge so; this holds even for a judge that was fooled.
            score = min(score, scale.normalise(injection_cap(item.rubric)))
        spread = panel_spread([v.normalised for v in verdicts]) if len(verdicts) > 1 else 0.0
        return PanelResult(item.rubric, ph, tuple(outcomes), flags, score, spread)

    async def _ask(
        self,
        client: JudgeClient,
        item: JudgeInput,
        messages: list[dict[str, str]],
        ph: str,
        hits: dict[str, dict[str, Any]],
        new_entries: list[dict[str, Any]],
    ) -> JudgeOutcome:
        key = cache_key(client.model, ph)
        hit = hits.get(key)
        if hit is not None:
            verdict = parse_verdict(hit["raw_output"], item.rubric, answer=item.answer)
            return JudgeOutcome(client.model, verdict, hit["raw_output"], cached=True)
        async with self._concurrency:
            raw = await client.complete(messages)
            try:
                verdict = parse_verdict(raw, item.rubric, answer=item.answer)
            except MalformedVerdict as first:
                repair = [
                    *messages,
                    {"role": "assistant", "content": raw},
                    {"role": "user", "content": REPAIR_PROMPT.format(error=first)},
                ]
                raw = await client.complete(repair)
                try:
                    verdict = parse_verdict(raw, item.rubric, answer=item.answer)
                except MalformedVerdict as second:
                    # A recorded failure, not a zero; not cached, so a later request asks again.
                    return JudgeOutcome(
                        client.model, None, raw, error=f"malformed verdict twice: {second}"
                    )
        new_entries.append(
            {
                "_id": key,
                "model": client.model,
                "prompt_hash": ph,
                "rubric_id": item.rubric.id,
                "rubric_version": item.rubric.version,
                "raw_output": raw,
                "score": verdict.score,
                "created_at": utcnow(),
            }
        )
        return JudgeOutcome(client.model, verdict, raw)
