"""Leaderboards: publishing opt-in, equating a board's pools, and ranked boards."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from aggregator.core.board import Publication, board_order, select
from aggregator.core.equating import equated_scores, fit_rasch
from aggregator.core.live_view import equated_step, rounded
from aggregator.core.parts import merge_entries
from aggregator.core.ports import LeaderboardStore, Record, ScoresStore
from aggregator.usecases.reports import live_report
from medbench.common.v1 import common_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from medbench_runtime.names import display_text, skeleton

# Limits of the shown names (characters), as the gateway checks them at CreateSubmission.
SHOWN_NAMES = {
    "model_name": ("model.name", 200),
    "model_version": ("model.version", 100),
    "organisation": ("model.organisation", 200),
    "parameter_count": ("model.parameter_count", 32),
}


def shown_names(given: Mapping[str, str]) -> dict[str, str]:
    """The entry's shown names, normalised (NFKC); INVALID_ARGUMENT for a name the gateway's
    rule refuses (a submission created before the rule)."""
    return {
        key: display_text(field, given.get(key, ""), most)
        for key, (field, most) in SHOWN_NAMES.items()
    }


def _plain(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def impersonated(names: Mapping[str, str], others: list[dict[str, Any]]) -> str | None:
    """Why names cannot be shown beside other tenants' published entries: a model name or an
    organisation that looks like one of theirs without being it (the same skeleton, another
    text: a look-alike that hides that it is different). The very same name is allowed: several
    institutions evaluate the same public model, and one organisation may have several tenants;
    the board shows each entry on its own. None when nothing conflicts; the earliest published
    entry is named."""
    model = skeleton(names["model_name"])
    own_model = _plain(names["model_name"])
    organisation = skeleton(names["organisation"])
    own_organisation = _plain(names["organisation"])
    for e in others:
        theirs = e.get("model_name", "")
        if model and skeleton(theirs) == model and _plain(theirs) != own_model:
            return (
                f"model.name {names['model_name']!r} looks like {theirs!r}, the model of another "
                f"tenant's entry on the leaderboard (submission {e['_id']}), without being it; "
                f"choose a name that cannot be mistaken for it"
            )
        org = e.get("organisation", "")
        if organisation and skeleton(org) == organisation and _plain(org) != own_organisation:
            return (
                f"model.organisation {names['organisation']!r} looks like {org!r}, the "
                f"organisation of another tenant's entry on the leaderboard (submission "
                f"{e['_id']}), without being it"
            )
    return None


def check_board(track: int, board: int) -> None:
    if track not in (common_pb2.TRACK_LLM, common_pb2.TRACK_MULTIMODAL, common_pb2.TRACK_AGENT):
        raise InvalidArgument("track must be TRACK_LLM, TRACK_MULTIMODAL or TRACK_AGENT")
    if board not in (taskpool_pb2.BOARD_API, taskpool_pb2.BOARD_UPLOAD):
        raise InvalidArgument("board must be BOARD_API or BOARD_UPLOAD")


class Equated(NamedTuple):
    entries: int
    pools: int
    observations: int
    reference_pool: str


class Ranked(NamedTuple):
    """One page of a board: (entry, rank, rank group) in board order (partial entries last,
    rank and group 0)."""

    page: list[tuple[Record, int, int]]
    next_page_token: str
    """"" on the last page."""
    total: int


class Leaderboards:
    """Entries copy a report's numbers when published; withdrawing keeps the record."""

    def __init__(self, scores: ScoresStore, board: LeaderboardStore) -> None:
        self._scores = scores
        self._board = board

    async def publish(self, p: Publication) -> bool:
        """Shows (or withdraws) a submission's entry; whether it is now published."""
        if not p.submission_id or not p.tenant_id:
            raise InvalidArgument("submission_id and tenant_id are required")
        report = await self._scores.report(p.submission_id)
        if report is not None and report["tenant_id"] != p.tenant_id:
            raise NotFound(f"no report for submission {p.submission_id}")
        if not p.published:
            await self._board.withdraw(p.submission_id)
            return False
        if report is None:
            raise FailedPrecondition(f"submission {p.submission_id} has no report yet")
        check_board(p.track, p.board)
        names = shown_names(p.names)
        conflict = impersonated(names, await self._board.names_of_others(p.tenant_id))
        if conflict is not None:
            raise InvalidArgument(conflict)
        # A published entry is public: it shows the live view's numbers (core/live_view.py),
        # whatever happens to the pool later.
        report = await live_report(self._scores, report)
        await self._board.put(
            {
                "_id": p.submission_id,
                "tenant_id": p.tenant_id,
                "published": True,
                "track": p.track,
                "board": p.board,
                "cycle": p.cycle,
                "pool_id": report["lineage"]["pool_id"],
                **names,
                "open_source": p.open_source,
                "release_date": p.release_date,
                "overall": report["overall"],
                "overall_low": report.get("overall_low", report["overall"]),
                "overall_high": report.get("overall_high", report["overall"]),
                # A partial report's entry keeps its mark: never ranked beside complete ones.
                "partial": report.get("partial", False),
                "equated_step": equated_step(report),
                "missing_dimensions": report.get("missing_dimensions", []),
                "missing_datasets": report.get("missing_datasets", []),
                "dimensions": [
                    {
                        "dimension": d["dimension"],
                        "score": d["score"],
                        "low": d.get("low", d["score"]),
                        "high": d.get("high", d["score"]),
                    }
                    for d in report["dimensions"]
                ],
                "published_at": datetime.now(UTC),
            }
        )
        return True

    async def equate(self, track: int, board: int, reference_pool: str = "") -> Equated:
        """Puts a board's entries on the scale of one pool (Rasch model over item results)."""
        check_board(track, board)
        entries = await self._board.published(track, board, "")
        if not entries:
            raise FailedPrecondition("no published entries on this board to equate")
        results: list[tuple[str, str, float]] = []
        pool_of: dict[str, str] = {}
        for e in entries:
            items = {
                (x.item_id, x.component): x
                for _, batch in await self._scores.scored(e["_id"])
                for x in batch
            }
            results.extend((e["_id"], i.item_id, i.score) for i, _ in merge_entries(items.values()))
            pool_of[e["_id"]] = e["pool_id"]
        reference = (
            reference_pool or min(entries, key=lambda e: (e["published_at"], e["_id"]))["pool_id"]
        )
        if reference not in pool_of.values():
            raise InvalidArgument(f"reference_pool {reference} has no published entry")
        try:
            fit = fit_rasch(results, pool_of, reference_pool=reference)
        except ValueError as exc:
            raise FailedPrecondition(f"cannot equate this board: {exc}") from exc
        reference_items = {item for sid, item, _ in results if pool_of[sid] == reference}
        # Public: each at its entry's live resolution (core/live_view.py: equated_step).
        step_of = {e["_id"]: e.get("equated_step", 1.0) for e in entries}
        equated = {
            sid: rounded(score, step_of.get(sid, 1.0))
            for sid, score in equated_scores(fit, reference_items).items()
        }
        await self._board.set_equated(equated, reference)
        return Equated(len(equated), len(set(pool_of.values())), len(results), reference)

    async def ranked(
        self, track: int, board: int, cycle: str, best: bool, page_token: str, page_size: int
    ) -> Ranked:
        """A page of the board: one entry per model (per cycle when no cycle is named); the
        complete entries ranked with rank groups (entries whose intervals overlap share a
        group), then the partial ones, unranked (``board_order``). ``best``: the best published
        entry of each model stands for it (a complete one before any partial), else the
        latest."""
        check_board(track, board)
        if not 0 <= page_size <= 500:
            raise InvalidArgument("page_size must be between 0 (default 50) and 500")
        token = page_token or "0"
        if not token.isdigit():
            raise InvalidArgument("page_token is not one this service returned")
        offset = int(token)
        entries = select(await self._board.published(track, board, cycle), best, not cycle)
        ordered = board_order(entries)
        size = page_size or 50
        page = [(dict(e), rank, group) for e, rank, group in ordered[offset : offset + size]]
        more = offset + size < len(ordered)
        return Ranked(page, str(offset + size) if more else "", len(ordered))
