"""Fair sharing of request slots: per tenant first, then per submission, whatever their sizes."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.core.fairshare import FairScheduler


class Backlog:
    """Pending requests per submission; taking a slot sends one."""

    def __init__(self, pending: dict[str, int]) -> None:
        self.pending = dict(pending)
        self.sent: Counter[str] = Counter()

    def has_work(self, submission_id: str) -> bool:
        return self.pending.get(submission_id, 0) > 0

    def run(self, scheduler: FairScheduler, slots: int) -> list[str | None]:
        order: list[str | None] = []
        for _ in range(slots):
            chosen = scheduler.next_submission(self.has_work)
            order.append(chosen)
            if chosen is not None:
                assert self.has_work(chosen)
                self.pending[chosen] -= 1
                self.sent[chosen] += 1
        return order


def test_a_small_run_is_not_starved_by_a_huge_one() -> None:
    scheduler = FairScheduler()
    scheduler.add("huge", "tenant-a")
    scheduler.add("small", "tenant-b")
    backlog = Backlog({"huge": 100_000, "small": 300})
    order = backlog.run(scheduler, 600)
    assert backlog.pending["small"] == 0
    assert order.index("small") <= 1
    assert backlog.run(scheduler, 10) == ["huge"] * 10


def test_an_added_small_run_is_served_from_its_first_round() -> None:
    scheduler = FairScheduler()
    scheduler.add("huge", "tenant-a")
    backlog = Backlog({"huge": 100_000, "small": 300})
    backlog.run(scheduler, 5000)
    scheduler.add("small", "tenant-b")
    order = backlog.run(scheduler, 600)
    assert order.count("small") == 300
    assert backlog.pending["small"] == 0


def test_a_tenant_with_three_runs_shares_one_tenants_half() -> None:
    scheduler = FairScheduler()
    for name in ("a1", "a2", "a3"):
        scheduler.add(name, "tenant-a")
    scheduler.add("b1", "tenant-b")
    backlog = Backlog({"a1": 10_000, "a2": 10_000, "a3": 10_000, "b1": 10_000})
    backlog.run(scheduler, 1200)
    assert backlog.sent["b1"] == 600
    assert [backlog.sent[name] for name in ("a1", "a2", "a3")] == [200, 200, 200]


def test_runs_of_one_tenant_take_turns() -> None:
    scheduler = FairScheduler()
    scheduler.add("x", "tenant")
    scheduler.add("y", "tenant")
    assert Backlog({"x": 10, "y": 10}).run(scheduler, 4) == ["x", "y", "x", "y"]


def test_no_pending_work_gives_none() -> None:
    scheduler = FairScheduler()
    assert scheduler.next_submission(lambda _: True) is None
    scheduler.add("done", "tenant")
    assert scheduler.next_submission(lambda _: False) is None


def test_a_submission_without_work_is_skipped_until_it_has_some() -> None:
    scheduler = FairScheduler()
    scheduler.add("busy", "tenant-a")
    scheduler.add("waiting", "tenant-b")
    backlog = Backlog({"busy": 1000, "waiting": 0})
    assert backlog.run(scheduler, 50) == ["busy"] * 50
    backlog.pending["waiting"] = 3
    order = backlog.run(scheduler, 8)
    assert order.count("waiting") == 3, "idling banks no extra slots, and loses none"
    assert order[:6].count("waiting") == 3


def test_removing_and_re_adding_a_submission() -> None:
    scheduler = FairScheduler()
    scheduler.add("a", "tenant-a")
    scheduler.add("b", "tenant-b")
    scheduler.add("c", "tenant-c")
    backlog = Backlog({"a": 100, "b": 100, "c": 100})
    assert backlog.run(scheduler, 4) == ["a", "b", "c", "a"]
    scheduler.remove("b")
    assert "b" not in scheduler
    assert backlog.run(scheduler, 4) == ["c", "a", "c", "a"]
    scheduler.add("b", "tenant-b")
    assert backlog.run(scheduler, 6) == ["c", "b", "a", "c", "b", "a"]
    scheduler.remove("missing")


def test_removing_the_submission_whose_turn_it_is() -> None:
    scheduler = FairScheduler()
    scheduler.add("x1", "tenant-x")
    scheduler.add("x2", "tenant-x")
    scheduler.add("y", "tenant-y")
    backlog = Backlog({"x1": 100, "x2": 100, "y": 100})
    assert backlog.run(scheduler, 1) == ["x1"]
    scheduler.remove("x1")
    scheduler.remove("y")
    assert backlog.run(scheduler, 2) == ["x2", "x2"]
    scheduler.remove("x2")
    assert scheduler.next_submission(backlog.has_work) is None


def test_has_work_is_asked_once_per_submission_per_slot() -> None:
    scheduler = FairScheduler()
    for index in range(5):
        scheduler.add(f"s{index}", f"tenant-{index % 2}")
    asked: Counter[str] = Counter()

    def has_work(submission_id: str) -> bool:
        asked[submission_id] += 1
        return submission_id != "s0"

    scheduler.next_submission(has_work)
    assert max(asked.values()) == 1


def test_weights_split_a_tenants_share_among_its_runs() -> None:
    scheduler = FairScheduler()
    scheduler.add("heavy", "tenant", weight=2.0)
    scheduler.add("light", "tenant")
    backlog = Backlog({"heavy": 1000, "light": 1000})
    backlog.run(scheduler, 300)
    assert (backlog.sent["heavy"], backlog.sent["light"]) == (200, 100)


def test_a_tenants_weight_is_its_heaviest_pending_run() -> None:
    scheduler = FairScheduler()
    scheduler.add("priority", "tenant-a", weight=3.0)
    scheduler.add("normal", "tenant-b")
    backlog = Backlog({"priority": 1000, "normal": 1000})
    backlog.run(scheduler, 400)
    assert (backlog.sent["priority"], backlog.sent["normal"]) == (300, 100)


def test_tiny_weights_keep_their_ratio_and_stay_fast() -> None:
    scheduler = FairScheduler()
    scheduler.add("a", "tenant-a", weight=0.001)
    scheduler.add("b", "tenant-b", weight=0.002)
    backlog = Backlog({"a": 1000, "b": 1000})
    backlog.run(scheduler, 300)
    assert abs(backlog.sent["b"] - 2 * backlog.sent["a"]) <= 2


def test_adding_again_updates_the_weight_but_not_the_tenant() -> None:
    scheduler = FairScheduler()
    scheduler.add("s", "tenant-a")
    scheduler.add("s", "tenant-a", weight=2.0)
    with pytest.raises(ValueError, match="tenant-a"):
        scheduler.add("s", "tenant-b")


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan"), float("inf")])
def test_weights_must_be_positive_numbers(weight: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        FairScheduler().add("s", "tenant", weight=weight)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=12),
    st.lists(st.integers(1, 400), min_size=12, max_size=12),
    st.integers(1, 400),
)
def test_every_tenant_with_work_gets_an_equal_share(
    tenant_of: list[int], sizes: list[int], slots: int
) -> None:
    scheduler = FairScheduler()
    names = [f"s{index}" for index in range(len(tenant_of))]
    for name, tenant in zip(names, tenant_of, strict=False):
        scheduler.add(name, f"t{tenant}")
    backlog = Backlog({name: sizes[index] for index, name in enumerate(names)})
    total = sum(backlog.pending.values())
    order = backlog.run(scheduler, slots)
    assert order.count(None) == max(0, slots - total), "no slot idles while work is pending"
    per_tenant: Counter[str] = Counter()
    for name, tenant in zip(names, tenant_of, strict=False):
        per_tenant[f"t{tenant}"] += backlog.sent[name]
    unfinished = {
        f"t{tenant}"
        for name, tenant in zip(names, tenant_of, strict=False)
        if backlog.pending[name] > 0
    }
    for tenant in unfinished:
        # A tenant still waiting got at least as many slots as any other tenant, less one.
        assert per_tenant[tenant] >= max(per_tenant.values()) - 1
