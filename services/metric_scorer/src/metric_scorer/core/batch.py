"""A batch of recorded responses as the metric scorer reads it (pure data)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Response:
    """One model answer to one pool item."""

    item_id: str
    ordinal: int
    """Position of the item in the pool."""
    answer: str
    missing: bool
    """Never answered: scored as wrong, never judged."""
    prompt_hash: str


@dataclass(frozen=True)
class ResponseBatch:
    """Responses of one submission, recorded together (event ResponsesRecorded)."""

    submission_id: str
    tenant_id: str
    pool_id: str
    batch_id: str
    expected_items: int
    responses: tuple[Response, ...]
    self_test: bool = False
    track: int = 0


class MismatchedResponse(ValueError):
    """A response names an item that is not at its ordinal in the pool."""
