"""What the aggregator's use cases need from the world (implemented in adapters/)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from aggregator.core.parts import Entry, ScoredBatch

Record = dict[str, Any]
"""A stored record (progress, report, leaderboard entry, per-item score) as the store keeps it."""


class ScoresStore(Protocol):
    """Item-score batches, per-submission progress and reports."""

    async def add_batch(self, batch: ScoredBatch, progress: Mapping[str, Any]) -> Record | None:
        """Stores a batch and counts it (``progress`` sets up a submission's first record);
        the progress record as counted, or None when the batch was stored before."""
        ...

    async def progress(self, submission_id: str) -> Record | None: ...

    async def scored(self, submission_id: str) -> list[tuple[str, list[Entry]]]:
        """Every stored batch of the submission: (scorer version, its entries)."""
        ...

    async def records(self, submission_id: str) -> list[Record]:
        """Every stored per-item score record of the submission, complete (parsed answers)."""
        ...

    async def complete(self, report: Record, events: Sequence[tuple[str, Any]]) -> bool:
        """Stores the report, closes the progress record and queues the (event id, event)
        pairs in the outbox, all or nothing; False when the report was stored before."""
        ...

    async def report(self, submission_id: str) -> Record | None: ...

    async def digest_key(self) -> bytes:
        """The platform's secret key of item-score digests (made once, the same for every
        replica): a report's digest can be checked by maintainers, never brute-forced by a
        partner to read which items were right."""
        ...


class LeaderboardStore(Protocol):
    """Published entries (one per submission)."""

    async def put(self, doc: Record) -> None: ...

    async def withdraw(self, submission_id: str) -> None: ...

    async def entry(self, submission_id: str) -> Record | None: ...

    async def set_equated(self, scores: Mapping[str, float], reference_pool: str) -> None: ...

    async def names_of_others(self, tenant_id: str) -> list[Record]:
        """Shown names of other tenants' published entries, oldest first."""
        ...

    async def published(self, track: int, board: int, cycle: str) -> list[Record]: ...
