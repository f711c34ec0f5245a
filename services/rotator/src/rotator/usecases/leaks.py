"""Tracing a leaked file to the downloads it may come from (canaries, then option orders)."""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass

from medbench_runtime.errors import InvalidArgument
from rotator.core.bank import MAX_IMPORT_BATCH
from rotator.core.leaktrace import (
    LeakedLine,
    LeakEvidence,
    LeakSignal,
    Suspect,
    fingerprint,
    observed_orders,
)
from rotator.core.ports import AssignmentStore, LeakSignals, TaskStore

MAX_TRACE_LINES = 1_000_000
DEFAULT_SIGNALS = 100
MAX_SIGNALS = 1000


@dataclass(frozen=True)
class Trace:
    """The downloads a leaked file may come from, most likely first, and the lines read."""

    suspects: tuple[Suspect, ...]
    lines: int


class LeakTracing:
    """Finds which downloads a leaked file matches."""

    def __init__(
        self, tasks: TaskStore, assignments: AssignmentStore, signals: LeakSignals | None = None
    ) -> None:
        self._tasks = tasks
        self._assignments = assignments
        self._signals = signals

    async def signals(self, tenant_id: str, pool_id: str, limit: int) -> list[LeakSignal]:
        """Canaries answered with their original's right answer, newest first (of a tenant, of
        a pool, when given): at most limit (0: DEFAULT_SIGNALS; InvalidArgument outside
        0-MAX_SIGNALS)."""
        if not 0 <= limit <= MAX_SIGNALS:
            raise InvalidArgument(f"limit must be between 0 and {MAX_SIGNALS}, got {limit}")
        if self._signals is None:
            return []
        return await self._signals.signals(tenant_id, pool_id, limit or DEFAULT_SIGNALS)

    async def trace(self, batches: AsyncIterable[Sequence[LeakedLine]]) -> Trace:
        """Reads the leaked file's lines (at most MAX_IMPORT_BATCH a batch, MAX_TRACE_LINES in
        all: InvalidArgument beyond), then weighs every download against them: a canary in
        the file (its question, under its own id or none) counts against every download that
        showed it, with the chance that another download shows it too; so does each of the
        file's choice items shown in a download's own option order."""
        leaked: list[LeakedLine] = []
        async for batch in batches:
            if len(batch) > MAX_IMPORT_BATCH:
                raise InvalidArgument(
                    f"{len(batch)} lines in one message; at most {MAX_IMPORT_BATCH}"
                )
            leaked.extend(batch)
            if len(leaked) > MAX_TRACE_LINES:
                raise InvalidArgument(f"a leaked file is traced {MAX_TRACE_LINES} lines at most")
        questions = await self._tasks.questions([line.item_id for line in leaked if line.item_id])
        evidence = LeakEvidence(observed_orders(leaked, questions))
        # A canary's question in the file counts under its own id or under none (a line naming
        # another item is that item's, whatever its text).
        ids: dict[str, set[str]] = {}
        for line in leaked:
            ids.setdefault(fingerprint(line.question), set()).add(line.item_id)
        for hit in await self._assignments.canary_hits(list(ids)):
            named = ids.get(hit.fingerprint, set())
            if "" in named or hit.item_id in named or not hit.item_id:
                evidence.add_canary_hit(hit)
        async for variant in self._assignments.variants():
            evidence.add_variant(variant)
        return Trace(tuple(evidence.ranked()), len(leaked))
