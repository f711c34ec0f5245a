"""GroupCommit: many concurrent single-document writes become few multi-document writes.

Each caller awaits its own document's outcome, so a caller that returns knows its write is
durable (nothing is acknowledged before the database acknowledged it); meanwhile the callers
that arrive while one write is running are collected and written together by the next one.
Under load the batch grows by itself; alone, a write goes out at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Funnels ``submit(doc)`` calls into ``write_many(docs) -> results`` (one result per doc)."""

    def __init__(
        self, write_many: Callable[[Sequence[T]], Awaitable[Sequence[R]]], max_batch: int = 500
    ) -> None:
        self._write_many = write_many
        self._max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, doc: T) -> R:
        """Writes ``doc`` (with whatever else is waiting); returns its result or raises the
        write's error."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((doc, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            try:
                results = await self._write_many([doc for doc, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            if len(results) != len(batch):
                error = RuntimeError(f"write_many gave {len(results)} results for {len(batch)}")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
