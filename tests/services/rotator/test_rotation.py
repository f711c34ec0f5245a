"""Rotation selection (pure): stratified, seeded, exposure-capped, anchored, board-separated."""

from __future__ import annotations

import random

from rotator.core.rotation import RotationParams, RotationPlan, board_of, rank, seed_for_cycle

SPECIALTIES = ["IM.CARD", "IM.RESP", "SURG.GEN", "PED.MED", "EM.ED"]


def bank(
    n_groups: int = 400, datasets: tuple[str, ...] = ("MedExam", "DDx-advanced")
) -> list[tuple[str, str, str]]:
    """(dataset, group_id, specialty) per item; MedExam groups have 5 items."""
    rows = []
    for dataset in datasets:
        for g in range(n_groups):
            group = f"{dataset}-{g}"
            size = 5 if dataset == "MedExam" else 1
            rows += [(dataset, group, SPECIALTIES[g % len(SPECIALTIES)])] * size
    return rows


def choose(
    rows: list[tuple[str, str, str]],
    params: RotationParams,
    exposures: dict[str, int] | None = None,
    anchors: dict[str, list[str]] | None = None,
) -> dict[str, tuple[str, ...]]:
    plan = RotationPlan(params, exposures or {}, anchors or {})
    for row in rows:
        plan.offer(*row)
    return dict(plan.choose(sorted({r[0] for r in rows})).groups)


def test_same_bank_and_seed_give_the_same_pool_in_any_order() -> None:
    rows = bank()
    params = RotationParams(board="upload", seed=7, groups_per_dataset=30)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    assert choose(rows, params) == choose(shuffled, params)
    assert choose(rows, params) != choose(rows, RotationParams(board="upload", seed=8))


def test_each_dataset_gets_its_quota_of_whole_groups_spread_over_specialties() -> None:
    picked = choose(bank(), RotationParams(board="api", seed=3, groups_per_dataset=30))
    for dataset, groups in picked.items():
        assert len(groups) == len(set(groups)) == 30
        specialties = {SPECIALTIES[int(g.rsplit("-", 1)[1]) % 5] for g in groups}
        assert specialties == set(SPECIALTIES), dataset
        counts = [
            sum(1 for g in groups if SPECIALTIES[int(g.rsplit("-", 1)[1]) % 5] == s)
            for s in SPECIALTIES
        ]
        assert max(counts) - min(counts) <= 1, "round-robin over specialties"


def test_boards_never_share_a_group() -> None:
    rows = bank()
    api = choose(rows, RotationParams(board="api", seed=5))
    upload = choose(rows, RotationParams(board="upload", seed=5))
    for dataset in api:
        assert not set(api[dataset]) & set(upload[dataset])
        assert all(board_of(g) == "api" for g in api[dataset])


def test_groups_at_the_exposure_cap_rest_but_anchors_return() -> None:
    rows = bank()
    first = choose(rows, RotationParams(board="upload", seed=1))
    served = {g: 2 for groups in first.values() for g in groups}
    anchors = {d: list(groups) for d, groups in first.items()}
    second = choose(
        rows,
        RotationParams(board="upload", seed=1, exposure_cap=2, anchors_per_dataset=3),
        served,
        anchors,
    )
    for dataset, groups in second.items():
        carried = set(groups) & set(first[dataset])
        assert len(carried) == 3 and carried <= set(anchors[dataset])
        assert set(groups[:3]) == carried, "anchors come first"
        assert len(groups) == 30


def test_a_small_bank_reports_its_shortfall() -> None:
    plan = RotationPlan(RotationParams(board="upload", seed=1), {}, {})
    for row in bank(n_groups=10, datasets=("MedExam",)):
        plan.offer(*row)
    selection = plan.choose(["MedExam", "MedSafety"])
    got = len(selection.groups["MedExam"])
    assert got == sum(1 for g in range(10) if board_of(f"MedExam-{g}") == "upload")
    assert selection.shortfalls == (f"MedExam: {got}/30", "MedSafety: 0/30")


def test_rank_and_seed_are_deterministic() -> None:
    assert rank(1, "g") == rank(1, "g") != rank(2, "g")
    assert seed_for_cycle("2026-11") == seed_for_cycle("2026-11") != seed_for_cycle("2026-12")
    assert {board_of(f"g{i}") for i in range(50)} == {"api", "upload"}
