"""Disclosing a pool over in-memory fakes: refused while a board serves the pool or one of its
question groups; once disclosed, its groups never serve again (rotation, anchors, whole-bank
pools, a pool made current again); idempotent."""

from __future__ import annotations

import pytest

from medbench_runtime.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from rotator.core.pools import PoolRecord
from rotator.core.rotation import RotationParams, RotationPlan, board_of
from rotator.usecases.disclosure import PoolDisclosure
from rotator.usecases.rotation import RotationRequest
from tests.services.rotator.test_usecases import Rotator, stocked, synthetic


def disclosure(rotator: Rotator) -> PoolDisclosure:
    return PoolDisclosure(rotator.pools, rotator.current)


def groups_of(rotator: Rotator, pool_id: str) -> set[str]:
    return {g for gs in rotator.pools.groups[pool_id].values() for g in gs}


def rotation(cycle: str, dataset: str, groups: int = 4, **kw: int) -> RotationRequest:
    return RotationRequest(
        "llm", "upload", cycle, groups_per_dataset=groups, datasets=(dataset,), **kw
    )


async def test_a_pool_a_board_still_serves_is_never_disclosed() -> None:
    rotator = await stocked(synthetic())
    first = (await rotator.rotation.rotate(rotation("c1", "MedExam"))).pool
    with pytest.raises(FailedPrecondition, match="is the current pool of track llm, board upload"):
        await disclosure(rotator).disclose(first.pool_id)
    # The next cycle carries 3 anchors of it over: its keys are still in use.
    second = (await rotator.rotation.rotate(rotation("c2", "MedExam"))).pool
    shared = groups_of(rotator, first.pool_id) & groups_of(rotator, second.pool_id)
    assert len(shared) == 3
    with pytest.raises(
        FailedPrecondition, match=f"shares 3 question groups .* with {second.pool_id}"
    ):
        await disclosure(rotator).disclose(first.pool_id)
    # Refused means nothing changed.
    assert rotator.pools.retired == {}
    assert rotator.pools.pools[first.pool_id].disclosed_at is None


async def test_a_disclosed_pools_groups_are_never_selected_again() -> None:
    control = await stocked(synthetic())
    rotator = await stocked(synthetic())
    for r in (control, rotator):
        await r.rotation.rotate(rotation("c1", "MedExam"))
        # Another dataset's pool: the board serves none of c1's groups any more.
        await r.rotation.rotate(rotation("c2", "MedSafety"))
    old = groups_of(rotator, "llm-upload-c1")
    assert len(old) == 4

    done = await disclosure(rotator).disclose("llm-upload-c1")
    assert (done.newly, done.retired_groups) == (True, 4)
    assert done.pool.disclosed_at is not None
    assert rotator.pools.retired == dict.fromkeys(old, "llm-upload-c1")
    read, current = await rotator.serving.pool("llm-upload-c1")
    assert read.disclosed_at == done.pool.disclosed_at and not current

    # Every eligible MedExam group asked for (27 on this board): without the disclosure the
    # rotation takes c1's four again; with it, none, and it says it fell short.
    everything = rotation("c3", "MedExam", groups=100, exposure_cap=10)
    again = await control.rotation.rotate(everything)
    after = await rotator.rotation.rotate(everything)
    assert old <= groups_of(control, again.pool.pool_id)
    assert not old & groups_of(rotator, after.pool.pool_id)
    assert (
        len(groups_of(rotator, after.pool.pool_id)) == len(groups_of(control, "llm-upload-c3")) - 4
    )
    assert after.shortfalls == ("MedExam: 23/100",)
    # The next cycle's anchors come from c3: never one of c1's either.
    later = await rotator.rotation.rotate(rotation("c4", "MedExam", groups=6))
    assert later.pool.anchor_groups == 3 and not old & groups_of(rotator, later.pool.pool_id)


def test_a_retired_group_is_never_an_anchor() -> None:
    upload = [g for g in (f"g-{i}" for i in range(40)) if board_of(g) == "upload"]
    previous, retired = upload[:4], set(upload[:3])
    params = RotationParams(board="upload", seed=5, groups_per_dataset=4, anchors_per_dataset=3)
    plan = RotationPlan(params, {}, {"MedExam": previous}, retired=retired)
    for g in upload:
        plan.offer("MedExam", g, "IM.CARD")
    chosen = plan.choose(["MedExam"])
    # Of the previous pool's four groups only the one not retired carries over.
    assert chosen.anchors["MedExam"] == (upload[3],)
    assert chosen.groups["MedExam"][0] == upload[3] and len(chosen.groups["MedExam"]) == 4
    assert not retired & set(chosen.groups["MedExam"])
    # Without the retirement all three would be anchors.
    control = RotationPlan(params, {}, {"MedExam": previous})
    assert len(control.choose(["MedExam"]).anchors["MedExam"]) == 3


async def test_disclosing_again_changes_nothing() -> None:
    rotator = await stocked(synthetic())
    await rotator.rotation.rotate(rotation("c1", "MedExam"))
    await rotator.rotation.rotate(rotation("c2", "MedSafety"))
    first = await disclosure(rotator).disclose("llm-upload-c1")
    second = await disclosure(rotator).disclose("llm-upload-c1")
    assert (second.newly, second.retired_groups) == (False, first.retired_groups)
    assert second.pool.disclosed_at == first.pool.disclosed_at
    assert first.pool.disclosed_at is not None and first.pool.disclosed_at.microsecond % 1000 == 0


async def test_a_disclosed_pool_or_one_holding_its_groups_is_never_made_current_again() -> None:
    rotator = await stocked(synthetic())
    await rotator.rotation.rotate(rotation("c1", "MedExam"))
    await rotator.rotation.rotate(rotation("c1b", "MedExam"))  # 3 anchors of c1
    await rotator.rotation.rotate(rotation("c2", "MedSafety"))
    await disclosure(rotator).disclose("llm-upload-c1")
    announced = len(rotator.current.announced)
    with pytest.raises(FailedPrecondition, match="is disclosed"):
        await rotator.rotation.rotate(rotation("c1", "MedExam"))
    with pytest.raises(FailedPrecondition, match="holds retired group"):
        await rotator.rotation.rotate(rotation("c1b", "MedExam"))
    assert rotator.pools.current[("llm", "upload")] == "llm-upload-c2"
    assert len(rotator.current.announced) == announced


async def test_a_whole_bank_pool_leaves_retired_groups_out() -> None:
    rotator = await stocked(synthetic())
    await rotator.rotation.publish("exam", "llm", "upload", ("MedExam",))
    await rotator.rotation.publish("safety", "llm", "upload", ("MedSafety",))
    await disclosure(rotator).disclose("exam")
    everything = await rotator.rotation.publish("all", "llm", "upload")
    assert "MedExam" not in dict(everything.datasets) and "MedSafety" in dict(everything.datasets)
    assert not groups_of(rotator, "exam") & groups_of(rotator, "all")
    with pytest.raises(FailedPrecondition, match="retired by a pool's disclosure"):
        await rotator.rotation.publish("exam-again", "llm", "upload", ("MedExam",))


async def test_a_disclosure_racing_a_rotation_is_aborted() -> None:
    rotator = await stocked(synthetic())
    await rotator.rotation.rotate(rotation("c1", "MedExam"))
    await rotator.rotation.rotate(rotation("c2", "MedSafety"))
    checked = await rotator.pools.current_pools()

    async def stale() -> list[PoolRecord]:
        # The rotation commits between the check and the disclosure's own commit.
        await rotator.rotation.rotate(rotation("c3", "MedEthics"))
        return checked

    rotator.pools.current_pools = stale  # type: ignore[method-assign]
    with pytest.raises(Aborted, match="current pool changed while pool llm-upload-c1"):
        await disclosure(rotator).disclose("llm-upload-c1")
    assert rotator.pools.retired == {}


async def test_an_unknown_or_malformed_pool_id_is_refused() -> None:
    rotator = await stocked(synthetic(60))
    with pytest.raises(NotFound):
        await disclosure(rotator).disclose("no-such-pool")
    with pytest.raises(InvalidArgument):
        await disclosure(rotator).disclose("bad pool!")
