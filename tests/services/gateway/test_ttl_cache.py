"""TtlCache: expiry, one load per key at a time, failures and clears (pure, fake clock)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core.ttl_cache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """Counts loads; each returns its number, after the gate opens when one is given."""

    def __init__(self, gate: asyncio.Event | None = None, fail: bool = False) -> None:
        self.loads = 0
        self.gate = gate
        self.fail = fail

    async def __call__(self) -> int:
        self.loads += 1
        number = self.loads
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError(f"load {number} failed")
        return number


async def test_a_value_is_kept_until_its_time_is_up_counted_from_the_load_start() -> None:
    clock, load = Clock(), Loader()
    cache: TtlCache[str, int] = TtlCache(2.0, clock=clock)
    assert await cache.get("k", load) == (1, False)
    clock.now += 1.9
    assert await cache.get("k", load) == (1, True)
    clock.now += 0.1
    assert await cache.get("k", load) == (2, False)
    assert load.loads == 2


async def test_keys_are_kept_apart() -> None:
    cache: TtlCache[str, str] = TtlCache(10.0, clock=Clock())

    async def a() -> str:
        return "a"

    async def b() -> str:
        return "b"

    assert await cache.get("x", a) == ("a", False)
    assert await cache.get("y", b) == ("b", False)
    assert await cache.get("x", b) == ("a", True)


async def test_concurrent_misses_share_one_load() -> None:
    gate = asyncio.Event()
    load = Loader(gate)
    cache: TtlCache[str, int] = TtlCache(2.0, clock=Clock())
    waiters = [asyncio.create_task(cache.get("k", load)) for _ in range(10)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*waiters)
    assert load.loads == 1
    assert {value for value, _ in results} == {1}


async def test_a_failed_load_reaches_every_waiter_and_is_not_kept() -> None:
    gate = asyncio.Event()
    failing = Loader(gate, fail=True)
    cache: TtlCache[str, int] = TtlCache(2.0, clock=Clock())
    waiters = [asyncio.create_task(cache.get("k", failing)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and "load 1 failed" in str(r) for r in results)
    assert failing.loads == 1
    assert len(cache) == 0
    assert await cache.get("k", Loader()) == (1, False)


async def test_a_caller_that_gives_up_does_not_cancel_the_load_for_the_others() -> None:
    gate = asyncio.Event()
    load = Loader(gate)
    cache: TtlCache[str, int] = TtlCache(2.0, clock=Clock())
    impatient = asyncio.create_task(cache.get("k", load))
    patient = asyncio.create_task(cache.get("k", load))
    await asyncio.sleep(0)
    impatient.cancel()
    gate.set()
    assert await patient == (1, False)
    assert impatient.cancelled()
    assert await cache.get("k", load) == (1, True)


async def test_clear_forgets_values_and_a_load_begun_before_it_is_not_kept() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(60.0, clock=clock)
    assert await cache.get("k", Loader()) == (1, False)
    cache.clear()
    assert len(cache) == 0

    gate = asyncio.Event()
    old, new = Loader(gate), Loader()
    old.loads = 100  # its value: 101
    before = asyncio.create_task(cache.get("k", old))
    await asyncio.sleep(0)
    cache.clear()  # a publication while that read was on its way
    assert await cache.get("k", new) == (1, False)  # a fresh load, not the one begun before
    gate.set()
    assert await before == (101, False)  # its caller gets it ...
    assert await cache.get("k", new) == (1, True)  # ... but it does not replace the new value


async def test_the_least_recently_loaded_go_first() -> None:
    cache: TtlCache[int, int] = TtlCache(60.0, max_entries=2, clock=Clock())
    for key in (1, 2, 3):

        async def load(key: int = key) -> int:
            return key * 10

        await cache.get(key, load)
    assert len(cache) == 2
    assert await cache.get(2, Loader()) == (20, True)
    assert await cache.get(3, Loader()) == (30, True)
    assert await cache.get(1, Loader()) == (1, False)


async def test_zero_turns_it_off_and_bad_settings_are_refused() -> None:
    load = Loader()
    cache: TtlCache[str, int] = TtlCache(0.0, clock=Clock())
    assert await cache.get("k", load) == (1, False)
    assert await cache.get("k", load) == (2, False)
    assert len(cache) == 0
    with pytest.raises(ValueError, match="ttl_s"):
        TtlCache(-1.0)
    with pytest.raises(ValueError, match="max_entries"):
        TtlCache(1.0, max_entries=0)


async def test_forget_drops_one_key_and_a_load_of_it_begun_before_is_not_kept() -> None:
    cache: TtlCache[str, int] = TtlCache(10.0, clock=Clock())
    values = iter([1, 2, 3])
    gate = asyncio.Event()

    async def slow() -> int:
        await gate.wait()
        return next(values)

    async def fast() -> int:
        return next(values)

    assert await cache.get("other", fast) == (1, False)
    pending = asyncio.ensure_future(cache.get("k", slow))
    await asyncio.sleep(0)
    cache.forget("k")  # a change committed while the load was reading the old state
    gate.set()
    assert await pending == (2, False)  # its caller gets it...
    assert await cache.get("k", fast) == (3, False)  # ...but it was not kept
    assert await cache.get("other", fast) == (1, True)  # other keys are untouched
    cache.forget("never-loaded")  # harmless
    assert len(cache) == 2
