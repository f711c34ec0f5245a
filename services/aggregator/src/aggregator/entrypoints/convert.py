"""Protobuf <-> core for the aggregator: the one place both worlds meet."""

from __future__ import annotations

from typing import Any

from aggregator.core.board import Publication
from aggregator.core.parts import ItemPart, ScoredBatch, part_score
from aggregator.usecases.leaderboards import SHOWN_NAMES
from aggregator.usecases.reports import ItemResult
from medbench.common.v1 import common_pb2
from medbench.leaderboard.v1 import leaderboard_service_pb2 as lb
from medbench.report.v1 import report_pb2
from medbench.scoring.v1 import scoring_events_pb2
from medbench_runtime.timestamps import timestamp

_RULE_PREFIX = "MERGE_RULE_"


def merge_rule_name(rule: scoring_events_pb2.MergeRule.ValueType) -> str:
    """The rule's name as the core and the stored records know it ("mean", "min"); a scorer
    that named none gets "mean"."""
    if rule == scoring_events_pb2.MERGE_RULE_UNSPECIFIED:
        return "mean"
    return scoring_events_pb2.MergeRule.Name(rule).removeprefix(_RULE_PREFIX).lower()


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


def part_from_proto(s: scoring_events_pb2.ItemScore) -> ItemPart:
    rule = merge_rule_name(s.merge_rule)
    components = tuple((c.name, c.score) for c in s.components)
    return ItemPart(
        item_id=s.item_id,
        dataset=s.dataset,
        dimension=s.dimension,
        group_id=s.group_id,
        component=s.component,
        metric=s.metric,
        score=part_score(s.score, components, rule),
        parsed=s.parsed,
        prompt_hash=s.prompt_hash,
        components=components,
        merge_rule=rule,
        counts=(s.tp, s.fp, s.fn),
        unscored=s.unscored,
        judge=_judge_lineage(s.judge) if s.HasField("judge") else None,
    )


def batch_from_proto(event: scoring_events_pb2.ItemsScored) -> ScoredBatch:
    context = event.context
    return ScoredBatch(
        event_id=event.event_id,
        submission_id=context.submission_id,
        batch_id=event.batch_id,
        tenant_id=context.tenant_id,
        pool_id=context.pool_id,
        expected_items=context.expected_items,
        expected_scores=context.expected_scores,
        dataset_rules=dict(context.dataset_rules),
        scorer_version=event.scorer_version,
        parts=tuple(part_from_proto(s) for s in event.scores),
        coverage=dict(context.coverage),
    )


def report_to_proto(doc: dict[str, Any], equated: float | None = None) -> report_pb2.Report:
    """The stored report as the partner sees it."""
    report = report_pb2.Report(
        submission_id=doc["_id"],
        tenant_id=doc["tenant_id"],
        overall=doc["overall"],
        overall_low=doc.get("overall_low", doc["overall"]),
        overall_high=doc.get("overall_high", doc["overall"]),
        dimensions=[report_pb2.DimensionScore(**d) for d in doc["dimensions"]],
        datasets=[report_pb2.DatasetScore(**d) for d in doc["datasets"]],
        lineage=common_pb2.Lineage(**doc["lineage"]),
        created_at=timestamp(doc["created_at"]),
        scored_items=doc["scored_items"],
        # Reports built before coverage was checked have none of these: not partial.
        partial=doc.get("partial", False),
        missing_dimensions=doc.get("missing_dimensions", []),
        missing_datasets=doc.get("missing_datasets", []),
        live=doc.get("live", False),
    )
    if equated is not None:
        report.equated = equated
    return report


def item_result_to_proto(result: ItemResult) -> report_pb2.ItemResult:
    """One item's stored parts as the owner sees them (no reference is ever stored here)."""
    parts = result.parts
    first = parts[0]
    out = report_pb2.ItemResult(
        item_id=result.item_id,
        dataset=first["dataset"],
        dimension=first["dimension"],
        group_id=first["group_id"],
        merge_rule=first.get("merge_rule", "mean"),
        prompt_hash=next((p["prompt_hash"] for p in parts if p.get("prompt_hash")), ""),
    )
    if result.score is not None:
        out.score = result.score
    for p in parts:
        judge = p.get("judge", {})
        out.parts.append(
            report_pb2.ItemPart(
                component=p["component"],
                metric=p.get("metric", ""),
                components=[
                    report_pb2.ComponentResult(name=n, score=v)
                    for n, v in p.get("components", [[p["component"], p["score"]]])
                ],
                parsed=p.get("parsed", ""),
                unscored=bool(p.get("unscored")),
                judge_models=judge.get("models", []),
                rubric_version=judge.get("rubric", ""),
                rubric_hash=judge.get("rubric_hash", ""),
                prompt_hash=judge.get("prompt_hash", ""),
                calibration_id=judge.get("calibration_id", ""),
                injection_flags=judge.get("flags", []),
            )
        )
    return out


def publication_from_proto(request: lb.PublishEntryRequest) -> Publication:
    return Publication(
        submission_id=request.submission_id,
        tenant_id=request.tenant_id,
        published=request.published,
        track=request.track,
        board=request.board,
        cycle=request.cycle,
        names={key: getattr(request, key) for key in SHOWN_NAMES},
        open_source=request.open_source,
        release_date=request.release_date,
    )


def entry_to_proto(e: dict[str, Any], rank: int, group: int) -> lb.LeaderboardEntry:
    entry = lb.LeaderboardEntry(
        rank=rank,
        group=group,
        submission_id=e["_id"],
        tenant_id=e["tenant_id"],
        model_name=e["model_name"],
        model_version=e["model_version"],
        organisation=e["organisation"],
        open_source=e["open_source"],
        parameter_count=e["parameter_count"],
        release_date=e.get("release_date", ""),
        cycle=e["cycle"],
        pool_id=e["pool_id"],
        overall=e["overall"],
        overall_low=e["overall_low"],
        overall_high=e["overall_high"],
        dimensions=[lb.EntryDimension(**d) for d in e["dimensions"]],
        published_at=timestamp(e["published_at"]),
        track=e["track"],
        board=e["board"],
        partial=e.get("partial", False),
        missing_dimensions=e.get("missing_dimensions", []),
        missing_datasets=e.get("missing_datasets", []),
    )
    if e.get("equated") is not None:
        entry.equated = e["equated"]
    return entry
