"""The review RPCs as a physician sees them: per-criterion scores, blindness, own identity."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from judge_scorer.entrypoints.grpc_servicer import JudgeServicer
from judge_scorer.usecases.reviews import Reviews
from medbench.identity.v1 import access_pb2
from medbench.judge.v1 import judge_service_pb2 as pb
from medbench_runtime.auth import Principal, set_principal
from medbench_runtime.errors import InvalidArgument, PermissionDenied
from tests.services.judge_scorer.fakes import FakeJudge
from tests.services.judge_scorer.test_usecases import judging, request, verdict

GENERIC = ["医学准确性", "要点完整性", "安全性", "表达与针对性"]  # generic v1's criteria, in order


def servicer() -> tuple[JudgeServicer, Reviews, Any]:
    judges = (FakeJudge("a", lambda _: verdict(2)), FakeJudge("b", lambda _: verdict(10)))
    use_case, store, _ = judging(*judges, rule="mean")
    reviews = Reviews(use_case, store)
    return JudgeServicer(use_case, reviews), reviews, use_case


def as_role(role: int, key_id: str = "00000000000000aa") -> None:
    set_principal(Principal(key_id, "physicians", role))


async def open_review(reviews: Reviews, use_case: Any) -> str:
    await use_case.handle(request("低盐饮食"))
    [doc] = (await reviews.page("", "", 0))[0]
    return str(doc["_id"])


def criteria(*scores: float, names: list[str] | None = None) -> list[pb.CriterionScore]:
    return [
        pb.CriterionScore(name=n, score=s) for n, s in zip(names or GENERIC, scores, strict=False)
    ]


async def test_the_rubric_criteria_match_what_the_test_assumes() -> None:
    service, reviews, use_case = servicer()
    as_role(access_pb2.ROLE_MAINTAINER)
    await open_review(reviews, use_case)
    [review] = (await service.ListReviews(pb.ListReviewsRequest(), None)).reviews
    rubric = json.loads(review.rubric_json)
    assert [c["name"] for c in rubric["criteria"]] == GENERIC
    assert (rubric["scale"]["min"], rubric["scale"]["max"]) == (0, 10)
    assert "output_schema" not in rubric
    assert list(review.judge_scores) == [2, 10], "maintainers see the panel"


async def test_a_reviewer_sees_no_judge_scores_and_reviews_as_its_own_key() -> None:
    service, reviews, use_case = servicer()
    review_id = await open_review(reviews, use_case)
    as_role(access_pb2.ROLE_REVIEWER, "00000000000000bb")
    [listed] = (await service.ListReviews(pb.ListReviewsRequest(), None)).reviews
    assert list(listed.judge_scores) == [] and listed.rubric_json
    assert "hospital" not in str(listed) and "sub-1" not in str(listed)
    with pytest.raises(PermissionDenied, match="reviews as itself"):
        await service.ClaimReview(
            pb.ClaimReviewRequest(review_id=review_id, reviewer_id="dr-x"), None
        )
    claimed = await service.ClaimReview(pb.ClaimReviewRequest(review_id=review_id), None)
    assert claimed.reviewer_id == "00000000000000bb" and list(claimed.judge_scores) == []
    # Another reviewer does not learn who holds it.
    as_role(access_pb2.ROLE_REVIEWER, "00000000000000cc")
    [held] = (await service.ListReviews(pb.ListReviewsRequest(state="claimed"), None)).reviews
    assert held.reviewer_id == ""
    with pytest.raises(PermissionDenied):
        await service.SubmitReview(
            pb.SubmitReviewRequest(review_id=review_id, reviewer_id="00000000000000bb", score=5),
            None,
        )
    as_role(access_pb2.ROLE_REVIEWER, "00000000000000bb")
    done = await service.SubmitReview(
        pb.SubmitReviewRequest(review_id=review_id, score=6, criteria=criteria(7, 6, 5, 8)), None
    )
    assert done.state == "done" and done.score == 6
    assert [(c.name, c.score) for c in done.criteria] == list(
        zip(GENERIC, [7, 6, 5, 8], strict=True)
    )
    [rating] = use_case._store.ratings_.values()  # noqa: SLF001 - the stored rating
    assert rating["rater_id"] == "00000000000000bb"
    assert rating["criteria"] == [
        {"name": n, "score": s} for n, s in zip(GENERIC, [7, 6, 5, 8], strict=True)
    ]
    await asyncio.gather(*reviews._background)  # noqa: SLF001 - the recalibration it started


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        (criteria(7, 6, 5), "no score for '表达与针对性'"),
        (criteria(7, 6, 5, 8, 1, names=[*GENERIC, "文采"]), "'文采' is not a criterion"),
        (
            criteria(7, 6, 5, 8, names=["医学准确性", "医学准确性", "安全性", "表达与针对性"]),
            "more than once",
        ),
        (criteria(7, 6, 11, 8), "'安全性' scored 11, outside"),
    ],
)
async def test_scores_per_criterion_are_all_or_none_on_the_scale(
    scores: list[pb.CriterionScore], message: str
) -> None:
    service, reviews, use_case = servicer()
    review_id = await open_review(reviews, use_case)
    as_role(access_pb2.ROLE_MAINTAINER)
    await service.ClaimReview(pb.ClaimReviewRequest(review_id=review_id, reviewer_id="dr-1"), None)
    with pytest.raises(InvalidArgument, match=message):
        await service.SubmitReview(
            pb.SubmitReviewRequest(
                review_id=review_id, reviewer_id="dr-1", score=6, criteria=scores
            ),
            None,
        )
    assert (await reviews.page("claimed", "", 0))[0], "a refused rating leaves the claim held"


async def test_imported_ratings_may_carry_scores_per_criterion() -> None:
    service, _, use_case = servicer()
    as_role(access_pb2.ROLE_MAINTAINER)

    async def stream() -> Any:
        yield pb.ImportRatingsRequest(
            ratings=[
                pb.PhysicianRating(
                    item_id=f"i{i}",
                    dataset="MedHC",
                    question="问",
                    answer="答",
                    score=5,
                    rater_id="dr-1",
                    criteria=scores,
                )
                for i, scores in enumerate([criteria(5, 5, 5, 5), criteria(5, 5), []])
            ]
        )

    response = await service.ImportRatings(stream(), None)
    assert (response.imported, [(r.index, r.field) for r in response.rejected]) == (
        2,
        [(1, "criteria")],
    )
