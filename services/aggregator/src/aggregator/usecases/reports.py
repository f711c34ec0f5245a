"""Reports: a submission's stored report, its item results and its progress, for its tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NamedTuple

from aggregator.core.live_view import dithers, live_equated, live_view
from aggregator.core.parts import merged_items
from aggregator.core.ports import LeaderboardStore, Record, ScoresStore
from medbench_runtime.errors import InvalidArgument, NotFound


class Report(NamedTuple):
    """The stored report, and its equated score when its leaderboard entry has one."""

    record: Record
    equated: float | None


class ItemResult(NamedTuple):
    """One item's stored parts (one per scorer, by component) and its merged score (None
    when no part could be scored)."""

    item_id: str
    parts: list[Record]
    score: float | None


async def live_report(scores: ScoresStore, doc: Record) -> Record:
    """A stored report's live view, dithered under the platform's key (core/live_view.py)."""
    key = await scores.digest_key()
    return live_view(doc, dithers(key, doc["_id"], (d["dataset"] for d in doc["datasets"])))


class Reports:
    """Reads only: a report exists once the aggregation built it."""

    def __init__(self, scores: ScoresStore, board: LeaderboardStore | None = None) -> None:
        self._scores = scores
        self._board = board

    async def _record(self, submission_id: str, tenant_id: str) -> Record:
        if not submission_id:
            raise InvalidArgument("submission_id is required")
        doc = await self._scores.report(submission_id)
        if doc is None or (tenant_id and doc["tenant_id"] != tenant_id):
            raise NotFound(f"no report for submission {submission_id}")
        return doc

    async def report(self, submission_id: str, tenant_id: str = "", exact: bool = False) -> Report:
        """The report of a submission (of tenant_id, when given: else NotFound): its live view
        (core/live_view.py), or the exact report when ``exact`` (a disclosed pool's, or for
        maintainers: the caller decides, the gateway checks the pool)."""
        doc = await self._record(submission_id, tenant_id)
        entry = None if self._board is None else await self._board.entry(submission_id)
        equated = None if entry is None else entry.get("equated")
        if exact:
            return Report(doc, equated)
        shown = await live_report(self._scores, doc)
        return Report(shown, live_equated(equated, shown))

    async def item_results(
        self, submission_id: str, tenant_id: str = ""
    ) -> AsyncIterator[ItemResult]:
        """Every item's result, by item id (no reference is ever stored here)."""
        await self._record(submission_id, tenant_id)
        parts: dict[str, list[Record]] = {}
        for s in await self._scores.records(submission_id):
            held = parts.setdefault(s["item_id"], [])
            # A redelivered batch stored twice is impossible (keyed), but a part may be
            # re-scored under another batch id: keep one per component.
            if all(p["component"] != s["component"] for p in held):
                held.append(s)
        for item_id in sorted(parts):
            held = sorted(parts[item_id], key=lambda p: p["component"])
            merged = merged_items(held)
            yield ItemResult(item_id, held, merged[0].score if merged else None)

    async def progress(self, submission_id: str) -> dict[str, Any] | None:
        """The submission's progress record (None before its first scores)."""
        if not submission_id:
            raise InvalidArgument("submission_id is required")
        return await self._scores.progress(submission_id)
