"""Protobuf <-> core for the judge scorer: the one place both worlds meet."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from judge_scorer.core.cost import JudgingCost
from judge_scorer.core.ratings import Rating
from judge_scorer.core.rubric import Rubric, canonical_json
from judge_scorer.usecases.panel import JudgeInput, PanelResult
from judge_scorer.usecases.reviews import ImageRange, PanelAgreement
from medbench.judge.v1 import judge_service_pb2
from medbench_runtime.timestamps import timestamp


def input_from_proto(request: judge_service_pb2.JudgeAnswerRequest, rubric: Rubric) -> JudgeInput:
    return JudgeInput(
        rubric, request.question, request.reference, tuple(request.key_points), request.answer
    )


def judged_to_proto(
    result: PanelResult, rubric: Rubric, calibration_id: str
) -> judge_service_pb2.JudgeAnswerResponse:
    return judge_service_pb2.JudgeAnswerResponse(
        score=0.0 if result.score is None else result.score,
        verdicts=[
            judge_service_pb2.JudgeVerdict(
                judge_model=o.model,
                score=o.verdict.score if o.verdict else 0.0,
                raw_score=o.verdict.raw_score if o.verdict else 0.0,
                key_points_covered=[str(k) for k in o.verdict.key_points_covered]
                if o.verdict
                else [],
                rationale=o.verdict.rationale if o.verdict else o.error,
                raw_output=o.raw_output,
                cached=o.cached,
                structured=o.structured,
                criteria=criteria_to_proto(o.verdict.criteria if o.verdict else ()),
            )
            for o in result.outcomes
        ],
        rubric_id=rubric.id,
        rubric_version=rubric.version,
        rubric_hash=rubric.content_hash,
        prompt_hash=result.prompt_hash,
        injection_flags=list(result.flags),
        calibration_id=calibration_id,
        panel_spread=result.spread,
        criteria=criteria_to_proto(result.criteria),
    )


def criteria_to_proto(
    scores: Iterable[tuple[str, float]],
) -> list[judge_service_pb2.CriterionScore]:
    return [judge_service_pb2.CriterionScore(name=n, score=s) for n, s in scores]


def rating_from_proto(r: judge_service_pb2.PhysicianRating) -> Rating:
    return Rating(
        item_id=r.item_id,
        dataset=r.dataset,
        dimension=r.dimension,
        question=r.question,
        reference=r.reference,
        key_points=tuple(r.key_points),
        answer=r.answer,
        score=r.score,
        rater_id=r.rater_id,
        rubric_id=r.rubric_id,
        criteria=criteria_from_proto(r.criteria),
    )


def criteria_from_proto(
    scores: Iterable[judge_service_pb2.CriterionScore],
) -> tuple[tuple[str, float], ...]:
    return tuple((s.name, s.score) for s in scores)


def calibration_to_proto(doc: dict[str, Any]) -> judge_service_pb2.Calibration:
    return judge_service_pb2.Calibration(
        calibration_id=doc["_id"],
        judge=doc["judge"],
        rubric_id=doc["rubric_id"],
        rubric_version=doc["rubric_version"],
        rubric_hash=doc["rubric_hash"],
        kappa=doc["kappa"],
        kappa_low=doc["kappa_low"],
        kappa_high=doc["kappa_high"],
        n=doc["n"],
        threshold=doc["threshold"],
        calibrated=doc["calibrated"],
        dimensions=[_dimension_to_proto(d) for d in doc["dimensions"]],
        measured_at=timestamp(doc["measured_at"]),
        judge_failures=doc.get("judge_failures", 0),
        # The report (absent from calibrations measured before it existed).
        answers=doc.get("answers", 0),
        min_ratings=doc.get("min_ratings", 0),
        quadratic=_interval_to_proto(doc.get("quadratic")),
        unweighted=_interval_to_proto(doc.get("unweighted")),
        score_bins=doc.get("score_bins", []),
        confusion=[judge_service_pb2.ConfusionRow(counts=row) for row in doc.get("confusion", [])],
        physician_ceiling=_ceiling_to_proto(doc.get("physician_ceiling")),
        reason=doc.get("reason", ""),
        interval_method=doc.get("interval_method", ""),
        gated_on=doc.get("gated_on", ""),
        criteria=[_criterion_to_proto(c) for c in doc.get("criteria", [])],
    )


def _criterion_to_proto(doc: dict[str, Any]) -> judge_service_pb2.CriterionAgreement:
    return judge_service_pb2.CriterionAgreement(
        criterion=doc["criterion"],
        n=doc["n"],
        answers=doc["answers"],
        quadratic=_interval_to_proto(doc.get("quadratic")),
        unweighted=_interval_to_proto(doc.get("unweighted")),
    )


def _interval_to_proto(doc: dict[str, Any] | None) -> judge_service_pb2.KappaInterval | None:
    if doc is None:
        return None
    return judge_service_pb2.KappaInterval(kappa=doc["kappa"], low=doc["low"], high=doc["high"])


def _dimension_to_proto(doc: dict[str, Any]) -> judge_service_pb2.DimensionAgreement:
    return judge_service_pb2.DimensionAgreement(
        dimension=doc["dimension"],
        kappa=doc["quadratic"]["kappa"] if "quadratic" in doc else doc["kappa"],
        n=doc["n"],
        answers=doc.get("answers", 0),
        quadratic=_interval_to_proto(doc.get("quadratic")),
        unweighted=_interval_to_proto(doc.get("unweighted")),
        passed=doc.get("passed", False),
    )


def _ceiling_to_proto(doc: dict[str, Any] | None) -> judge_service_pb2.PhysicianCeiling | None:
    if doc is None:
        return None
    return judge_service_pb2.PhysicianCeiling(
        quadratic=_interval_to_proto(doc), answers=doc["answers"], pairs=doc["pairs"]
    )


def review_to_proto(
    doc: dict[str, Any], rubric: Rubric | None = None, reviewer: str | None = None
) -> judge_service_pb2.Review:
    """The review as a physician rates it: with the rubric's data when given. For a caller with
    the reviewer role (``reviewer``: its physician id) without the panel's scores and without
    another physician's id; nothing of the submission (tenant, model, item) ever leaves."""
    holder = doc.get("reviewer_id", "")
    blind = reviewer is not None
    return judge_service_pb2.Review(
        review_id=doc["_id"],
        state=doc["state"],
        dataset=doc["dataset"],
        dimension=doc["dimension"],
        rubric_id=doc["rubric_id"],
        rubric_version=doc["rubric_version"],
        question=doc["question"],
        reference=doc["reference"],
        key_points=doc["key_points"],
        answer=doc["answer"],
        judge_scores=[] if blind else doc["judge_scores"],
        reviewer_id="" if blind and holder != reviewer else holder,
        score=doc.get("score", 0.0),
        lease_until=timestamp(doc.get("lease_until")),
        created_at=timestamp(doc.get("created_at")),
        rubric_json="" if rubric is None else canonical_json(rubric_view(rubric)),
        criteria=[
            judge_service_pb2.CriterionScore(name=c["name"], score=c["score"])
            for c in doc.get("criteria", [])
        ],
        # Bank content ids: the same for every tenant (never a watermarked copy's).
        image_ids=doc.get("image_ids") or [],
    )


def review_image_to_proto(image: ImageRange) -> judge_service_pb2.ReviewImage:
    return judge_service_pb2.ReviewImage(
        image_id=image.image_id,
        media_type=image.media_type,
        content=image.content,
        size=image.size,
    )


def rubric_view(rubric: Rubric) -> dict[str, Any]:
    """What a physician rates on: the rubric's data without the judge's output schema."""
    data = rubric.to_dict()
    data.pop("output_schema")
    return data


def agreement_to_proto(
    submission_id: str, agreement: PanelAgreement
) -> judge_service_pb2.PanelAgreement:
    return judge_service_pb2.PanelAgreement(
        submission_id=submission_id,
        judge_models=agreement.judge_models,
        alpha=agreement.overall.alpha,
        items=agreement.overall.items,
        datasets=[
            judge_service_pb2.DatasetPanelAgreement(dataset=name, alpha=a.alpha, items=a.items)
            for name, a in agreement.datasets
        ],
    )


def cost_to_proto(submission_id: str, rows: list[JudgingCost]) -> judge_service_pb2.JudgingCost:
    return judge_service_pb2.JudgingCost(
        submission_id=submission_id,
        rows=[
            judge_service_pb2.JudgingCostRow(
                dataset=r.dataset,
                judge_model=r.judge_model,
                items=r.items,
                calls=r.calls,
                cache_hits=r.cache_hits,
                prompt_tokens=r.prompt_tokens,
                completion_tokens=r.completion_tokens,
                gpu_seconds=r.gpu_seconds,
                structured_verdicts=r.structured,
                failures=r.failures,
            )
            for r in rows
        ],
    )
