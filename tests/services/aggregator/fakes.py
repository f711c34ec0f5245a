"""In-memory fakes of the aggregator's ports (aggregator.core.ports)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from aggregator.core.parts import Entry, ItemPart, ScoredBatch


def _record(p: ItemPart) -> dict[str, Any]:
    return {
        "item_id": p.item_id,
        "dataset": p.dataset,
        "dimension": p.dimension,
        "group_id": p.group_id,
        "component": p.component,
        "metric": p.metric,
        "score": p.score,
        "parsed": p.parsed,
        "prompt_hash": p.prompt_hash,
        "components": [[n, v] for n, v in p.components] or [[p.component, p.score]],
        "merge_rule": p.merge_rule,
        "counts": list(p.counts),
        **({"unscored": True} if p.unscored else {}),
        **({"judge": p.judge} if p.judge is not None else {}),
    }


def _entry(p: ItemPart) -> Entry:
    judge = p.judge or {}
    return Entry(
        p.item_id,
        p.dataset,
        p.dimension,
        p.group_id,
        p.component,
        p.score,
        p.merge_rule,
        p.components or ((p.component, p.score),),
        p.unscored,
        tuple(judge.get("judge_scores", ())),
        p.judge,
        p.metric,
        p.counts,
    )


class InMemoryScores:
    """ScoresStore: batches keyed like the real store, progress counted, the outbox kept."""

    def __init__(self) -> None:
        self.batches: dict[str, ScoredBatch] = {}
        self.progress_records: dict[str, dict[str, Any]] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        self.outbox: list[tuple[str, Any]] = []
        self.key = b"test digest key of the in-memory store"

    async def add_batch(
        self, batch: ScoredBatch, progress: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        if batch.key in self.batches:
            return None
        self.batches[batch.key] = batch
        held = self.progress_records.setdefault(
            batch.submission_id, {**progress, "completed": False, "scored": 0, "rules": []}
        )
        held["scored"] += len(batch.parts)
        held["rules"] = sorted(
            {*held["rules"], *(f"{d}={r}" for d, r in batch.dataset_rules.items())}
        )
        return copy.deepcopy(held)

    async def progress(self, submission_id: str) -> dict[str, Any] | None:
        held = self.progress_records.get(submission_id)
        return None if held is None else copy.deepcopy(held)

    def _of(self, submission_id: str) -> list[ScoredBatch]:
        return [b for b in self.batches.values() if b.submission_id == submission_id]

    async def scored(self, submission_id: str) -> list[tuple[str, list[Entry]]]:
        return [(b.scorer_version, [_entry(p) for p in b.parts]) for b in self._of(submission_id)]

    async def records(self, submission_id: str) -> list[dict[str, Any]]:
        return [_record(p) for b in self._of(submission_id) for p in b.parts]

    async def complete(self, report: dict[str, Any], events: Sequence[tuple[str, Any]]) -> bool:
        if report["_id"] in self.reports:
            return False
        self.reports[report["_id"]] = report
        self.progress_records[report["_id"]]["completed"] = True
        self.outbox.extend(events)
        return True

    async def report(self, submission_id: str) -> dict[str, Any] | None:
        return self.reports.get(submission_id)

    async def digest_key(self) -> bytes:
        return self.key


class InMemoryLeaderboard:
    """LeaderboardStore over a dict of entries."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}

    async def put(self, doc: dict[str, Any]) -> None:
        self.entries[doc["_id"]] = dict(doc)

    async def withdraw(self, submission_id: str) -> None:
        if submission_id in self.entries:
            self.entries[submission_id]["published"] = False

    async def entry(self, submission_id: str) -> dict[str, Any] | None:
        return self.entries.get(submission_id)

    async def set_equated(self, scores: Mapping[str, float], reference_pool: str) -> None:
        for submission_id, score in scores.items():
            self.entries[submission_id].update(equated=score, equated_on=reference_pool)

    async def names_of_others(self, tenant_id: str) -> list[dict[str, Any]]:
        others = [
            e for e in self.entries.values() if e["published"] and e["tenant_id"] != tenant_id
        ]
        return sorted(others, key=lambda e: (e["published_at"], e["_id"]))

    async def published(self, track: int, board: int, cycle: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.entries.values()
            if e["published"]
            and e["track"] == track
            and e["board"] == board
            and (not cycle or e["cycle"] == cycle)
        ]
