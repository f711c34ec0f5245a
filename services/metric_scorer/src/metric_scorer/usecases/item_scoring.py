"""ItemScoring: a batch of recorded responses in, item scores and judge requests out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

from prometheus_client import Counter

from medbench.scoring.v1 import scoring_events_pb2
from medbench_messaging import topics
from medbench_messaging.publisher import Outgoing
from medbench_messaging.sizing import MAX_NOTE_BYTES, clip_utf8
from medbench_runtime.metrics import count_items
from medbench_runtime.timestamps import timestamp
from metric_scorer.core.batch import MismatchedResponse, Response, ResponseBatch
from metric_scorer.core.canary import LeakSignal, original_answer
from metric_scorer.core.choice import shown_reference
from metric_scorer.core.components import (
    JUDGE,
    KEY_POINTS,
    Plan,
    PoolTotals,
    expected_scores,
    plan,
    score_objective,
)
from metric_scorer.core.ports import LeakSignals, PoolKeys, Publisher, SealedKey, Variants
from metric_scorer.core.types import ItemKey

SCORER_VERSION = "metric-scorer/3"
"""3: key-point recall is the judge's where a judge scores the item (else labelled lexical)."""
_RULE_PREFIX = "MERGE_RULE_"
LEAK_SIGNALS = Counter(
    "medbench_canary_original_answers_total",
    "Canary items answered with their original item's right answer (a leak signal; the "
    "evidence is in the sealed leak_signals collection).",
    ["tenant", "dataset"],
)
UNSCORABLE = Counter(
    "medbench_metric_scorer_unscorable_items_total",
    "Items whose key the metric scorer could not apply (a fault of the bank or registry, not of "
    "the answer): recorded unscored, the rest of their batch scored. Alert on any.",
    ["dataset"],
)
log = logging.getLogger(__name__)


def merge_rule_named(name: str) -> scoring_events_pb2.MergeRule.ValueType:
    """The MergeRule of a rule name ("mean", "min"), as scoring_events.proto declares them.

    Raises:
        ValueError: a name the wire contract does not declare.
    """
    known = [
        n.removeprefix(_RULE_PREFIX).lower()
        for n in scoring_events_pb2.MergeRule.keys()  # noqa: SIM118 - an EnumTypeWrapper
        if n != "MERGE_RULE_UNSPECIFIED"
    ]
    if name not in known:
        raise ValueError(f"unknown merge rule {name!r}; known: {known}")
    return scoring_events_pb2.MergeRule.Value(_RULE_PREFIX + name.upper())


class ItemScoring:
    """Scores a batch's objective components, sends judge components to the judge, and
    publishes both: deterministic ids and content, so a redelivery changes nothing downstream.
    """

    def __init__(
        self,
        keys: PoolKeys,
        variants: Variants,
        publisher: Publisher,
        merge_rule: str = "mean",
        totals: PoolTotals | None = None,
        signals: LeakSignals | None = None,
        judge_key_points: bool = True,
    ) -> None:
        """signals: where canaries answered with their original's answer are recorded (None:
        counted only).
        judge_key_points: the judge decides key-point recall of items it scores (their judge
        requests carry it; no metric part for it here); False: matched lexically here, named
        key_point_recall_lexical (settings.key_point_recall). ``totals`` must count under the
        same routing (built so when not given)."""
        self._keys = keys
        self._variants = variants
        self._publisher = publisher
        self._signals = signals
        # An unknown rule fails when the service starts, not per message.
        self._merge_rule = merge_rule_named(merge_rule)
        self._judge_key_points = judge_key_points
        self._totals = totals or PoolTotals(
            partial(expected_scores, judge_key_points=judge_key_points)
        )

    async def score_batch(self, batch: ResponseBatch) -> None:
        """Scores and publishes one batch.

        Raises:
            MismatchedResponse: a response's item is not at its ordinal in the pool.
        """
        # Each download shows choice options in its tenant's order, and a few items altered
        # (canaries, each with its own key); keys are in canonical order. Both are cached;
        # read together, a submission's first batch waits for the slower only.
        pool, variant = await asyncio.gather(
            self._keys.keys(batch.pool_id), self._variants.variant(batch.submission_id)
        )
        orders, canaries = variant.orders, variant.canaries
        scores: list[scoring_events_pb2.ItemScore] = []
        judged: list[scoring_events_pb2.ItemScore] = []
        tasks: list[scoring_events_pb2.JudgeTask] = []
        rules: dict[str, str] = {}
        signals: list[LeakSignal] = []
        for response in batch.responses:
            ordinal = response.ordinal
            if not 0 <= ordinal < len(pool) or pool[ordinal].item_id != response.item_id:
                raise MismatchedResponse(
                    f"item {response.item_id} is not at ordinal {ordinal} of {batch.pool_id}"
                )
            key = pool[ordinal]
            rules[key.dataset] = key.rule
            # A canary is scored like any item, against its own key: the pool key altered as
            # its prompt was (a detail canary), or through its order (an order canary, like
            # every choice item).
            canary = canaries.get(key.item_id)
            reference, key_points = key.reference, key.key_points
            if canary is not None and canary.own_key:
                reference = tuple(canary.alter_key(r) for r in reference)
                key_points = tuple(canary.alter_key(k) for k in key_points)
            steps = plan(key.metric, key_points, judge_key_points=self._judge_key_points)
            parsed = ""
            common = {
                "prompt_hash": response.prompt_hash,
                "item_id": key.item_id,
                "dataset": key.dataset,
                "dimension": key.dimension,
                "group_id": key.group_id,
                "merge_rule": self._merge_rule,
            }
            if steps.objective:
                part = self._objective(
                    batch, key, response, orders, reference, key_points, steps, common
                )
                scores.append(part)
                parsed = "" if part.unscored else part.parsed
            if canary is not None and not response.missing:
                matched = original_answer(canary.kind, canary.originals, response.answer, parsed)
                if matched:
                    signals.append(
                        LeakSignal(
                            batch.submission_id,
                            batch.tenant_id,
                            batch.pool_id,
                            key.item_id,
                            key.dataset,
                            canary.kind,
                            matched,
                        )
                    )
            if not steps.judged:
                continue
            if response.missing:
                # Nothing to judge: an unanswered item scores 0 without a judge call.
                names = (JUDGE, KEY_POINTS) if steps.judged_key_points else (JUDGE,)
                zero = scoring_events_pb2.ItemScore(
                    component="judge",
                    metric=steps.spec,
                    parsed="no answer",
                    components=[
                        scoring_events_pb2.ComponentScore(name=n, score=0.0) for n in names
                    ],
                    **common,
                )
                if len(names) == 1:
                    zero.score = 0.0
                judged.append(zero)
            else:
                tasks.append(
                    scoring_events_pb2.JudgeTask(
                        prompt_hash=response.prompt_hash,
                        item_id=key.item_id,
                        dataset=key.dataset,
                        rubric_id=key.rubric_id,
                        answer=response.answer,
                        ordinal=ordinal,
                        dimension=key.dimension,
                        group_id=key.group_id,
                        merge_rule=self._merge_rule,
                        key_point_recall=steps.judged_key_points,
                        metric=steps.spec,
                    )
                )
        total = self._totals.total(batch.pool_id, pool)
        coverage = await self._keys.coverage(batch.pool_id)
        events = self._events(batch, total, rules, coverage, scores, judged, tasks)
        if signals:
            # Recorded before the scores go out: a redelivery records them again, idempotently.
            if self._signals is not None:
                await self._signals.record(signals)
            for signal in signals:
                LEAK_SIGNALS.labels(signal.tenant_id, signal.dataset).inc()
        await self._publisher.publish(events)
        count_items("scored", batch.tenant_id, batch.track, len(scores) + len(judged))

    def _objective(
        self,
        batch: ResponseBatch,
        key: SealedKey,
        response: Response,
        orders: Mapping[str, tuple[int, ...]],
        reference: tuple[str, ...],
        key_points: tuple[str, ...],
        steps: Plan,
        common: Mapping[str, Any],
    ) -> scoring_events_pb2.ItemScore:
        """The metric part of one item. A key the scorer cannot apply (e.g. a reference
        letter beyond the item's options) must not stop its batch: the part is recorded
        unscored with why (counted towards completion, left out of the means, like a judge
        failure), counted for maintainers; its judge part, if any, is still requested."""
        options = 0
        try:
            if key.metric.startswith("choice"):
                order = orders.get(key.item_id)
                reference = shown_reference(reference, order)
                options = len(order or ())
            result = score_objective(
                None if response.missing else response.answer,
                ItemKey(key.item_id, key.dataset, key.metric, reference, key_points, options),
                steps.objective,
            )
        except (ValueError, KeyError, IndexError) as exc:
            UNSCORABLE.labels(key.dataset).inc()
            log.error("item %s of pool %s cannot be scored: %s", key.item_id, batch.pool_id, exc)
            return scoring_events_pb2.ItemScore(
                component="metric",
                metric=steps.spec,
                unscored=True,
                parsed=clip_utf8(f"not scored: {exc}", MAX_NOTE_BYTES),
                **common,
            )
        metric = scoring_events_pb2.ItemScore(
            component="metric",
            # The spec as scored: says key_point_recall_lexical where key points were matched here.
            metric=steps.spec,
            parsed=clip_utf8(result.parsed, MAX_NOTE_BYTES),
            components=[
                scoring_events_pb2.ComponentScore(name=n, score=s) for n, s in result.components
            ],
            **common,
        )
        if len(result.components) == 1:
            # Several components are merged by the aggregator, under merge_rule.
            metric.score = result.components[0][1]
        if result.counts is not None:
            counts = result.counts
            metric.tp, metric.fp, metric.fn = counts.tp, counts.fp, counts.fn
        return metric

    def _events(
        self,
        batch: ResponseBatch,
        total: int,
        rules: Mapping[str, str],
        coverage: Mapping[str, str],
        scores: list[scoring_events_pb2.ItemScore],
        judged: list[scoring_events_pb2.ItemScore],
        tasks: list[scoring_events_pb2.JudgeTask],
    ) -> list[Outgoing]:
        # The one place the envelope is built: every event of the batch carries it whole.
        context = scoring_events_pb2.ScoringContext(
            submission_id=batch.submission_id,
            tenant_id=batch.tenant_id,
            pool_id=batch.pool_id,
            expected_items=batch.expected_items,
            expected_scores=total,
            dataset_rules=rules,
            coverage=coverage,
        )
        scored_at = timestamp(datetime.now(UTC))
        out: list[Outgoing] = []
        for component, items in (("metric", scores), ("judge", judged)):
            if items:
                message = scoring_events_pb2.ItemsScored(
                    event_id=f"{batch.submission_id}:{batch.batch_id}:{component}",
                    batch_id=batch.batch_id,
                    context=context,
                    scores=items,
                    scorer_version=SCORER_VERSION,
                    scored_at=scored_at,
                )
                out.append(Outgoing(topics.ITEM_SCORED, message, key=batch.submission_id))
        if tasks:
            request = scoring_events_pb2.JudgeRequested(
                event_id=f"{batch.submission_id}:{batch.batch_id}:judge-requested",
                batch_id=batch.batch_id,
                context=context,
                tasks=tasks,
                self_test=batch.self_test,
                track=batch.track,
            )
            out.append(Outgoing(topics.JUDGE_REQUESTED, request, key=batch.submission_id))
        return out
