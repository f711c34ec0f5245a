"""Aggregation: record item scores once each, and build the report once all are in."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from aggregator.core.parts import (
    Entry,
    ScoredBatch,
    bootstrap_units,
    coverage_from_progress,
    coverage_record,
    dataset_metrics,
    judge_lineage,
    merge_entries,
    rules_from_progress,
    scores_digest,
)
from aggregator.core.ports import ScoresStore
from aggregator.core.report import build_report
from aggregator.core.uncertainty import bootstrap_report
from medbench.submission.v1 import submission_events_pb2
from medbench_messaging import topics
from medbench_messaging.publisher import Outgoing
from medbench_runtime.timestamps import timestamp

log = logging.getLogger(__name__)

AGGREGATOR_VERSION = "aggregator/1"
REPLAYED = Counter(
    "medbench_aggregator_replayed_batches_total", "Score batches delivered again and ignored."
)
REPORTS = Counter("medbench_aggregator_reports_total", "Reports built.")
PARTIAL_REPORTS = Counter(
    "medbench_aggregator_partial_reports_total",
    "Reports built with some dataset of their track unscored (marked partial).",
)


class Aggregation:
    """Idempotent: a batch is counted once; a report is built once."""

    def __init__(self, scores: ScoresStore) -> None:
        self._scores = scores

    async def record(self, batch: ScoredBatch) -> None:
        """Stores and counts a batch of item scores (once), and completes the submission
        when every expected part is in."""
        progress = {
            "tenant_id": batch.tenant_id,
            "pool_id": batch.pool_id,
            "expected": batch.expected_items,
            "expected_scores": batch.expected_scores or batch.expected_items,
            # Every batch of a submission carries the same (its pool's): the first one's is kept.
            "coverage": coverage_record(batch.coverage),
        }
        counted = await self._scores.add_batch(batch, progress)
        if counted is None:
            REPLAYED.inc()
            log.info("batch %s already recorded", batch.key)
        await self.maybe_complete(batch.submission_id, counted)

    async def maybe_complete(
        self, submission_id: str, counted: Mapping[str, Any] | None = None
    ) -> None:
        """Builds and stores the report when every expected item is scored. ``counted``: the
        progress record as this replica's write left it (else it is read)."""
        progress = counted if counted is not None else await self._scores.progress(submission_id)
        wanted = progress.get("expected_scores", progress["expected"]) if progress else 0
        if progress is None or progress["completed"] or progress["scored"] < wanted:
            return
        items: dict[tuple[str, str], Entry] = {}
        versions = set()
        for version, entries in await self._scores.scored(submission_id):
            versions.add(version)
            for e in entries:
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
        metrics = dataset_metrics(items.values())
        coverage = coverage_from_progress(progress.get("coverage"))
        report = build_report([item for item, _ in merged], rules, coverage)
        intervals = bootstrap_report(bootstrap_units(merged, rules))
        digest = scores_digest(
            [(i, c, e.score) for (i, c), e in items.items()], await self._scores.digest_key()
        )
        now = datetime.now(UTC)
        doc = {
            "_id": submission_id,
            "tenant_id": progress["tenant_id"],
            "overall": report.overall,
            "overall_low": intervals.overall.low,
            "overall_high": intervals.overall.high,
            "scored_items": len(items),
            # Partial: the overall is the mean of the dimensions present (README "Reports").
            "partial": report.partial,
            "missing_dimensions": list(report.missing_dimensions),
            "missing_datasets": list(report.missing_datasets),
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
                    "metric": metrics.get(d.dataset, ""),
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
        event = submission_events_pb2.SubmissionCompleted(
            event_id=f"{submission_id}:completed",
            submission_id=submission_id,
            tenant_id=progress["tenant_id"],
            overall=report.overall,
            report_digest=digest,
            scored_items=len(items),
            completed_at=timestamp(now),
        )
        outgoing = Outgoing(topics.SUBMISSION_COMPLETED, event, key=submission_id)
        if not await self._scores.complete(doc, [(event.event_id, outgoing)]):
            return
        REPORTS.inc()
        log.info(
            "report for %s: overall %.2f over %d items", submission_id, report.overall, len(items)
        )
        if report.partial:
            PARTIAL_REPORTS.inc()
            log.warning(
                "report for %s is partial: no scored item in dimensions %s, datasets %s",
                submission_id,
                ", ".join(report.missing_dimensions) or "(none)",
                ", ".join(report.missing_datasets),
            )
