"""What the judge scorer's use cases need from the world (implemented in adapters/)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from judge_scorer.core.prompt import JudgeImage

Record = dict[str, Any]
"""A stored record (cache entry, judgment, rating, calibration, review, parked request)."""


@dataclass(frozen=True)
class JudgeReply:
    """One judge reply and what it cost."""

    text: str
    prompt_tokens: int = 0
    """From the server's `usage`; 0 when it reports none."""
    completion_tokens: int = 0
    seconds: float = 0.0
    """Wall time of the HTTP attempts (retries included)."""
    gpu_seconds: float = 0.0
    """seconds x the judge's declared GPU count: an estimate (the server is shared)."""
    structured: bool = False
    """The request asked for decoding under the verdict schema."""


class JudgeModel(Protocol):
    """One judge model's chat completions (temperature 0)."""

    @property
    def model(self) -> str: ...

    @property
    def structured(self) -> str:
        """How its server takes a verdict schema: "json_schema", "json_object_schema" or
        "none" (core/structured.py)."""
        ...

    async def reply(
        self, messages: list[dict[str, Any]], schema: dict[str, Any] | None = None
    ) -> JudgeReply:
        """The judge's reply and its usage; decoded under `schema` when the judge takes one."""
        ...

    async def complete(self, messages: list[dict[str, Any]]) -> str:
        """The judge's reply text (no schema)."""
        ...


class JudgeCache(Protocol):
    """Judge replies by (model, rubric, prompt format, item, answer) key."""

    async def cached(self, keys: Sequence[str]) -> dict[str, Record]:
        """Entries by key (missing keys are absent)."""
        ...

    async def cache(self, entries: Sequence[Record]) -> None:
        """Adds entries; one stored meanwhile by another replica is kept as it is."""
        ...


class JudgeStore(JudgeCache, Protocol):
    """Everything the judge scorer keeps: cache, judgments, ratings, calibrations, reviews
    and parked requests."""

    async def record_judgments(self, docs: Sequence[Record]) -> None: ...
    async def judgments(self, submission_id: str) -> list[Record]: ...
    async def put_rating(self, doc: Record) -> bool:
        """True when new, False when it replaced the rater's earlier score."""
        ...

    async def ratings(self, rubric_id: str) -> list[Record]: ...
    async def add_calibration(self, doc: Record) -> None: ...
    async def latest_calibration(
        self, judge: str, rubric_id: str, rubric_version: int
    ) -> Record | None: ...
    async def open_review(self, doc: Record) -> None: ...
    async def reviews(self, state: str, now: datetime, after: str, limit: int) -> list[Record]: ...
    async def review(self, review_id: str) -> Record | None: ...
    async def claim_review(
        self, review_id: str, reviewer_id: str, now: datetime, lease: timedelta
    ) -> Record | None: ...
    async def finish_review(
        self,
        review_id: str,
        reviewer_id: str,
        score: float,
        now: datetime,
        criteria: list[Record],
    ) -> Record | None: ...
    async def park(self, doc: Record) -> None: ...
    async def parked(self) -> list[Record]: ...
    async def unpark(self, event_id: str) -> None: ...
    async def parked_count(self) -> int: ...


class SealedKey(Protocol):
    """What the judge reads of one pool item's sealed key."""

    @property
    def item_id(self) -> str: ...
    @property
    def prompt(self) -> str: ...
    @property
    def reference(self) -> tuple[str, ...]: ...
    @property
    def key_points(self) -> tuple[str, ...]: ...
    @property
    def image_ids(self) -> tuple[str, ...] | None:
        """The item's bank image ids; None when its pool was frozen before keys recorded them."""
        ...


class ImageMissing(Exception):
    """The bank holds no image with that content id: the item cannot be judged as shown."""


class ItemImages(Protocol):
    """The bank's own images (never a tenant's watermarked copy), by content id."""

    async def image(self, image_id: str) -> JudgeImage:
        """The image's bytes and media type.

        Raises:
            ImageMissing: the bank has no such image.
            Exception: any other failure is transient (the request is retried later).
        """
        ...


class PoolKeys(Protocol):
    """The sealed keys of frozen pools."""

    async def keys(self, pool_id: str) -> Sequence[SealedKey]: ...


class CanaryKey(Protocol):
    """The sealed alteration of a canary of one download: a pool item shown altered for its
    tenant (medbench_storage.variants.CanaryKey)."""

    def alter_prompt(self, text: str) -> str:
        """The judge's prompt as the download showed the item (unchanged but for a canary
        altered in its prompt)."""
        ...

    def alter_key(self, text: str) -> str:
        """A text of the key (reference, key point) as the canary's key reads it."""
        ...


class Variant(Protocol):
    @property
    def canaries(self) -> Mapping[str, CanaryKey]: ...


class Variants(Protocol):
    """What each submission's download showed (the rotator's sealed variants)."""

    async def variant(self, submission_id: str) -> Variant: ...


class Publisher(Protocol):
    """Publishes events (medbench_messaging Outgoing records) and returns once acknowledged."""

    async def publish(self, batch: Sequence[Any]) -> None: ...
