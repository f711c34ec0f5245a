"""The consumer's coordinator watch (pure): a client replaced after its group coordinator stayed
unknown for the whole window, never for a blip, and the clock starting again afterwards."""

from __future__ import annotations

import time

from medbench_messaging.consumer import CoordinatorWatch, coordinator_known


def test_a_coordinator_unknown_for_the_whole_window_replaces_the_client() -> None:
    watch = CoordinatorWatch(lost_s=30)
    assert not watch.lost(True, 0)
    assert not watch.lost(False, 1)  # the clock starts
    assert not watch.lost(False, 30.9)
    assert watch.lost(False, 31.0)
    # Replaced: a new window, not another replacement on the next poll.
    assert not watch.lost(False, 31.2)
    assert not watch.lost(False, 61.1)
    assert watch.lost(False, 61.3)


def test_a_coordinator_found_again_resets_the_window() -> None:
    watch = CoordinatorWatch(lost_s=30)
    for t in range(0, 300, 20):  # unknown for 19 s at a time, then known again
        assert not watch.lost(False, t)
        assert not watch.lost(False, t + 19)
        assert not watch.lost(True, t + 19.5)


class _Heartbeat:
    def __init__(self, age_s: float) -> None:
        self.last_receive = time.monotonic() - age_s
        self.last_reset = time.monotonic() - 3600


class _Coordinator:
    def __init__(self, unknown: bool, stable: bool = False, heartbeat_age_s: float = 0) -> None:
        self.unknown = unknown
        self.is_stable = stable
        self.heartbeat = _Heartbeat(heartbeat_age_s)

    def coordinator_unknown(self) -> bool:
        return self.unknown

    def stable(self) -> bool:
        return self.is_stable


class _Client:
    def __init__(self, coordinator: object | None) -> None:
        self._coordinator = coordinator


def test_what_the_client_says_about_its_coordinator() -> None:
    assert coordinator_known(_Client(_Coordinator(False)))  # type: ignore[arg-type]
    assert not coordinator_known(_Client(_Coordinator(True)))  # type: ignore[arg-type]
    # A client that does not say is taken as knowing (never replaced on a guess).
    assert coordinator_known(_Client(None))  # type: ignore[arg-type]


def test_a_stable_member_whose_heartbeats_stopped_is_out_of_touch() -> None:
    fresh = _Client(_Coordinator(False, stable=True, heartbeat_age_s=3))
    stale = _Client(_Coordinator(False, stable=True, heartbeat_age_s=25))
    rejoining = _Client(_Coordinator(False, stable=False, heartbeat_age_s=25))
    assert coordinator_known(fresh, session_timeout_s=10)  # type: ignore[arg-type]
    assert not coordinator_known(stale, session_timeout_s=10)  # type: ignore[arg-type]
    # Not stable: between generations heartbeats pause by design; the join itself decides.
    assert coordinator_known(rejoining, session_timeout_s=10)  # type: ignore[arg-type]
