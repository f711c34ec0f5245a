"""LeaderboardServicer: publishing opt-in and ranked boards with rank groups."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from aggregator.adapters.mongo_leaderboard import MongoLeaderboard
from aggregator.adapters.mongo_scores import MongoScores
from aggregator.adapters.score_codec import entries as batch_entries
from aggregator.aggregation import merge_entries
from aggregator.core.equating import equated_scores, fit_rasch
from aggregator.core.uncertainty import rank_groups
from medbench.common.v1 import common_pb2
from medbench.leaderboard.v1 import leaderboard_service_pb2 as lb
from medbench.leaderboard.v1 import leaderboard_service_pb2_grpc
from medbench.taskpool.v1 import taskpool_pb2
from medbench_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from medbench_runtime.names import display_text, skeleton

LATEST, BEST = lb.SELECTION_RULE_LATEST, lb.SELECTION_RULE_BEST
# Limits of the shown names (characters), as the gateway checks them at CreateSubmission.
SHOWN_NAMES = {
    "model_name": ("model.name", 200),
    "model_version": ("model.version", 100),
    "organisation": ("model.organisation", 200),
    "parameter_count": ("model.parameter_count", 32),
}


def shown_names(request: lb.PublishEntryRequest) -> dict[str, str]:
    """The entry's shown names, normalised (NFKC); INVALID_ARGUMENT for a name the gateway's
    rule refuses (a submission created before the rule)."""
    return {
        key: display_text(field, getattr(request, key), most)
        for key, (field, most) in SHOWN_NAMES.items()
    }


def _plain(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def impersonated(names: dict[str, str], others: list[dict[str, Any]]) -> str | None:
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


def select(entries: list[dict[str, Any]], rule: int, per_cycle: bool) -> list[dict[str, Any]]:
    """One entry per model (tenant, name, version), and per cycle when listing history: the
    latest published, or the best overall (ties: the earlier one)."""
    chosen: dict[tuple[str, ...], dict[str, Any]] = {}
    for e in sorted(entries, key=lambda e: (e["published_at"], e["_id"])):
        key = (e["tenant_id"], e["model_name"], e["model_version"])
        if per_cycle:
            key += (e["cycle"],)
        held = chosen.get(key)
        if rule != BEST or held is None or e["overall"] > held["overall"]:
            chosen[key] = e
    return list(chosen.values())


class LeaderboardServicer(leaderboard_service_pb2_grpc.LeaderboardServiceServicer):
    """Leaderboards of the aggregator."""

    def __init__(self, scores: MongoScores, board: MongoLeaderboard) -> None:
        self._scores = scores
        self._board = board

    async def PublishEntry(
        self, request: lb.PublishEntryRequest, context: grpc.aio.ServicerContext
    ) -> lb.PublishEntryResponse:
        if not request.submission_id or not request.tenant_id:
            raise InvalidArgument("submission_id and tenant_id are required")
        report = await self._scores.report(request.submission_id)
        if report is not None and report["tenant_id"] != request.tenant_id:
            raise NotFound(f"no report for submission {request.submission_id}")
        if not request.published:
            await self._board.withdraw(request.submission_id)
            return lb.PublishEntryResponse(published=False)
        if report is None:
            raise FailedPrecondition(f"submission {request.submission_id} has no report yet")
        _check_board(request.track, request.board)
        names = shown_names(request)
        conflict = impersonated(names, await self._board.names_of_others(request.tenant_id))
        if conflict is not None:
            raise InvalidArgument(conflict)
        await self._board.put(
            {
                "_id": request.submission_id,
                "tenant_id": request.tenant_id,
                "published": True,
                "track": request.track,
                "board": request.board,
                "cycle": request.cycle,
                "pool_id": report["lineage"]["pool_id"],
                **names,
                "open_source": request.open_source,
                "release_date": request.release_date,
                "overall": report["overall"],
                "overall_low": report.get("overall_low", report["overall"]),
                "overall_high": report.get("overall_high", report["overall"]),
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
        return lb.PublishEntryResponse(published=True)

    async def EquateBoard(
        self, request: lb.EquateBoardRequest, context: grpc.aio.ServicerContext
    ) -> lb.EquateBoardResponse:
        _check_board(request.track, request.board)
        entries = await self._board.published(request.track, request.board, "")
        if not entries:
            raise FailedPrecondition("no published entries on this board to equate")
        results: list[tuple[str, str, float]] = []
        pool_of: dict[str, str] = {}
        for e in entries:
            batches = await self._scores.batches(e["_id"])
            items = {(x.item_id, x.component): x for b in batches for x in batch_entries(b)}
            results.extend((e["_id"], i.item_id, i.score) for i, _ in merge_entries(items.values()))
            pool_of[e["_id"]] = e["pool_id"]
        reference = (
            request.reference_pool
            or min(entries, key=lambda e: (e["published_at"], e["_id"]))["pool_id"]
        )
        if reference not in pool_of.values():
            raise InvalidArgument(f"reference_pool {reference} has no published entry")
        try:
            fit = fit_rasch(results, pool_of, reference_pool=reference)
        except ValueError as exc:
            raise FailedPrecondition(f"cannot equate this board: {exc}") from exc
        reference_items = {item for sid, item, _ in results if pool_of[sid] == reference}
        equated = equated_scores(fit, reference_items)
        await self._board.set_equated(equated, reference)
        return lb.EquateBoardResponse(
            entries=len(equated),
            pools=len(set(pool_of.values())),
            observations=len(results),
            reference_pool=reference,
        )

    async def ListLeaderboard(
        self, request: lb.ListLeaderboardRequest, context: grpc.aio.ServicerContext
    ) -> lb.ListLeaderboardResponse:
        _check_board(request.track, request.board)
        if not 0 <= request.page_size <= 500:
            raise InvalidArgument("page_size must be between 0 (default 50) and 500")
        token = request.page_token or "0"
        if not token.isdigit():
            raise InvalidArgument("page_token is not one this service returned")
        offset = int(token)
        rule = request.rule or LATEST
        entries = select(
            await self._board.published(request.track, request.board, request.cycle),
            rule,
            per_cycle=not request.cycle,
        )
        by_id = {e["_id"]: e for e in entries}
        ranked = rank_groups(
            [(e["_id"], e["overall"], e["overall_low"], e["overall_high"]) for e in entries]
        )
        size = request.page_size or 50
        page = ranked[offset : offset + size]
        return lb.ListLeaderboardResponse(
            entries=[_entry(by_id[r.name], r.rank, r.group) for r in page],
            next_page_token=str(offset + size) if offset + size < len(ranked) else "",
            total=len(ranked),
        )


def _check_board(track: int, board: int) -> None:
    if track not in (common_pb2.TRACK_LLM, common_pb2.TRACK_MULTIMODAL, common_pb2.TRACK_AGENT):
        raise InvalidArgument("track must be TRACK_LLM, TRACK_MULTIMODAL or TRACK_AGENT")
    if board not in (taskpool_pb2.BOARD_API, taskpool_pb2.BOARD_UPLOAD):
        raise InvalidArgument("board must be BOARD_API or BOARD_UPLOAD")


def _entry(e: dict[str, Any], rank: int, group: int) -> lb.LeaderboardEntry:
    published = Timestamp()
    published.FromDatetime(e["published_at"])
    entry = lb.LeaderboardEntry(
        rank=rank,
        group=group,
        submission_id=e["_id"],
        tenant_id=e["tenant_id"],
        model_name=e["model_name"],
        model_version=e["model_version"],
        organisation=e["organisation"],
        open_source=e["open_source"],
        parameter_count=e["parameter_count"],
        release_date=e.get("release_date", ""),
        cycle=e["cycle"],
        pool_id=e["pool_id"],
        overall=e["overall"],
        overall_low=e["overall_low"],
        overall_high=e["overall_high"],
        dimensions=[lb.EntryDimension(**d) for d in e["dimensions"]],
        published_at=published,
        track=e["track"],
        board=e["board"],
    )
    if e.get("equated") is not None:
        entry.equated = e["equated"]
    return entry
