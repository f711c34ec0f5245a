"""Fakes of the judge scorer's ports (judge_scorer.core.ports)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from judge_scorer.core.ports import ImageMissing, JudgeReply
from judge_scorer.core.prompt import JudgeImage
from medbench_messaging.publisher import Outgoing
from medbench_storage.pool_keys import PoolKey
from medbench_storage.variants import CanaryKey, SubmissionVariant


class FakeJudge:
    """JudgeModel: replies by a script (a list, used in turn) or a function of the messages."""

    def __init__(
        self,
        model: str,
        replies: Sequence[str] | Callable[[str], str],
        structured: str = "none",
        usage: tuple[int, int, float] = (100, 20, 0.5),
    ) -> None:
        """usage: (prompt tokens, completion tokens, GPU-seconds) each call reports."""
        self._model = model
        self._replies = replies if callable(replies) else list(replies)
        self.calls: list[list[dict[str, Any]]] = []
        self.structured = structured
        self.schemas: list[dict[str, Any] | None] = []
        self._usage = usage

    @property
    def model(self) -> str:
        return self._model

    async def reply(
        self, messages: list[dict[str, Any]], schema: dict[str, Any] | None = None
    ) -> JudgeReply:
        self.schemas.append(schema)
        prompt, completion, gpu_seconds = self._usage
        return JudgeReply(
            await self.complete(messages),
            prompt_tokens=prompt,
            completion_tokens=completion,
            seconds=gpu_seconds,
            gpu_seconds=gpu_seconds,
            structured=schema is not None and self.structured != "none",
        )

    async def complete(self, messages: list[dict[str, Any]]) -> str:
        self.calls.append(messages)
        if callable(self._replies):
            return self._replies(messages[-1]["content"])
        return self._replies.pop(0)


class InMemoryJudgeStore:
    """JudgeStore over dicts."""

    def __init__(self) -> None:
        self.judge_cache: dict[str, dict[str, Any]] = {}
        self.judgments_: dict[str, dict[str, Any]] = {}
        self.ratings_: dict[str, dict[str, Any]] = {}
        self.calibrations: list[dict[str, Any]] = []
        self.reviews_: dict[str, dict[str, Any]] = {}
        self.parked_: dict[str, dict[str, Any]] = {}

    async def cached(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {k: self.judge_cache[k] for k in keys if k in self.judge_cache}

    async def cache(self, entries: Sequence[dict[str, Any]]) -> None:
        for e in entries:
            self.judge_cache.setdefault(e["_id"], e)

    async def record_judgments(self, docs: Sequence[dict[str, Any]]) -> None:
        self.judgments_.update({d["_id"]: d for d in docs})

    async def judgments(self, submission_id: str) -> list[dict[str, Any]]:
        return [d for d in self.judgments_.values() if d["submission_id"] == submission_id]

    async def put_rating(self, doc: dict[str, Any]) -> bool:
        new = doc["_id"] not in self.ratings_
        self.ratings_[doc["_id"]] = doc
        return new

    async def ratings(self, rubric_id: str) -> list[dict[str, Any]]:
        return sorted(
            (r for r in self.ratings_.values() if r["rubric_id"] == rubric_id),
            key=lambda r: r["_id"],
        )

    async def add_calibration(self, doc: dict[str, Any]) -> None:
        self.calibrations.append(doc)

    async def latest_calibration(
        self, judge: str, rubric_id: str, rubric_version: int
    ) -> dict[str, Any] | None:
        found = [
            c
            for c in self.calibrations
            if (c["judge"], c["rubric_id"], c["rubric_version"])
            == (judge, rubric_id, rubric_version)
        ]
        return max(found, key=lambda c: c["measured_at"]) if found else None

    async def open_review(self, doc: dict[str, Any]) -> None:
        self.reviews_.setdefault(doc["_id"], doc)

    async def reviews(
        self, state: str, now: datetime, after: str, limit: int
    ) -> list[dict[str, Any]]:
        def matches(r: dict[str, Any]) -> bool:
            if state == "open":
                return r["state"] == "open" or (r["state"] == "claimed" and r["lease_until"] < now)
            return bool(r["state"] == state)

        chosen = [r for _, r in sorted(self.reviews_.items()) if matches(r) and r["_id"] > after]
        return chosen[:limit]

    async def review(self, review_id: str) -> dict[str, Any] | None:
        return self.reviews_.get(review_id)

    async def claim_review(
        self, review_id: str, reviewer_id: str, now: datetime, lease: timedelta
    ) -> dict[str, Any] | None:
        r = self.reviews_.get(review_id)
        if r is None or not (
            r["state"] == "open"
            or (
                r["state"] == "claimed"
                and (r["lease_until"] < now or r["reviewer_id"] == reviewer_id)
            )
        ):
            return None
        r.update(state="claimed", reviewer_id=reviewer_id, lease_until=now + lease)
        return dict(r)

    async def finish_review(
        self,
        review_id: str,
        reviewer_id: str,
        score: float,
        now: datetime,
        criteria: list[dict[str, Any]],
    ) -> dict[str, Any] | None:
        r = self.reviews_.get(review_id)
        if r is None or r["state"] != "claimed" or r.get("reviewer_id") != reviewer_id:
            return None
        r.update(state="done", score=score, done_at=now, criteria=criteria)
        return dict(r)

    async def park(self, doc: dict[str, Any]) -> None:
        self.parked_.setdefault(doc["_id"], doc)

    async def parked(self) -> list[dict[str, Any]]:
        return sorted(self.parked_.values(), key=lambda d: d["parked_at"])

    async def unpark(self, event_id: str) -> None:
        self.parked_.pop(event_id, None)

    async def parked_count(self) -> int:
        return len(self.parked_)


class InMemoryPoolKeys:
    def __init__(self, pools: dict[str, list[PoolKey]]) -> None:
        self.pools = pools

    async def keys(self, pool_id: str) -> Sequence[PoolKey]:
        return self.pools[pool_id]


class InMemoryVariants:
    """Variants: per submission, item_id -> the key of a canary of its download."""

    def __init__(self, canaries: dict[str, dict[str, CanaryKey]]) -> None:
        self.canaries = canaries

    async def variant(self, submission_id: str) -> SubmissionVariant:
        return SubmissionVariant({}, self.canaries.get(submission_id, {}))


class InMemoryPublisher:
    def __init__(self) -> None:
        self.messages: list[Outgoing] = []

    async def publish(self, batch: Sequence[Any]) -> None:
        self.messages.extend(batch)


class InMemoryImages:
    """ItemImages: the bank's images by content id; `down` makes every fetch fail (an outage)."""

    def __init__(self, images: dict[str, tuple[str, bytes]]) -> None:
        self.images = images
        self.down = False
        self.fetched: list[str] = []

    async def image(self, image_id: str) -> JudgeImage:
        self.fetched.append(image_id)
        if self.down:
            raise ConnectionError("rotator unavailable")
        if image_id not in self.images:
            raise ImageMissing(f"image {image_id} is not in the bank")
        media_type, content = self.images[image_id]
        return JudgeImage(image_id, media_type, content)
