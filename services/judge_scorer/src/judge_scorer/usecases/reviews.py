"""Reviews: physician ratings in, the review queue of disagreeing panels, panel agreement."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from judge_scorer.core.agreement import krippendorff_alpha
from judge_scorer.core.ports import ImageMissing, ItemImages, JudgeStore, Record
from judge_scorer.core.prompt import ImageMismatch, check_image
from judge_scorer.core.ratings import Rating, rating_case
from judge_scorer.core.rubric import Rubric
from judge_scorer.usecases.judging import MAX_TEXT_CHARS, Judging
from medbench_runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)

log = logging.getLogger(__name__)

REVIEW_IMAGE_CHUNK = 4 * 1024 * 1024
"""Most bytes of an image one GetReviewImage reply carries: the largest image an import admits
is as large as one gRPC message less the import's framing, so it is read in ranges."""


class ImageRange(NamedTuple):
    """Bytes of a review's image from an offset, with the whole image's size."""

    image_id: str
    media_type: str
    content: bytes
    size: int


DEFAULT_LEASE_S = 1800


class Agreement(NamedTuple):
    """Krippendorff's alpha of a panel over one submission's judged items (nan when no item
    has two readable verdicts), with the number of such items."""

    alpha: float
    items: int


class PanelAgreement(NamedTuple):
    judge_models: list[str]
    overall: Agreement
    datasets: list[tuple[str, Agreement]]


def _agreement(rows: list[list[float | None]]) -> Agreement:
    paired = sum(1 for row in rows if sum(v is not None for v in row) >= 2)
    if not paired:
        return Agreement(float("nan"), 0)
    return Agreement(krippendorff_alpha(rows, level="interval"), paired)


def _now() -> datetime:
    return datetime.now(UTC)


def criterion_scores(rubric: Rubric, scores: tuple[tuple[str, float], ...]) -> list[Record]:
    """Scores per criterion as stored: none, or each of the rubric's criteria exactly once, on
    its scale. INVALID_ARGUMENT "criteria: <reason>" otherwise."""
    if not scores:
        return []
    names = [c.name for c in rubric.criteria]
    given = [name for name, _ in scores]
    for name in given:
        if name not in names:
            raise InvalidArgument(f"criteria: {name!r} is not a criterion of rubric {rubric.label}")
        if given.count(name) > 1:
            raise InvalidArgument(f"criteria: {name!r} is scored more than once")
    missing = [name for name in names if name not in given]
    if missing:
        raise InvalidArgument(f"criteria: no score for {', '.join(map(repr, missing))}")
    for name, score in scores:
        if not rubric.scale.min <= score <= rubric.scale.max:
            raise InvalidArgument(
                f"criteria: {name!r} scored {score:g}, outside rubric {rubric.label}'s scale "
                f"{rubric.scale.min}-{rubric.scale.max}"
            )
    by_name = dict(scores)
    return [{"name": name, "score": by_name[name]} for name in names]


class Reviews:
    """Physicians' side of the judge: their ratings calibrate it, their reviews settle the
    items a panel disagreed on (and become ratings in turn)."""

    def __init__(
        self, judging: Judging, store: JudgeStore, images: ItemImages | None = None
    ) -> None:
        """images: the bank's own images (never a tenant's copy), shown to reviewers."""
        self._judging = judging
        self._store = store
        self._images = images
        self._background: set[asyncio.Task[Any]] = set()

    def _rating_doc(self, r: Rating) -> Record:
        """INVALID_ARGUMENT "<field>: <reason>" for a rating that cannot be stored."""
        for name in ("item_id", "answer", "rater_id"):
            if not getattr(r, name).strip():
                raise InvalidArgument(f"{name}: is required")
        for name in ("question", "reference", "answer"):
            if len(getattr(r, name)) > MAX_TEXT_CHARS:
                raise InvalidArgument(f"{name}: longer than {MAX_TEXT_CHARS} characters")
        rubric = self._judging.rubric_named(r.dataset, r.rubric_id, field="dataset")
        if not rubric.scale.min <= r.score <= rubric.scale.max:
            raise InvalidArgument(
                f"score: {r.score:g} is outside rubric {rubric.label}'s scale "
                f"{rubric.scale.min}-{rubric.scale.max}"
            )
        criteria = criterion_scores(rubric, r.criteria)
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
            "criteria": criteria,
            "rated_at": _now(),
        }

    async def import_rating(self, rating: Rating) -> bool:
        """Stores a rating; True when new, False when it replaced the rater's earlier score.
        INVALID_ARGUMENT "<field>: <reason>" for a rating refused."""
        return await self._store.put_rating(self._rating_doc(rating))

    async def page(self, state: str, page_token: str, page_size: int) -> tuple[list[Record], str]:
        """A page of reviews in a state (an expired claim is open again), and the next token."""
        state = state or "open"
        if state not in ("open", "claimed", "done"):
            raise InvalidArgument("state must be open, claimed or done")
        if not 0 <= page_size <= 500:
            raise InvalidArgument("page_size must be between 0 (default 50) and 500")
        size = page_size or 50
        docs = await self._store.reviews(state, _now(), page_token, size + 1)
        return docs[:size], docs[size - 1]["_id"] if len(docs) > size else ""

    async def claim(self, review_id: str, reviewer_id: str, lease_s: int) -> Record:
        """Claims an open review (or an expired claim, or renews one's own) for lease_s."""
        if not review_id or not reviewer_id:
            raise InvalidArgument("review_id and reviewer_id are required")
        if not 0 <= lease_s <= 86_400:
            raise InvalidArgument("lease_seconds must be between 0 (default 1,800) and 86,400")
        lease = timedelta(seconds=lease_s or DEFAULT_LEASE_S)
        doc = await self._store.claim_review(review_id, reviewer_id, _now(), lease)
        if doc is None:
            raise await self._refusal(review_id, reviewer_id)
        return doc

    async def submit(
        self,
        review_id: str,
        reviewer_id: str,
        score: float,
        criteria: tuple[tuple[str, float], ...] = (),
    ) -> Record:
        """Records the claiming physician's score (and scores per criterion, if any) as a
        rating, and measures the rubric again (off the request path)."""
        if not review_id or not reviewer_id:
            raise InvalidArgument("review_id and reviewer_id are required")
        current = await self._store.review(review_id)
        if current is None:
            raise NotFound(f"review {review_id} not found")
        rubric = self._judging.rubrics.get(current["rubric_id"], current["rubric_version"])
        if not rubric.scale.min <= score <= rubric.scale.max:
            raise InvalidArgument(
                f"score {score:g} is outside rubric {rubric.label}'s scale "
                f"{rubric.scale.min}-{rubric.scale.max}"
            )
        scored = criterion_scores(rubric, criteria)
        doc = await self._store.finish_review(review_id, reviewer_id, score, _now(), scored)
        if doc is None:
            raise await self._refusal(review_id, reviewer_id)
        rating = Rating(
            item_id=doc["item_id"],
            dataset=doc["dataset"],
            dimension=doc["dimension"],
            question=doc["question"],
            reference=doc["reference"],
            key_points=tuple(doc["key_points"]),
            answer=doc["answer"],
            score=score,
            rater_id=reviewer_id,
            rubric_id=doc["rubric_id"],
            criteria=criteria,
        )
        await self._store.put_rating(self._rating_doc(rating))
        if not self._judging.has_judge:  # measured once a judge is configured (Calibrate)
            return doc
        # The new rating moves the rubric's kappa: measure again, off the request path.
        task = asyncio.create_task(self._recalibrate(rubric))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return doc

    async def image(
        self,
        review_id: str,
        image_id: str,
        physician: str | None,
        offset: int = 0,
        max_bytes: int = 0,
    ) -> ImageRange:
        """A range of one of a review's images (at most REVIEW_IMAGE_CHUNK bytes from offset;
        max_bytes 0: that many), the bank's own bytes checked against the id. physician: a
        reviewer-role caller's id, which must hold the review's live claim; None for a
        maintainer (any review)."""
        if not review_id or not image_id:
            raise InvalidArgument("review_id and image_id are required")
        if offset < 0 or max_bytes < 0:
            raise InvalidArgument("offset and max_bytes must not be negative")
        doc = await self._store.review(review_id)
        if doc is None:
            raise NotFound(f"review {review_id} not found")
        if physician is not None and not (
            doc["state"] == "claimed"
            and doc.get("reviewer_id") == physician
            and doc["lease_until"] > _now()
        ):
            # Before the image is looked at: no claim, nothing learnt about its images.
            raise PermissionDenied(f"review {review_id}: only the physician holding its claim")
        if image_id not in (doc.get("image_ids") or ()):
            raise NotFound(f"review {review_id} has no image {image_id}")
        if self._images is None:
            raise FailedPrecondition("no image source is configured")
        try:
            image = check_image(await self._images.image(image_id))
        except ImageMissing as exc:
            raise NotFound(str(exc)) from exc
        except ImageMismatch as exc:
            raise FailedPrecondition(str(exc)) from exc
        size = len(image.content)
        if offset > size:
            raise InvalidArgument(
                f"offset {offset} is past the end of image {image_id} ({size} bytes)"
            )
        take = min(max_bytes or REVIEW_IMAGE_CHUNK, REVIEW_IMAGE_CHUNK)
        return ImageRange(image_id, image.media_type, image.content[offset : offset + take], size)

    async def panel_agreement(self, submission_id: str) -> PanelAgreement:
        """How far the panel's judges agreed on a submission's items, overall and per dataset."""
        if not submission_id:
            raise InvalidArgument("submission_id is required")
        models = sorted(self._judging.panel.models)
        if len(models) < 2:
            raise FailedPrecondition(f"a single judge ({models[0]}): no panel agreement")
        docs = await self._store.judgments(submission_id)
        if not docs:
            raise NotFound(f"nothing of {submission_id} was judged")
        rows: dict[str, list[list[float | None]]] = {}
        for doc in docs:
            rubric_id, _, version = doc["rubric"].rpartition(" v")
            scale = self._judging.rubrics.get(rubric_id, int(version)).scale
            by_model = {v["model"]: v["score"] for v in doc["verdicts"]}
            rows.setdefault(doc["dataset"], []).append(
                [None if by_model.get(m) is None else scale.normalise(by_model[m]) for m in models]
            )
        everything = [row for dataset_rows in rows.values() for row in dataset_rows]
        return PanelAgreement(
            models,
            _agreement(everything),
            [(name, _agreement(rows[name])) for name in sorted(rows)],
        )

    async def _recalibrate(self, rubric: Rubric) -> None:
        try:
            await self._judging.calibrate(rubric)
        except Exception:  # noqa: BLE001 - logged; the next review tries again
            log.exception("recalibrating %s after a review failed", rubric.label)

    async def _refusal(self, review_id: str, reviewer_id: str) -> Exception:
        """Why a claim or a submission was refused."""
        doc = await self._store.review(review_id)
        if doc is None:
            return NotFound(f"review {review_id} not found")
        if doc["state"] == "done":
            return FailedPrecondition(f"review {review_id} is already done")
        if doc["state"] == "claimed" and doc.get("reviewer_id") != reviewer_id:
            return FailedPrecondition(
                f"review {review_id} is claimed by another reviewer until "
                f"{doc['lease_until'].isoformat()}"
            )
        return FailedPrecondition(f"review {review_id} must be claimed by {reviewer_id} first")
