"""The images of a review as a physician gets them (GetReviewImage): the bank's own bytes, only
to the physician holding the claim (or a maintainer), and only images of that review.

The reviews are opened as the panel opens them: two vision judges disagree on an image item."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from judge_scorer.adapters.rotator_images import ImageUnavailable
from judge_scorer.entrypoints.grpc_servicer import JudgeServicer
from judge_scorer.usecases.reviews import Reviews
from medbench.identity.v1 import access_pb2
from medbench.judge.v1 import judge_service_pb2 as pb
from medbench_runtime.auth import Principal, set_principal
from medbench_runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from tests.services.judge_scorer.fakes import FakeJudge, InMemoryImages, InMemoryJudgeStore
from tests.services.judge_scorer.test_vision import CT, XRAY, image, judging, png, request, verdict

DR_A, DR_B = "00000000000000aa", "00000000000000bb"
# In the bank, but not an image of any review.
OTHER = image(png((10, 200, 10)))


def as_role(role: int, key_id: str = DR_A) -> None:
    set_principal(Principal(key_id, "physicians", role))


async def opened(
    bank: InMemoryImages | None = None,
) -> tuple[JudgeServicer, InMemoryJudgeStore, InMemoryImages, str, str]:
    """The servicer, its store and bank, and the ids of the reviews of the image item (CT, XRAY)
    and of the text item, both opened by two vision judges that disagree (1 vs 9)."""
    bank = bank or InMemoryImages(
        {i.image_id: (i.media_type, i.content) for i in (CT, XRAY, OTHER)}
    )
    judges = FakeJudge("vl-a", lambda _: verdict(1)), FakeJudge("vl-b", lambda _: verdict(9))
    use_case, store, _ = judging(*judges, vision={"vl-a", "vl-b"}, bank=bank)
    assert await use_case.handle(request()) is True
    by_item = {doc["item_id"]: review_id for review_id, doc in store.reviews_.items()}
    bank.fetched.clear()
    service = JudgeServicer(use_case, Reviews(use_case, store, bank))
    return service, store, bank, by_item["VQA-1"], by_item["VQA-2"]


def ask(review_id: str, image_id: str) -> pb.GetReviewImageRequest:
    return pb.GetReviewImageRequest(review_id=review_id, image_id=image_id)


async def test_the_claiming_reviewer_gets_the_review_images_ids_and_the_banks_bytes() -> None:
    service, _, bank, image_review, text_review = await opened()
    as_role(access_pb2.ROLE_REVIEWER)
    claimed = await service.ClaimReview(pb.ClaimReviewRequest(review_id=image_review), None)
    # The item's images in its order, as content ids (the same for every tenant).
    assert list(claimed.image_ids) == [CT.image_id, XRAY.image_id]
    assert "hospital-a" not in str(claimed) and "sub-v" not in str(claimed)
    for wanted in (CT, XRAY):
        got = await service.GetReviewImage(ask(image_review, wanted.image_id), None)
        assert (got.image_id, got.media_type, got.content) == (
            wanted.image_id,
            "image/png",
            wanted.content,
        )
    assert bank.fetched == [CT.image_id, XRAY.image_id]
    [listed] = (await service.ListReviews(pb.ListReviewsRequest(state="open"), None)).reviews
    assert listed.review_id == text_review and list(listed.image_ids) == []


async def test_a_reviewer_without_the_claim_is_refused_before_any_image_is_read() -> None:
    service, store, bank, image_review, _ = await opened()
    as_role(access_pb2.ROLE_REVIEWER, DR_A)
    # Open, not claimed by anybody.
    with pytest.raises(PermissionDenied, match="holding its claim"):
        await service.GetReviewImage(ask(image_review, CT.image_id), None)
    # Claimed by another physician.
    as_role(access_pb2.ROLE_REVIEWER, DR_B)
    await service.ClaimReview(pb.ClaimReviewRequest(review_id=image_review), None)
    as_role(access_pb2.ROLE_REVIEWER, DR_A)
    for image_id in (CT.image_id, OTHER.image_id, "f" * 64):  # nothing learnt about the ids
        with pytest.raises(PermissionDenied):
            await service.GetReviewImage(ask(image_review, image_id), None)
    # The holder's own lease ran out.
    store.reviews_[image_review]["lease_until"] = datetime.now(UTC) - timedelta(seconds=1)
    as_role(access_pb2.ROLE_REVIEWER, DR_B)
    with pytest.raises(PermissionDenied):
        await service.GetReviewImage(ask(image_review, CT.image_id), None)
    assert bank.fetched == []


async def test_an_image_not_of_that_review_is_not_found_even_when_the_bank_has_it() -> None:
    service, _, bank, image_review, text_review = await opened()
    as_role(access_pb2.ROLE_REVIEWER)
    await service.ClaimReview(pb.ClaimReviewRequest(review_id=image_review), None)
    await service.ClaimReview(pb.ClaimReviewRequest(review_id=text_review), None)
    with pytest.raises(NotFound, match=f"has no image {OTHER.image_id}"):
        await service.GetReviewImage(ask(image_review, OTHER.image_id), None)
    # Another review's image, asked through a review the caller holds.
    with pytest.raises(NotFound, match=f"has no image {CT.image_id}"):
        await service.GetReviewImage(ask(text_review, CT.image_id), None)
    with pytest.raises(NotFound, match="review 0+ not found"):
        await service.GetReviewImage(ask("0" * 24, CT.image_id), None)
    with pytest.raises(InvalidArgument):
        await service.GetReviewImage(ask(image_review, ""), None)
    assert bank.fetched == []


async def test_a_maintainer_sees_any_reviews_images_and_the_judges_scores() -> None:
    service, _, _, image_review, _ = await opened()
    as_role(access_pb2.ROLE_MAINTAINER)
    got = await service.GetReviewImage(ask(image_review, XRAY.image_id), None)
    assert got.content == XRAY.content
    [review] = [
        r
        for r in (await service.ListReviews(pb.ListReviewsRequest(), None)).reviews
        if r.review_id == image_review
    ]
    assert list(review.image_ids) == [CT.image_id, XRAY.image_id]
    assert sorted(review.judge_scores) == [1, 9]


async def test_bank_trouble_is_not_found_unavailable_or_a_mismatch_never_other_bytes() -> None:
    service, _, bank, image_review, _ = await opened()
    as_role(access_pb2.ROLE_MAINTAINER)
    # The bank's bytes no longer hash to the id: never shown.
    bank.images[CT.image_id] = ("image/png", XRAY.content)
    with pytest.raises(FailedPrecondition, match="hash to"):
        await service.GetReviewImage(ask(image_review, CT.image_id), None)
    del bank.images[XRAY.image_id]
    with pytest.raises(NotFound, match="not in the bank"):
        await service.GetReviewImage(ask(image_review, XRAY.image_id), None)
    bank.down = True
    with pytest.raises(ConnectionError):  # the adapter's ImageUnavailable is an Unavailable
        await service.GetReviewImage(ask(image_review, XRAY.image_id), None)


def test_the_rotator_adapters_outage_answers_unavailable() -> None:
    assert issubclass(ImageUnavailable, Unavailable)


async def test_an_image_is_served_in_ranges_that_add_up_to_the_banks_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reply carries at most REVIEW_IMAGE_CHUNK bytes (4 MiB; here 10), with the image's size
    in each: the largest image an import admits never has to fit one gRPC message."""
    from judge_scorer.usecases import reviews

    monkeypatch.setattr(reviews, "REVIEW_IMAGE_CHUNK", 10)
    service, _, _, image_review, _ = await opened()
    as_role(access_pb2.ROLE_REVIEWER)
    await service.ClaimReview(pb.ClaimReviewRequest(review_id=image_review), None)
    size = len(CT.content)
    assert size > 30
    parts, offset = [], 0
    while offset < size:
        got = await service.GetReviewImage(
            pb.GetReviewImageRequest(review_id=image_review, image_id=CT.image_id, offset=offset),
            None,
        )
        assert got.size == size and 0 < len(got.content) <= 10
        parts.append(got.content)
        offset += len(got.content)
    assert b"".join(parts) == CT.content and len(parts) == -(-size // 10)
    # max_bytes below the cap is honoured; the end is an empty range; past it is refused.
    asked = pb.GetReviewImageRequest(review_id=image_review, image_id=CT.image_id, max_bytes=3)
    assert (await service.GetReviewImage(asked, None)).content == CT.content[:3]
    asked = pb.GetReviewImageRequest(review_id=image_review, image_id=CT.image_id, offset=size)
    assert (await service.GetReviewImage(asked, None)).content == b""
    for offset, max_bytes in ((size + 1, 0), (-1, 0), (0, -1)):
        asked = pb.GetReviewImageRequest(
            review_id=image_review, image_id=CT.image_id, offset=offset, max_bytes=max_bytes
        )
        with pytest.raises(InvalidArgument):
            await service.GetReviewImage(asked, None)
