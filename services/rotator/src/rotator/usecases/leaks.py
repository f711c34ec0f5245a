"""Tracing a leaked file to the downloads it may come from (canaries, then option orders)."""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass

from medbench_runtime.errors import InvalidArgument
from rotator.core.bank import MAX_IMPORT_BATCH
from rotator.core.leaktrace import LeakedLine, LeakEvidence, Suspect, fingerprint, observed_orders
from rotator.core.ports import AssignmentStore, TaskStore

MAX_TRACE_LINES = 1_000_000


@dataclass(frozen=True)
class Trace:
    """The downloads a leaked file may come from, most likely first, and the lines read."""

    suspects: tuple[Suspect, ...]
    lines: int


class LeakTracing:
    """Finds which downloads a leaked file matches."""

    def __init__(self, tasks: TaskStore, assignments: AssignmentStore) -> None:
        self._tasks = tasks
        self._assignments = assignments

    async def trace(self, batches: AsyncIterable[Sequence[LeakedLine]]) -> Trace:
        """Reads the leaked file's lines (at most MAX_IMPORT_BATCH a batch, MAX_TRACE_LINES in
        all: InvalidArgument beyond), then weighs every download against them: a canary in
        the file names its download outright; else the share of the file's choice items
        shown in a download's own option order, and the chance of that by accident."""
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
        for hit in await self._assignments.canary_hits([fingerprint(i.question) for i in leaked]):
            evidence.add_canary_hit(hit)
        async for variant in self._assignments.variants():
            evidence.add_variant(variant)
        return Trace(tuple(evidence.ranked()), len(leaked))
