"""Kafka handlers of the metric scorer."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from medbench.inference.v1 import inference_events_pb2
from medbench.scoring.v1 import scoring_events_pb2
from medbench_messaging import topics
from medbench_messaging.consumer import Delivery
from medbench_messaging.publisher import Outgoing, Publisher
from medbench_messaging.sizing import MAX_NOTE_BYTES, clip_utf8
from medbench_runtime.metrics import count_items
from medbench_storage.pool_keys import MongoPoolKeys, PoolKey
from metric_scorer.adapters.mongo_variants import MongoVariants
from metric_scorer.core.components import merge, plan, score_objective
from metric_scorer.core.metrics import ItemKey, shown_reference

SCORER_VERSION = "metric-scorer/2"


class MismatchedResponse(ValueError):
    """A response names an item that is not at its ordinal in the pool."""


def expected_scores(pool: list[PoolKey]) -> int:
    """ItemScore records a submission of this pool will have in all."""
    # A plan depends on the metric and on whether the item has key points: planned once per
    # kind, not once per item.
    kinds = Counter((k.metric, bool(k.key_points)) for k in pool)
    return sum(n * plan(metric, ("",) if has else ()).records for (metric, has), n in kinds.items())


# Pool id -> (the key list it was counted over, its expected_scores): a pool is immutable, and
# counting a 700,000-item pool for every batch made scoring quadratic in the pool's size.
_TOTALS: dict[str, tuple[list[PoolKey], int]] = {}
_TOTALS_KEPT = 4  # as many pools as MongoPoolKeys keeps


def pool_total(pool_id: str, pool: list[PoolKey]) -> int:
    """``expected_scores(pool)``, counted once per key list (MongoPoolKeys caches the list)."""
    held = _TOTALS.get(pool_id)
    if held is not None and held[0] is pool:
        return held[1]
    total = expected_scores(pool)
    if len(_TOTALS) >= _TOTALS_KEPT:
        _TOTALS.pop(next(iter(_TOTALS)))
    _TOTALS[pool_id] = (pool, total)
    return total


async def on_responses_recorded(
    event: inference_events_pb2.ResponsesRecorded,
    delivery: Delivery,
    *,
    keys: MongoPoolKeys,
    variants: MongoVariants,
    publisher: Publisher,
    merge_rule: str = "mean",
) -> None:
    """Scores a batch's objective components, sends judge components to the judge, publishes
    both (deterministic ids and content, so a redelivery changes nothing downstream)."""
    # Each download shows choice options in its tenant's order; keys are in canonical order.
    # Both are cached; read together, a submission's first batch waits for the slower only.
    pool, orders = await asyncio.gather(
        keys.keys(event.pool_id), variants.orders(event.submission_id)
    )
    total = pool_total(event.pool_id, pool)
    scores: list[scoring_events_pb2.ItemScore] = []
    judged: list[scoring_events_pb2.ItemScore] = []
    tasks: list[scoring_events_pb2.JudgeTask] = []
    rules: dict[str, str] = {}
    for response in event.responses:
        if (
            not 0 <= response.ordinal < len(pool)
            or pool[response.ordinal].item_id != response.item_id
        ):
            raise MismatchedResponse(
                f"item {response.item_id} is not at ordinal {response.ordinal} of {event.pool_id}"
            )
        key = pool[response.ordinal]
        rules[key.dataset] = key.rule
        steps = plan(key.metric, key.key_points)
        common = {
            "prompt_hash": response.prompt_hash,
            "item_id": key.item_id,
            "dataset": key.dataset,
            "dimension": key.dimension,
            "group_id": key.group_id,
            "merge_rule": merge_rule,
        }
        if steps.objective:
            reference = key.reference
            if key.metric.startswith("choice"):
                reference = shown_reference(key.reference, orders.get(key.item_id))
            result = score_objective(
                None if response.missing else response.answer,
                ItemKey(key.item_id, key.dataset, key.metric, reference, key.key_points),
                steps.objective,
            )
            item = scoring_events_pb2.ItemScore(
                component="metric",
                metric=key.metric,
                parsed=clip_utf8(result.parsed, MAX_NOTE_BYTES),
                score=merge([s for _, s in result.components], merge_rule),
                components=[
                    scoring_events_pb2.ComponentScore(name=n, score=s) for n, s in result.components
                ],
                **common,
            )
            if result.counts is not None:
                item.tp, item.fp, item.fn = result.counts.tp, result.counts.fp, result.counts.fn
            scores.append(item)
        if steps.judged:
            if response.missing:
                # Nothing to judge: an unanswered item scores 0 without a judge call.
                judged.append(
                    scoring_events_pb2.ItemScore(
                        component="judge",
                        metric="judge",
                        score=0.0,
                        parsed="no answer",
                        components=[scoring_events_pb2.ComponentScore(name="judge", score=0.0)],
                        **common,
                    )
                )
            else:
                tasks.append(
                    scoring_events_pb2.JudgeTask(
                        prompt_hash=response.prompt_hash,
                        item_id=key.item_id,
                        dataset=key.dataset,
                        rubric_id=key.rubric_id,
                        answer=response.answer,
                        ordinal=response.ordinal,
                        dimension=key.dimension,
                        group_id=key.group_id,
                        merge_rule=merge_rule,
                    )
                )
    scored_at = Timestamp()
    scored_at.FromDatetime(datetime.now(UTC))
    out: list[Outgoing] = []
    for component, batch in (("metric", scores), ("judge", judged)):
        if batch:
            message = scoring_events_pb2.ItemsScored(
                event_id=f"{event.submission_id}:{event.batch_id}:{component}",
                submission_id=event.submission_id,
                tenant_id=event.tenant_id,
                pool_id=event.pool_id,
                batch_id=event.batch_id,
                expected_items=event.expected_items,
                expected_scores=total,
                scores=batch,
                dataset_rules=rules,
                scorer_version=SCORER_VERSION,
                scored_at=scored_at,
            )
            out.append(Outgoing(topics.ITEM_SCORED, message, key=event.submission_id))
    if tasks:
        request = scoring_events_pb2.JudgeRequested(
            event_id=f"{event.submission_id}:{event.batch_id}:judge-requested",
            submission_id=event.submission_id,
            pool_id=event.pool_id,
            batch_id=event.batch_id,
            tasks=tasks,
            tenant_id=event.tenant_id,
            expected_items=event.expected_items,
            expected_scores=total,
            dataset_rules=rules,
            self_test=event.self_test,
            track=event.track,
        )
        out.append(Outgoing(topics.JUDGE_REQUESTED, request, key=event.submission_id))
    await publisher.publish(out)
    count_items("scored", event.tenant_id, event.track, len(scores) + len(judged))
