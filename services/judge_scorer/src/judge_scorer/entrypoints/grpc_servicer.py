"""JudgeServicer: one-off judging, physician ratings, calibration and the review queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from judge_scorer.entrypoints import convert
from judge_scorer.usecases.judging import Judging
from judge_scorer.usecases.reviews import Reviews
from medbench.identity.v1 import access_pb2
from medbench.judge.v1 import judge_service_pb2, judge_service_pb2_grpc
from medbench_runtime.auth import Principal, current_principal
from medbench_runtime.errors import InvalidArgument, PermissionDenied, Unauthenticated

MAX_RATINGS_PER_MESSAGE = 1000


def _caller() -> Principal | None:
    """The authenticated caller (None when the server runs without authentication)."""
    try:
        return current_principal()
    except Unauthenticated:
        return None


def _physician(requested: str) -> str:
    """The physician a claim or a rating is for: a reviewer-role caller is its own key id
    (naming another is PERMISSION_DENIED); maintainers name any physician."""
    caller = _caller()
    if caller is None or caller.role != access_pb2.ROLE_REVIEWER:
        return requested
    if requested and requested != caller.key_id:
        raise PermissionDenied(
            f"reviewer_id: a reviewer reviews as itself ({caller.key_id}), not as {requested}"
        )
    return caller.key_id


class JudgeServicer(judge_service_pb2_grpc.JudgeServiceServicer):
    """Maintainers' and physicians' API of the judge scorer."""

    def __init__(self, judging: Judging, reviews: Reviews) -> None:
        self._judging = judging
        self._reviews = reviews

    async def JudgeAnswer(
        self, request: judge_service_pb2.JudgeAnswerRequest, context: grpc.aio.ServicerContext
    ) -> judge_service_pb2.JudgeAnswerResponse:
        rubric = self._judging.rubric_named(request.dataset, request.rubric_id)
        result, calibration_id = await self._judging.judge_answer(
            convert.input_from_proto(request, rubric), request.self_test
        )
        return convert.judged_to_proto(result, rubric, calibration_id)

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
                    new = await self._reviews.import_rating(convert.rating_from_proto(rating))
                except InvalidArgument as exc:
                    field, _, reason = str(exc).partition(": ")
                    response.rejected.add(index=index, field=field, reason=reason)
                else:
                    if new:
                        response.imported += 1
                    else:
                        response.replaced += 1
                index += 1
        return response

    async def Calibrate(
        self, request: judge_service_pb2.CalibrateRequest, context: grpc.aio.ServicerContext
    ) -> judge_service_pb2.Calibration:
        rubric = self._judging.versioned(request.rubric_id, request.rubric_version)
        doc = await self._judging.measure(rubric, request.n_resamples)
        return convert.calibration_to_proto(doc)

    async def GetCalibration(
        self, request: judge_service_pb2.GetCalibrationRequest, context: grpc.aio.ServicerContext
    ) -> judge_service_pb2.Calibration:
        rubric = self._judging.versioned(request.rubric_id, request.rubric_version)
        return convert.calibration_to_proto(await self._judging.calibration(rubric))

    async def ListReviews(
        self, request: judge_service_pb2.ListReviewsRequest, context: grpc.aio.ServicerContext
    ) -> judge_service_pb2.ListReviewsResponse:
        docs, next_token = await self._reviews.page(
            request.state, request.page_token, request.page_size
        )
        return judge_service_pb2.ListReviewsResponse(
            reviews=[self._review(d) for d in docs], next_page_token=next_token
        )

    async def ClaimReview(
        self, request: judge_service_pb2.ClaimReviewRequest, context: grpc.aio.ServicerContext
    ) -> judge_service_pb2.Review:
        doc = await self._reviews.claim(
            request.review_id, _physician(request.reviewer_id), request.lease_seconds
        )
        return self._review(doc)

    async def SubmitReview(
        self, request: judge_service_pb2.SubmitReviewRequest, context: grpc.aio.ServicerContext
    ) -> judge_service_pb2.Review:
        doc = await self._reviews.submit(
            request.review_id,
            _physician(request.reviewer_id),
            request.score,
            convert.criteria_from_proto(request.criteria),
        )
        return self._review(doc)

    async def GetReviewImage(
        self,
        request: judge_service_pb2.GetReviewImageRequest,
        context: grpc.aio.ServicerContext,
    ) -> judge_service_pb2.ReviewImage:
        caller = _caller()
        reviewer = caller.key_id if caller and caller.role == access_pb2.ROLE_REVIEWER else None
        image = await self._reviews.image(
            request.review_id, request.image_id, reviewer, request.offset, request.max_bytes
        )
        return convert.review_image_to_proto(image)

    def _review(self, doc: dict[str, Any]) -> judge_service_pb2.Review:
        """A review with its rubric; blind to the panel's scores for a reviewer."""
        rubric = self._judging.rubrics.get(doc["rubric_id"], doc["rubric_version"])
        caller = _caller()
        reviewer = caller.key_id if caller and caller.role == access_pb2.ROLE_REVIEWER else None
        return convert.review_to_proto(doc, rubric, reviewer)

    async def GetPanelAgreement(
        self,
        request: judge_service_pb2.GetPanelAgreementRequest,
        context: grpc.aio.ServicerContext,
    ) -> judge_service_pb2.PanelAgreement:
        agreement = await self._reviews.panel_agreement(request.submission_id)
        return convert.agreement_to_proto(request.submission_id, agreement)

    async def GetJudgingCost(
        self,
        request: judge_service_pb2.GetJudgingCostRequest,
        context: grpc.aio.ServicerContext,
    ) -> judge_service_pb2.JudgingCost:
        rows = await self._judging.judging_cost(request.submission_id)
        return convert.cost_to_proto(request.submission_id, rows)
