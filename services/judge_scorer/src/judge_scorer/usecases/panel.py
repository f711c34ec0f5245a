"""Panel: judges answers with one or more judge models, through the cache.

For each answer: the rubric's messages are built (the answer fenced as data), every judge of the
panel is asked unless the cache already holds its reply to exactly these messages, a malformed
reply is asked for once more, and the panel's scores are combined by the configured rule.
Answers flagged as attempts to manipulate the judge are capped at the rubric's bottom quarter.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections import Counter as Counter_
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from judge_scorer.core.agreement import aggregate_panel, panel_spread
from judge_scorer.core.injection import detect_injection
from judge_scorer.core.ports import JudgeCache, JudgeModel, JudgeReply
from judge_scorer.core.prompt import JudgeImage, build_messages, injection_cap, prompt_hash
from judge_scorer.core.rubric import Rubric
from judge_scorer.core.structured import read_structured, verdict_schema
from judge_scorer.core.verdict import MalformedVerdict, Verdict, key_point_recall, parse_verdict

CACHE = Counter(
    "medbench_judge_cache_total",
    "Judge cache lookups by result and judge model.",
    ["result", "model"],
)
VERDICTS = Counter(
    "medbench_judge_verdicts_total",
    "Judge replies by how they were read: structured (valid under the verdict schema), text "
    "(the tolerant parser: no schema, or a structured reply that did not validate), malformed.",
    ["reading", "model"],
)
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
    images: tuple[JudgeImage, ...] = ()
    """The item's bank images, shown to vision judges only."""


class NoVisionJudge(ValueError):
    """An item with images, and no judge of the panel is declared vision-capable."""


@dataclass(frozen=True)
class JudgeOutcome:
    """One judge's part: a verdict, or the reason there is none."""

    model: str
    verdict: Verdict | None
    raw_output: str
    error: str = ""
    cached: bool = False
    structured: bool = False
    """The verdict was read as decoded under the verdict schema (False: by the text parser)."""
    calls: int = 0
    """Completions asked for it (a repair turn counts; 0 for a cache hit)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    gpu_seconds: float = 0.0
    """Wall time of its calls x the judge's declared GPUs: an estimate."""


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
    key_point_recall: float | None = None
    """The share of the item's key points the judges found the answer to state (each judge's
    key_points_covered, combined by the panel rule, under the same injection cap as the
    score); None for an item without key points or without a readable verdict."""
    criteria: tuple[tuple[str, float], ...] = ()
    """The panel's score per rubric criterion, on the rubric's scale (each criterion's scores
    of the judges that gave criteria, combined by the panel rule, under the injection cap);
    () when no judge scored the criteria. Not the item's score: that is the overall score."""

    @property
    def scores(self) -> list[float]:
        """The judges' scores on the rubric's scale (readable verdicts only)."""
        return [o.verdict.score for o in self.outcomes if o.verdict is not None]

    @property
    def normalised_scores(self) -> list[float]:
        """Each judge's score in [0, 1], under the same injection cap as the panel's."""
        scale = self.rubric.scale
        cap = scale.normalise(injection_cap(self.rubric)) if self.flags else 1.0
        return [min(cap, scale.normalise(s)) for s in self.scores]


PROMPT_FORMAT = "judge-prompt-3"
"""Changes whenever build_messages (or the verdict schema) changes what the judge reads or
answers: old cache entries then miss.
2: the rules for deciding each key point (entailment; negation, contradiction and bare listing
do not cover).
3: the verdict scores every rubric criterion too (`criteria`): a verdict cached before it has
none, and is never taken for one asked to give them."""


def cache_key(model: str, item: JudgeInput) -> str:
    """(judge model, rubric content, prompt format, item content, answer) -> key.

    Computed without building the prompt, so a cache hit costs two small hashes.
    """
    h = hashlib.sha256()
    for part in (
        model,
        item.rubric.content_hash,
        PROMPT_FORMAT,
        item.question,
        item.reference,
        # Counted, so that no key point can run into its neighbour or the answer.
        f"key_points:{len(item.key_points)}",
        *item.key_points,
        item.answer,
        # Only items with images: the keys of text items stay what they were.
        *(f"image:{image.image_id}" for image in item.images),
    ):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


class Panel:
    """One or more judge models and the rule that combines them."""

    def __init__(
        self,
        clients: Sequence[JudgeModel],
        store: JudgeCache,
        rule: str = "median",
        concurrency: int = 64,
        memory_entries: int = 200_000,
        vision: Collection[str] = (),
    ) -> None:
        """vision: the models declared vision-capable, the only ones given items with images."""
        if not clients:
            raise ValueError("a panel needs at least one judge")
        if rule not in ("mean", "median", "majority"):
            raise ValueError(f"panel rule must be mean, median or majority, got {rule!r}")
        self._clients = list(clients)
        self._vision_clients = [c for c in self._clients if c.model in set(vision)]
        self._store = store
        self.rule = rule
        self._concurrency = asyncio.Semaphore(concurrency)
        # The hottest cache entries, in memory: a resubmission's hits never reach MongoDB.
        self._memory: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._memory_entries = memory_entries

    @property
    def models(self) -> list[str]:
        return [c.model for c in self._clients]

    @property
    def sees_images(self) -> bool:
        """Whether a judge of the panel is vision-capable (items with images need one)."""
        return bool(self._vision_clients)

    def judges_of(self, item: JudgeInput) -> list[JudgeModel]:
        """The judges that judge an item: the vision-capable ones when it has images.

        Raises:
            NoVisionJudge: it has images and no judge sees images.
        """
        if not item.images:
            return self._clients
        if not self._vision_clients:
            raise NoVisionJudge(
                "no judge model is declared vision-capable (MEDBENCH_JUDGE__MODELS entry with "
                '"vision": true): an item with images is not judged blind'
            )
        return self._vision_clients

    @property
    def name(self) -> str:
        """The judge configuration a calibration is about, e.g. "qwen2.5-72b" or "a+b|median"."""
        if len(self._clients) == 1:
            return self._clients[0].model
        return "+".join(sorted(self.models)) + f"|{self.rule}"

    async def judge(self, inputs: Sequence[JudgeInput]) -> list[PanelResult]:
        """Judges every input; cached verdicts are read in one round trip, the rest called."""
        keys = [[cache_key(c.model, item) for c in self.judges_of(item)] for item in inputs]
        absent = [k for row in keys for k in row if k not in self._memory]
        if absent:
            for doc in (await self._store.cached(absent)).values():
                self._remember(doc)
        hits: Counter_[str] = Counter_()
        for item, row in zip(inputs, keys, strict=True):
            for client, key in zip(self.judges_of(item), row, strict=True):
                if key in self._memory:
                    hits[client.model] += 1
        for model, n in hits.items():
            CACHE.labels("hit", model).inc(n)
        new_entries: list[dict[str, Any]] = []
        results: list[PanelResult | None] = [None] * len(inputs)
        pending = []
        for index, (item, row) in enumerate(zip(inputs, keys, strict=True)):
            hits = [self._memory.get(key) for key in row]
            if all(hit is not None for hit in hits):
                # The common case on resubmissions: no task, no await, no parsing.
                results[index] = self._from_cache(item, hits)  # type: ignore[arg-type]
            else:
                pending.append((index, self._judge_one(item, row, new_entries)))
        if pending:
            judged = await asyncio.gather(*(coro for _, coro in pending))
            for (index, _), result in zip(pending, judged, strict=True):
                results[index] = result
        for model, n in Counter_(e["model"] for e in new_entries).items():
            CACHE.labels("miss", model).inc(n)
        await self._store.cache(new_entries)
        for entry in new_entries:
            self._remember(entry)
        return [r for r in results if r is not None]

    def _from_cache(self, item: JudgeInput, hits: list[dict[str, Any]]) -> PanelResult:
        outcomes = [
            _cached(client.model, hit, item.rubric)
            for client, hit in zip(self.judges_of(item), hits, strict=True)
        ]
        return self._combine(item, str(hits[0]["prompt_hash"]), outcomes)

    def _remember(self, entry: dict[str, Any]) -> None:
        self._memory[entry["_id"]] = entry
        self._memory.move_to_end(entry["_id"])
        while len(self._memory) > self._memory_entries:
            self._memory.popitem(last=False)

    async def _judge_one(
        self, item: JudgeInput, keys: list[str], new_entries: list[dict[str, Any]]
    ) -> PanelResult:
        hits = [self._memory.get(key) for key in keys]
        prompt: tuple[list[dict[str, Any]], str] | None = None
        if any(hit is None for hit in hits):
            messages = build_messages(
                item.rubric,
                question=item.question,
                reference=item.reference,
                key_points=item.key_points,
                answer=item.answer,
                images=item.images,
            )
            prompt = (messages, prompt_hash(messages))
        outcomes = await asyncio.gather(
            *(
                self._ask(client, item, key, hit, prompt, new_entries)
                for client, key, hit in zip(self.judges_of(item), keys, hits, strict=True)
            )
        )
        ph = prompt[1] if prompt else str(hits[0]["prompt_hash"])  # type: ignore[index]
        return self._combine(item, ph, list(outcomes))

    def _combine(self, item: JudgeInput, ph: str, outcomes: list[JudgeOutcome]) -> PanelResult:
        """The panel's score from its judges' verdicts."""
        flags = _flags(item.answer)
        verdicts = [o.verdict for o in outcomes if o.verdict is not None]
        scale = item.rubric.scale
        if not verdicts:
            return PanelResult(item.rubric, ph, tuple(outcomes), flags, None, 0.0)
        combined = (
            verdicts[0].score
            if len(verdicts) == 1
            else aggregate_panel([v.score for v in verdicts], self.rule)
        )
        score = scale.normalise(combined)
        recall = (
            None
            if not item.key_points
            else (
                key_point_recall(verdicts[0].key_points_covered, item.key_points)
                if len(verdicts) == 1
                else aggregate_panel(
                    [key_point_recall(v.key_points_covered, item.key_points) for v in verdicts],
                    self.rule,
                )
            )
        )
        if flags:
            # The rubric tells the judge so; this holds even for a judge that was fooled. A
            # judge fooled into the score may be fooled into the key points: both are capped.
            cap = scale.normalise(injection_cap(item.rubric))
            score = min(score, cap)
            recall = None if recall is None else min(recall, cap)
        criteria = self._criteria(item.rubric, verdicts, bool(flags))
        spread = panel_spread([v.normalised for v in verdicts]) if len(verdicts) > 1 else 0.0
        return PanelResult(item.rubric, ph, tuple(outcomes), flags, score, spread, recall, criteria)

    def _criteria(
        self, rubric: Rubric, verdicts: Sequence[Verdict], capped: bool
    ) -> tuple[tuple[str, float], ...]:
        """Per criterion, the scores of the verdicts that gave criteria, combined by the
        panel rule; capped like the score for an answer that addresses the judge."""
        given = [dict(v.criteria) for v in verdicts if v.criteria]
        if not given:
            return ()
        cap = float(injection_cap(rubric)) if capped else float(rubric.scale.max)
        return tuple(
            (
                c.name,
                min(
                    cap,
                    given[0][c.name]
                    if len(given) == 1
                    else aggregate_panel([g[c.name] for g in given], self.rule),
                ),
            )
            for c in rubric.criteria
        )

    async def _ask(
        self,
        client: JudgeModel,
        item: JudgeInput,
        key: str,
        hit: dict[str, Any] | None,
        prompt: tuple[list[dict[str, Any]], str] | None,
        new_entries: list[dict[str, Any]],
    ) -> JudgeOutcome:
        if hit is not None:
            return _cached(client.model, hit, item.rubric)
        assert prompt is not None
        messages, ph = prompt
        schema = (
            verdict_schema(item.rubric, len(item.key_points))
            if client.structured != "none"
            else None
        )
        replies: list[JudgeReply] = []
        async with self._concurrency:
            reply = await client.reply(messages, schema)
            replies.append(reply)
            try:
                verdict, structured = _read(client.model, reply, item, schema)
            except MalformedVerdict as first:
                repair = [
                    *messages,
                    {"role": "assistant", "content": reply.text},
                    {"role": "user", "content": REPAIR_PROMPT.format(error=first)},
                ]
                reply = await client.reply(repair, schema)
                replies.append(reply)
                try:
                    verdict, structured = _read(client.model, reply, item, schema)
                except MalformedVerdict as second:
                    # A recorded failure, not a zero; not cached, so a later request asks again.
                    return JudgeOutcome(
                        client.model,
                        None,
                        reply.text,
                        error=f"malformed verdict twice: {second}",
                        **_cost(replies),
                    )
        raw = reply.text
        new_entries.append(
            {
                "_id": key,
                "model": client.model,
                "prompt_hash": ph,
                "rubric_id": item.rubric.id,
                "rubric_version": item.rubric.version,
                "raw_output": raw,
                # The parsed verdict: a hit needs no parsing.
                "score": verdict.score,
                "raw_score": verdict.raw_score,
                "key_points_covered": list(verdict.key_points_covered),
                # Per criterion ([] when the judge gave none): a list, as names are data.
                "criteria": [{"name": n, "score": v} for n, v in verdict.criteria],
                "rationale": verdict.rationale,
                "structured": structured,
                "created_at": datetime.now(UTC),
            }
        )
        return JudgeOutcome(client.model, verdict, raw, structured=structured, **_cost(replies))


def _read(
    model: str, reply: JudgeReply, item: JudgeInput, schema: dict[str, Any] | None
) -> tuple[Verdict, bool]:
    """The verdict of a reply, and whether it was read as structured: a reply decoded under
    the schema is read strictly; one that does not validate (or had no schema) by the text
    parser.

    Raises:
        MalformedVerdict: neither reading found a verdict.
    """
    if reply.structured and schema is not None:
        try:
            verdict = read_structured(reply.text, item.rubric, schema, answer=item.answer)
        except MalformedVerdict:
            pass
        else:
            VERDICTS.labels("structured", model).inc()
            return verdict, True
    try:
        verdict = parse_verdict(reply.text, item.rubric, answer=item.answer)
    except MalformedVerdict:
        VERDICTS.labels("malformed", model).inc()
        raise
    VERDICTS.labels("text", model).inc()
    return verdict, False


def _cost(replies: Sequence[JudgeReply]) -> dict[str, Any]:
    return {
        "calls": len(replies),
        "prompt_tokens": sum(r.prompt_tokens for r in replies),
        "completion_tokens": sum(r.completion_tokens for r in replies),
        "gpu_seconds": sum(r.gpu_seconds for r in replies),
    }


def _cached(model: str, hit: dict[str, Any], rubric: Rubric) -> JudgeOutcome:
    """A cached verdict: no call, no tokens."""
    return JudgeOutcome(
        model,
        _verdict(hit, rubric),
        hit["raw_output"],
        cached=True,
        structured=bool(hit.get("structured", False)),
    )


def _verdict(entry: dict[str, Any], rubric: Rubric) -> Verdict:
    return Verdict(
        score=entry["score"],
        raw_score=entry["raw_score"],
        scale_min=rubric.scale.min,
        scale_max=rubric.scale.max,
        key_points_covered=tuple(entry["key_points_covered"]),
        rationale=entry["rationale"],
        rubric_id=rubric.id,
        rubric_version=rubric.version,
        rubric_hash=rubric.content_hash,
        # Entries cached before verdicts scored criteria have none.
        criteria=tuple((c["name"], c["score"]) for c in entry.get("criteria", [])),
    )


@functools.lru_cache(maxsize=65_536)
def _flags(answer: str) -> tuple[str, ...]:
    """Injection flags of an answer (the same answer is checked once per process)."""
    return tuple(detect_injection(answer))
