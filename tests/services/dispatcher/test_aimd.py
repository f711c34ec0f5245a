"""Adaptive concurrency: additive increase per window, one halving per window of 429s."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.core.aimd import AdaptiveLimit


def test_starts_at_the_declared_cap_unless_told_otherwise() -> None:
    assert AdaptiveLimit(16).limit == 16
    assert AdaptiveLimit(16, start=4).limit == 4


@pytest.mark.parametrize(("cap", "start"), [(0, None), (4, 0), (4, 5)])
def test_rejects_limits_outside_one_to_cap(cap: int, start: int | None) -> None:
    with pytest.raises(ValueError):
        AdaptiveLimit(cap, start)


def test_grows_by_one_per_window_of_successes() -> None:
    limit = AdaptiveLimit(8, start=4)
    for _ in range(3):
        limit.on_success()
    assert limit.limit == 4
    limit.on_success()
    assert limit.limit == 5
    for _ in range(5):
        limit.on_success()
    assert limit.limit == 6


def test_never_grows_past_the_cap() -> None:
    limit = AdaptiveLimit(3, start=1)
    for _ in range(100):
        limit.on_success()
    assert limit.limit == 3


def test_a_throttle_halves_the_limit_down_to_one() -> None:
    limit = AdaptiveLimit(10)
    halvings = []
    for _ in range(5):
        limit.on_throttle(limit.acquire())
        limit.release()
        halvings.append(limit.limit)
    assert halvings == [5, 2, 1, 1, 1]


def test_a_burst_of_429s_from_one_window_halves_once() -> None:
    limit = AdaptiveLimit(32)
    epochs = [limit.acquire() for _ in range(32)]
    decreased = [limit.on_throttle(epoch) for epoch in epochs]
    assert decreased == [True] + [False] * 31
    assert limit.limit == 16


def test_a_429_sent_after_the_decrease_halves_again() -> None:
    limit = AdaptiveLimit(32)
    old = [limit.acquire() for _ in range(20)]
    limit.on_throttle(old[0])
    for _ in old:
        limit.release()
    fresh = limit.acquire()
    assert limit.on_throttle(old[1]) is False
    assert limit.on_throttle(fresh) is True
    assert limit.limit == 8


def test_an_epoch_from_the_future_is_a_bug() -> None:
    with pytest.raises(ValueError):
        AdaptiveLimit(4).on_throttle(1)


def test_acquire_respects_the_limit_and_release_frees_a_slot() -> None:
    limit = AdaptiveLimit(2)
    limit.acquire()
    limit.acquire()
    assert not limit.has_room()
    with pytest.raises(RuntimeError):
        limit.acquire()
    limit.release()
    assert limit.has_room()
    assert limit.in_flight == 1
    limit.release()
    with pytest.raises(RuntimeError):
        limit.release()


def test_requests_in_flight_may_exceed_a_lowered_limit_until_they_finish() -> None:
    limit = AdaptiveLimit(8)
    epochs = [limit.acquire() for _ in range(8)]
    limit.on_throttle(epochs[0])
    assert (limit.limit, limit.in_flight) == (4, 8)
    for _ in range(4):
        limit.release()
    assert not limit.has_room()
    limit.release()
    assert limit.has_room()


OPS = st.lists(
    st.sampled_from(["send", "success", "throttle", "finish"]) | st.integers(0, 40), max_size=200
)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 64), OPS)
def test_limit_stays_within_bounds_and_only_throttles_decrease(
    cap: int, ops: list[str | int]
) -> None:
    limit = AdaptiveLimit(cap, start=max(1, cap // 3))
    outstanding: list[int] = []
    for op in ops:
        before = limit.limit
        epoch_before = limit.epoch
        if op == "send" and limit.has_room():
            outstanding.append(limit.acquire())
        elif isinstance(op, int) and limit.has_room():
            for _ in range(min(op, limit.limit - limit.in_flight)):
                outstanding.append(limit.acquire())
        elif op == "success" and outstanding:
            outstanding.pop(0)
            limit.on_success()
            limit.release()
        elif op == "throttle" and outstanding:
            limit.on_throttle(outstanding.pop(0))
            limit.release()
        elif op == "finish" and outstanding:
            outstanding.pop()
            limit.release()
        assert 1 <= limit.limit <= cap
        assert limit.in_flight == len(outstanding)
        if limit.limit < before:
            assert op == "throttle"
            assert limit.limit == max(1, before // 2)
            assert limit.epoch == epoch_before + 1
        if op != "throttle":
            assert limit.epoch == epoch_before


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 256), st.integers(1, 256))
def test_any_burst_from_one_window_halves_exactly_once(cap: int, burst: int) -> None:
    limit = AdaptiveLimit(cap)
    epochs = [limit.acquire() for _ in range(min(burst, cap))]
    for epoch in epochs:
        limit.on_throttle(epoch)
    assert limit.limit == max(1, cap // 2)
    assert limit.epoch == 1


def test_with_a_tolerance_scattered_429s_do_not_decrease() -> None:
    limit = AdaptiveLimit(64, tolerance=0.2, window=50)
    decreased = []
    for i in range(500):
        if i % 10 == 9:  # a steady 10% of responses throttled
            decreased.append(limit.on_throttle(limit.epoch))
        else:
            limit.on_success()
    assert decreased == [False] * 50
    assert limit.limit == 64


def test_with_a_tolerance_a_burst_of_429s_still_halves() -> None:
    limit = AdaptiveLimit(64, tolerance=0.2, window=50)
    for _ in range(40):
        limit.on_success()
    outcomes = [limit.on_throttle(limit.epoch) for _ in range(11)]
    # 10 of 50 is the tolerated share; the 11th 429 exceeds it.
    assert outcomes == [False] * 10 + [True]
    assert limit.limit == 32


def test_without_history_a_429_is_a_real_signal() -> None:
    limit = AdaptiveLimit(8, tolerance=0.2)
    assert limit.on_throttle(limit.epoch) is True
    assert limit.limit == 4


@pytest.mark.parametrize(("tolerance", "window"), [(-0.1, 50), (1.0, 50), (0.2, 0)])
def test_rejects_a_bad_tolerance_or_window(tolerance: float, window: int) -> None:
    with pytest.raises(ValueError):
        AdaptiveLimit(8, tolerance=tolerance, window=window)
