"""TtlCache: answers kept for a few seconds, one load per key at a time (pure asyncio)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Keeps each loaded value for ``ttl_s`` seconds from the start of its load.

    Concurrent misses of one key share one load; a failed or cancelled load is not kept (its
    waiters get its error, the next call loads again); a caller that gives up does not cancel
    the load for the others. At most ``max_entries`` values are kept, the least recently
    loaded go first. ``clear()`` forgets every value and every load in progress: a value whose
    load started before the clear is handed to that load's waiters but never kept; ``forget(key)``
    does the same for one key. A ``ttl_s`` of 0 turns the cache off.
    """

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s < 0:
            raise ValueError(f"ttl_s must be >= 0, got {ttl_s}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._values: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._loading: dict[K, asyncio.Future[V]] = {}
        self._generation = 0
        # Loads in progress when their key was forgotten: their values are never kept.
        self._stale: set[asyncio.Future[V]] = set()

    def __len__(self) -> int:
        return len(self._values)

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """The value of key and whether it came from the cache (False: this call loaded it or
        waited for a load in progress)."""
        if self._ttl_s == 0:
            return await load(), False
        started = self._clock()
        kept = self._values.get(key)
        if kept is not None and kept[0] > started:
            return kept[1], True
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.ensure_future(load())
            self._loading[key] = pending
            generation = self._generation
            pending.add_done_callback(
                lambda done: self._loaded(key, done, started + self._ttl_s, generation)
            )
        return await asyncio.shield(pending), False

    def forget(self, key: K) -> None:
        """The key's value is gone; a load of it already in progress is not kept (it may have
        read what was there before the change that made the caller forget)."""
        self._values.pop(key, None)
        pending = self._loading.pop(key, None)
        if pending is not None:
            self._stale.add(pending)

    def clear(self) -> None:
        self._values.clear()
        self._loading.clear()
        self._generation += 1

    def _loaded(self, key: K, done: asyncio.Future[V], expires: float, generation: int) -> None:
        if self._loading.get(key) is done:
            del self._loading[key]
        if done in self._stale:
            self._stale.discard(done)
            return
        if generation != self._generation or done.cancelled() or done.exception() is not None:
            return
        self._values[key] = (expires, done.result())
        self._values.move_to_end(key)
        while len(self._values) > self._max_entries:
            self._values.popitem(last=False)
