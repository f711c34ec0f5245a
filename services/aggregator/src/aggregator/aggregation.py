"""The aggregation use case: record item scores, and build the report once all are in."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter
from pymongo.errors import DuplicateKeyError

from aggregator.adapters.mongo_scores import MongoScores, rules_from_progress
from aggregator.adapters.score_codec import Entry, entries, entry_of, pack
from aggregator.core.report import ScoredItem, build_report, merge
from aggregator.core.uncertainty import Unit, bootstrap_report
from medbench.scoring.v1 import scoring_events_pb2
from medbench.submission.v1 import submission_events_pb2
from medbench_messaging import topics
from medbench_messaging.publisher import Outgoing
from medbench_storage.client import in_transaction
from medbench_storage.infra import Infrastructure

log = logging.getLogger(__name__)

AGGREGATOR_VERSION = "aggregator/1"
REPLAYED = Counter(
    "medbench_aggregator_replayed_batches_total", "Score batches delivered again and ignored."
)
REPORTS = Counter("medbench_aggregator_reports_total", "Reports built.")


def scores_digest(items: list[tuple[str, str, float]]) -> str:
    """SHA-256 over the sorted (item_id, component, score) triples that fed a report."""
    h = hashlib.sha256()
    for item_id, component, score in sorted(items):
        h.update(f"{item_id}\t{component}\t{score!r}\n".encode())
    return h.hexdigest()


Merged = list[tuple[ScoredItem, tuple[float, ...]]]


def merged_items(scores: Iterable[dict[str, Any]]) -> list[ScoredItem]:
    """One ScoredItem per item: every component from every scorer, merged by the item's rule
    (default mean: "key_point_recall+judge" weighs recall and judge equally).

    A part the judge could not score (``unscored``) contributes no component; an item left
    with none is not in the means at all (a recorded failure is not a zero).
    """
    return [item for item, _ in merge_parts(scores)]


def bootstrap_units(merged: Merged, rules: dict[str, str]) -> list[Unit]:
    """The scoring units the intervals resample (from ``merge_parts``): items, or permutation
    groups (scored by their worst permutation) under "all_permutations". An item judged by a
    panel carries the score it would have with each single judge, so the panel's disagreement
    is resampled too.
    """
    units: list[Unit] = []
    groups: dict[tuple[str, str], list[ScoredItem]] = {}
    for item, panel in merged:
        if rules.get(item.dataset, "mean") == "all_permutations":
            groups.setdefault((item.dataset, item.group_id), []).append(item)
        else:
            units.append(Unit(item.dataset, item.dimension, item.score, panel))
    for (dataset, _), members in sorted(groups.items()):
        units.append(Unit(dataset, members[0].dimension, min(m.score for m in members)))
    return units


def merge_parts(scores: Iterable[dict[str, Any]]) -> Merged:
    """``merge_entries`` over per-item score documents."""
    return merge_entries(map(entry_of, scores))


def merge_entries(entries: Iterable[Entry]) -> Merged:
    """Every item's merged score, with the scores it would have under each single judge of
    its panel (empty without a panel)."""
    by_item: dict[str, Entry | list[Entry]] = {}
    for e in entries:
        held = by_item.get(e.item_id)
        if held is None:
            by_item[e.item_id] = e
        elif isinstance(held, list):
            held.append(e)
        else:
            by_item[e.item_id] = [held, e]
    out: Merged = []
    for item_id in sorted(by_item):
        found = by_item[item_id]
        if not isinstance(found, list):
            # Most items: one scorer's part, nothing to merge across scorers.
            if found.unscored:
                continue
            pairs = found.components
            score = (
                pairs[0][1] if len(pairs) == 1 else merge([c for _, c in pairs], found.merge_rule)
            )
            panel = found.judge_scores if len(found.judge_scores) > 1 else ()
            item = ScoredItem(item_id, found.dataset, found.dimension, found.group_id, score)
            out.append((item, panel))
            continue
        parts = sorted(found, key=lambda e: e.component)
        first = parts[0]
        scored = [p for p in parts if not p.unscored]
        components = [c for p in scored for _, c in p.components]
        if not components:
            continue
        rule = first.merge_rule
        score = components[0] if len(components) == 1 else merge(components, rule)
        panel: tuple[float, ...] = ()
        judged = [p for p in scored if len(p.judge_scores) > 1]
        if len(judged) == 1:
            others = [c for p in scored if p is not judged[0] for _, c in p.components]
            panel = tuple(merge([*others, j], rule) for j in judged[0].judge_scores)
        item = ScoredItem(item_id, first.dataset, first.dimension, first.group_id, score)
        out.append((item, panel))
    return out


def judge_lineage(parts: Iterable[Entry]) -> dict[str, list[str]]:
    """The distinct judge models, rubric versions and calibrations behind a report's scores."""
    models: set[str] = set()
    rubrics: set[str] = set()
    calibrations: set[str] = set()
    for part in parts:
        if part.judge:
            models.update(part.judge.get("models", ()))
            rubrics.add(part.judge.get("rubric", ""))
            calibrations.add(part.judge.get("calibration_id", ""))
    return {
        "judge_models": sorted(models),
        "rubric_versions": sorted(rubrics - {""}),
        "calibration_ids": sorted(calibrations - {""}),
    }


def _judge_lineage(j: scoring_events_pb2.JudgeLineage) -> dict[str, Any]:
    return {
        "models": list(j.judge_models),
        "rubric": f"{j.rubric_id}.v{j.rubric_version}",
        "rubric_hash": j.rubric_hash,
        "prompt_hash": j.prompt_hash,
        "calibration_id": j.calibration_id,
        "flags": list(j.injection_flags),
        "judge_scores": list(j.judge_scores),
    }


class Aggregation:
    """Idempotent: a batch is counted once; a report is built once."""

    def __init__(self, infra: Infrastructure, scores: MongoScores) -> None:
        self._infra = infra
        self._scores = scores

    async def record(self, event: scoring_events_pb2.ItemsScored) -> None:
        component = event.scores[0].component if event.scores else "metric"
        doc = {
            # The producer's deterministic event id: a redelivery hits the same key, and two
            # scorers' batches for the same responses never collide.
            "_id": event.event_id or f"{event.submission_id}:{event.batch_id}:{component}",
            "submission_id": event.submission_id,
            "batch_id": event.batch_id,
            "n": len(event.scores),
            "scorer_version": event.scorer_version,
            **pack(
                [
                    {
                        "item_id": s.item_id,
                        "dataset": s.dataset,
                        "dimension": s.dimension,
                        "group_id": s.group_id,
                        "component": s.component,
                        "metric": s.metric,
                        "score": s.score,
                        "parsed": s.parsed,
                        "prompt_hash": s.prompt_hash,
                        # Kept apart, so the item's merge covers every component of every scorer.
                        "components": [[c.name, c.score] for c in s.components]
                        or [[s.component, s.score]],
                        "merge_rule": s.merge_rule or "mean",
                        "counts": [s.tp, s.fp, s.fn],
                        **({"unscored": True} if s.unscored else {}),
                        # Judge lineage, for the report (raw outputs stay with the judge).
                        **({"judge": _judge_lineage(s.judge)} if s.HasField("judge") else {}),
                    }
                    for s in event.scores
                ]
            ),
        }
        progress = {
            "tenant_id": event.tenant_id,
            "pool_id": event.pool_id,
            "expected": event.expected_items,
            "expected_scores": event.expected_scores or event.expected_items,
        }

        async def commit(session: Any) -> dict[str, Any]:
            return await self._scores.add_batch(session, doc, progress, dict(event.dataset_rules))

        try:
            counted: dict[str, Any] | None = await in_transaction(self._infra.client, commit)
        except DuplicateKeyError:
            REPLAYED.inc()
            log.info("batch %s already recorded", doc["_id"])
            counted = None
        await self.maybe_complete(event.submission_id, counted)

    async def maybe_complete(
        self, submission_id: str, counted: dict[str, Any] | None = None
    ) -> None:
        """Builds and stores the report when every expected item is scored. ``counted``: the
        progress record as this replica's write left it (else it is read)."""
        progress = counted if counted is not None else await self._scores.progress(submission_id)
        wanted = progress.get("expected_scores", progress["expected"]) if progress else 0
        if progress is None or progress["completed"] or progress["scored"] < wanted:
            return
        batches = await self._scores.batches(submission_id)
        items: dict[tuple[str, str], Entry] = {}
        versions = set()
        for batch in batches:
            versions.add(batch.get("scorer_version", ""))
            for e in entries(batch):
                items[(e.item_id, e.component)] = e
        # Distinct (item, component) parts, not the counter, decide: a batch delivered again
        # under another id (one split differently) counts twice on the counter, never here.
        if len({item_id for item_id, _ in items}) < progress["expected"] or len(items) < wanted:
            log.warning(
                "submission %s: counter says complete but only %d distinct item parts",
                submission_id,
                len(items),
            )
            return
        rules = rules_from_progress(progress.get("rules", []))
        merged = merge_entries(items.values())
        report = build_report([item for item, _ in merged], rules)
        intervals = bootstrap_report(bootstrap_units(merged, rules))
        digest = scores_digest([(i, c, e.score) for (i, c), e in items.items()])
        now = datetime.now(UTC)
        doc = {
            "_id": submission_id,
            "tenant_id": progress["tenant_id"],
            "overall": report.overall,
            "overall_low": intervals.overall.low,
            "overall_high": intervals.overall.high,
            "scored_items": len(items),
            "dimensions": [
                {
                    "dimension": d.dimension,
                    "score": d.score,
                    "datasets": d.n_datasets,
                    "low": intervals.dimensions[d.dimension].low,
                    "high": intervals.dimensions[d.dimension].high,
                }
                for d in report.dimensions
            ],
            "datasets": [
                {
                    "dataset": d.dataset,
                    "dimension": d.dimension,
                    "score": d.score,
                    "items": d.n_items,
                    "units": d.n_units,
                    "rule": rules.get(d.dataset, "mean"),
                    "item_mean": d.item_mean,
                    "low": intervals.datasets[d.dataset].low,
                    "high": intervals.datasets[d.dataset].high,
                }
                for d in report.datasets
            ],
            "lineage": {
                "pool_id": progress["pool_id"],
                "scorer_version": ",".join(sorted(versions)),
                "aggregator_version": AGGREGATOR_VERSION,
                "item_scores_digest": digest,
                **judge_lineage(items.values()),
            },
            "created_at": now,
        }
        completed_at = Timestamp()
        completed_at.FromDatetime(now)
        event = submission_events_pb2.SubmissionCompleted(
            event_id=f"{submission_id}:completed",
            submission_id=submission_id,
            tenant_id=progress["tenant_id"],
            overall=report.overall,
            report_digest=digest,
            scored_items=len(items),
            completed_at=completed_at,
        )

        async def commit(session: Any) -> None:
            await self._scores.store_report(session, doc)
            await self._infra.outbox.add(
                session,
                [(event.event_id, Outgoing(topics.SUBMISSION_COMPLETED, event, key=submission_id))],
            )

        try:
            await in_transaction(self._infra.client, commit)
        except DuplicateKeyError:
            return
        REPORTS.inc()
        self._infra.relay.notify()
        log.info(
            "report for %s: overall %.2f over %d items", submission_id, report.overall, len(items)
        )
