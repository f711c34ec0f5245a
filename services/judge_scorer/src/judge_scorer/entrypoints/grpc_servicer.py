"""JudgeServicer: one-off judging, physician ratings, calibration and the review queue."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from judge_scorer.adapters.mongo_judge import MongoJudge, utcnow
from judge_scorer.core.agreement import krippendorff_alpha
from judge_scorer.core.rubric import Rubric, UnknownRubric
from judge_scorer.judging import Judging, NotCalibrated, rating_case
from judge_scorer.panel import JudgeInput
from medbench.judge.v1 import judge_service_pb2, judge_service_pb2_grpc
from medbench_runtime.errors import FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)

MAX_RATINGS_PER_MESSAGE = 1000
MAX_TEXT_CHARS = 100_000
DEFAULT_LEASE_S = 1800


class JudgeServicer(judge_service_pb2_grpc.JudgeServiceServicer):
    """Maintainers' and physicians' API of the judge scorer."""

    def __init__(self, judging: Judging, store: MongoJudge) -> None:
        self._judging = judging
        self._store = store
        self._background: set[asyncio.Task[Any]] = set()

    def _rubric(self, dataset: str, rubric_id: str, field: str = "rubric_id") -> Rubric:
        if not dataset and not rubric_id:
            raise InvalidArgument("dataset or rubric_id is required")
        try:
            return self._judging.rubric_for(dataset, rubric_id)
        except UnknownRubric as exc:
            raise InvalidArgument(f"{field}: {exc}") from exc

    async def JudgeAnswer(
        self, request: judge_service_pb2.JudgeAnswerRequest, context: grpc.aio.ServicerContext
    ) -> judge_service_pb2.JudgeAnswerResponse:
        rubric = self._rubric(request.dataset, request.rubric_id)
        if not request.answer.strip():
            raise InvalidArgument("answer is required")
        for name in ("question", "reference", "answer"):
            if len(getattr(request, name)) > MAX_TEXT_CHARS:
                raise InvalidArgument(f"{name} is longer than {MAX_TEXT_CHARS} characters")
        calibration_id = ""
        if not request.self_test:
            try:
                calibration_id = await self._judging.admitted(rubric)
            except NotCalibrated as exc:
                raise FailedPrecondition(str(exc)) from exc
        [result] = await self._judging.panel.judge(
            [
                JudgeInput(
                    rubric,
                    request.question,
                    request.reference,
                    tuple(request.key_points),
                    request.answer,
                )
            ]
        )
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
        )

    async def ImportRatings(
        self,
        request_iterator: AsyncIterator[judge_service_pb2.ImportRatingsRequest],
        context: grpc.aio.ServicerContext,
    ) -> judge_service_pb2.ImportRatingsResponse:
        response = judge_service_pb2.ImportRatingsResponse()
        index = 0
        async for message in request_iterator:
            if len(message.ratings) > MAX_RATINGS_PER_MESSAGE:
                raise InvalidArgument(
                    f"ratings: {len(message.ratings)} in one message; at most "
                    f"{MAX_RATINGS_PER_MESSAGE} (earlier messages were imported)"
                )
            for rating in message.ratings:
                try:
                    doc = self._rating_doc(rating)
                except InvalidArgument as exc:
                    field, _, reason = str(exc).partition(": ")
                    response.rejected.add(index=index, field=field, reason=reason)
                else:
                    if await self._store.put_rating(doc):
                        response.imported += 1
                    else:
                        response.replaced += 1
                index += 1
        return response

    def _rating_doc(self, r: judge_service_pb2.PhysicianRating) -> dict[str, Any]:
        for name in ("item_id", "answer", "rater_id"):
            if not getattr(r, name).strip():
                raise InvalidArgument(f"{name}: is required")
        for name in ("question", "reference", "answer"):
            if len(getattr(r, name)) > MAX_TEXT_CHARS:
                raise InvalidArgument(f"{name}: longer than {MAX_TEXT_CHARS} characters")
        rubric = self._rubric(r.dataset, r.rubric_id, field="dataset")
        if not rubric.scale.min <= r.score <= rubric.scale.max:
            raise InvalidArgument(
                f"score: {r.score:g} is outside rubric {rubric.label}'s scale "
                f"{rubric.scale.min}-{rubric.scale.max}"
            )
        case = rating_case(rubric.id, r.item_id, r.question, r.reference, r.answer)
        return {
            "_id": hashlib.sha256(f"{r.rater_id}\0{case}".encode()).hexdigest()[:32],
            "case": case,
            "rubric_id": rubric.id,
            "item_id": r.item_id,
            "dataset": r.dataset,
            "dimension": r.dimension,
            "question": r.question,
            "reference": r.reference,
            "key_points": list(r.key_points),
            "answer": r.answer,
            "score": r.score,
            "rater_id": r.rater_id,
            "rated_at": utcnow(),
        }

    async def Calibrate(
        self, request: judge_service_pb2.CalibrateRequest, context: grpc.aio.ServicerContext
    ) -> judge_service_pb2.Calibration:
        rubric = self._versioned(request.rubric_id, request.rubric_version)
        if not 0 <= request.n_resamples <= 20_000:
            raise InvalidArgument("n_resamples must be between 0 (default 1,000) and 20,000")
        try:
            doc = await self._judging.calibrate(rubric, request.n_resamples or 1000)
        except ValueError as exc:
            raise FailedPrecondition(str(exc)) from exc
        return _calibration(doc)

    async def GetCalibration(
        self, request: judge_service_pb2.GetCalibrationRequest, context: grpc.aio.ServicerContext
    ) -> judge_service_pb2.Calibration:
        rubric = self._versioned(request.rubric_id, request.rubric_version)
        doc = await self._store.latest_calibration(
            self._judging.panel.name, rubric.id, rubric.version
        )
        if doc is None:
            raise NotFound(f"no calibration of {self._judging.panel.name} for {rubric.label}")
        return _calibration(doc)

    def _versioned(self, rubric_id: str, version: int) -> Rubric:
        if not rubric_id:
            raise InvalidArgument("rubric_id is required")
        try:
            return self._judging.rubrics.get(rubric_id, version or None)
        except UnknownRubric as exc:
            raise NotFound(str(exc)) from exc

    async def ListReviews(
        self, request: judge_service_pb2.ListReviewsRequest, context: grpc.aio.ServicerContext
    ) -> judge_service_pb2.ListReviewsResponse:
        state = request.state or "open"
        if state not in ("open", "claimed", "done"):
            raise InvalidArgument("state must be open, claimed or done")
        if not 0 <= request.page_size <= 500:
            raise InvalidArgument("page_size must be between 0 (default 50) and 500")
        size = request.page_size or 50
        docs = await self._store.reviews(state, utcnow(), request.page_token, size + 1)
        return judge_service_pb2.ListReviewsResponse(
            reviews=[_review(d) for d in docs[:size]],
            next_page_token=docs[size - 1]["_id"] if len(docs) > size else "",
        )

    async def ClaimReview(
        self, request: judge_service_pb2.ClaimReviewRequest, context: grpc.aio.ServicerContext
    ) -> judge_service_pb2.Review:
        if not request.review_id or not request.reviewer_id:
            raise InvalidArgument("review_id and reviewer_id are required")
        if not 0 <= request.lease_seconds <= 86_400:
            raise InvalidArgument("lease_seconds must be between 0 (default 1,800) and 86,400")
        lease = timedelta(seconds=request.lease_seconds or DEFAULT_LEASE_S)
        doc = await self._store.claim_review(
            request.review_id, request.reviewer_id, utcnow(), lease
        )
        if doc is None:
            await self._explain_review(request.review_id, request.reviewer_id)
        assert doc is not None
        return _review(doc)

    async def SubmitReview(
        self, request: judge_service_pb2.SubmitReviewRequest, context: grpc.aio.ServicerContext
    ) -> judge_service_pb2.Review:
        if not request.review_id or not request.reviewer_id:
            raise InvalidArgument("review_id and reviewer_id are required")
        current = await self._store.review(request.review_id)
        if current is None:
            raise NotFound(f"review {request.review_id} not found")
        rubric = self._judging.rubrics.get(current["rubric_id"], current["rubric_version"])
        if not rubric.scale.min <= request.score <= rubric.scale.max:
            raise InvalidArgument(
                f"score {request.score:g} is outside rubric {rubric.label}'s scale "
                f"{rubric.scale.min}-{rubric.scale.max}"
            )
        doc = await self._store.finish_review(
            request.review_id, request.reviewer_id, request.score, utcnow()
        )
        if doc is None:
            await self._explain_review(request.review_id, request.reviewer_id)
        assert doc is not None
        rating = judge_service_pb2.PhysicianRating(
            item_id=doc["item_id"],
            dataset=doc["dataset"],
            dimension=doc["dimension"],
            question=doc["question"],
            reference=doc["reference"],
            key_points=doc["key_points"],
            answer=doc["answer"],
            score=request.score,
            rater_id=request.reviewer_id,
            rubric_id=doc["rubric_id"],
        )
        await self._store.put_rating(self._rating_doc(rating))
        # The new rating moves the rubric's kappa: measure again, off the request path.
        task = asyncio.create_task(self._recalibrate(rubric))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return _review(doc)

    async def GetPanelAgreement(
        self,
        request: judge_service_pb2.GetPanelAgreementRequest,
        context: grpc.aio.ServicerContext,
    ) -> judge_service_pb2.PanelAgreement:
        if not request.submission_id:
            raise InvalidArgument("submission_id is required")
        models = sorted(self._judging.panel.models)
        if len(models) < 2:
            raise FailedPrecondition(f"a single judge ({models[0]}): no panel agreement")
        docs = await self._store.judgments(request.submission_id)
        if not docs:
            raise NotFound(f"nothing of {request.submission_id} was judged")
        rows: dict[str, list[list[float | None]]] = {}
        for doc in docs:
            rubric_id, _, version = doc["rubric"].rpartition(" v")
            scale = self._judging.rubrics.get(rubric_id, int(version)).scale
            by_model = {v["model"]: v["score"] for v in doc["verdicts"]}
            rows.setdefault(doc["dataset"], []).append(
                [None if by_model.get(m) is None else scale.normalise(by_model[m]) for m in models]
            )
        everything = [row for dataset_rows in rows.values() for row in dataset_rows]
        return judge_service_pb2.PanelAgreement(
            submission_id=request.submission_id,
            judge_models=models,
            alpha=_alpha(everything),
            items=_paired(everything),
            datasets=[
                judge_service_pb2.DatasetPanelAgreement(
                    dataset=name, alpha=_alpha(rows[name]), items=_paired(rows[name])
                )
                for name in sorted(rows)
            ],
        )

    async def _recalibrate(self, rubric: Rubric) -> None:
        try:
            await self._judging.calibrate(rubric)
        except Exception:  # noqa: BLE001 - logged; the next review tries again
            log.exception("recalibrating %s after a review failed", rubric.label)

    async def _explain_review(self, review_id: str, reviewer_id: str) -> None:
        doc = await self._store.review(review_id)
        if doc is None:
            raise NotFound(f"review {review_id} not found")
        if doc["state"] == "done":
            raise FailedPrecondition(f"review {review_id} is already done")
        if doc["state"] == "claimed" and doc.get("reviewer_id") != reviewer_id:
            raise FailedPrecondition(
                f"review {review_id} is claimed by another reviewer until "
                f"{doc['lease_until'].isoformat()}"
            )
        raise FailedPrecondition(f"review {review_id} must be claimed by {reviewer_id} first")


def _paired(rows: list[list[float | None]]) -> int:
    return sum(1 for row in rows if sum(v is not None for v in row) >= 2)


def _alpha(rows: list[list[float | None]]) -> float:
    """Krippendorff's alpha; nan when no item has two readable verdicts."""
    if not _paired(rows):
        return float("nan")
    return krippendorff_alpha(rows, level="interval")


def _timestamp(value: Any) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _calibration(doc: dict[str, Any]) -> judge_service_pb2.Calibration:
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
        dimensions=[judge_service_pb2.DimensionAgreement(**d) for d in doc["dimensions"]],
        measured_at=_timestamp(doc["measured_at"]),
        judge_failures=doc.get("judge_failures", 0),
    )


def _review(doc: dict[str, Any]) -> judge_service_pb2.Review:
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
        judge_scores=doc["judge_scores"],
        reviewer_id=doc.get("reviewer_id", ""),
        score=doc.get("score", 0.0),
        lease_until=_timestamp(doc.get("lease_until")),
        created_at=_timestamp(doc.get("created_at")),
    )
