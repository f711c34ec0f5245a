"""A pool records what a report on it must cover: every dataset of its track, with its dimension,
whichever datasets it holds (the aggregator marks a report that misses one as partial)."""

from __future__ import annotations

from rotator.usecases.rotation import RotationRequest
from tests.services.rotator.test_usecases import stocked, synthetic


async def test_a_whole_bank_pool_of_some_datasets_records_the_whole_track() -> None:
    rotator = await stocked()  # the sample bank: 5 of the LLM track's datasets
    pool = await rotator.rotation.publish("llm-sample-v1", "llm", "upload")
    held = {name for name, _ in pool.datasets}
    coverage = dict(rotator.pools.metas[pool.pool_id].coverage)
    track = {d.name: d.dimension for d in rotator.catalog.datasets_in("llm")}
    assert coverage == track and len(coverage) == 36
    assert held < set(coverage) and held == {"DDx-advanced", "MedEthics", "MedExam",
                                             "MedRxCheck", "MedSafety"}  # fmt: skip
    assert len(set(track.values())) == 5


async def test_a_rotation_cut_to_one_dataset_still_records_the_whole_track() -> None:
    rotator = await stocked(synthetic(300))
    rotated = await rotator.rotation.rotate(
        RotationRequest("llm", "upload", "2026-q1", groups_per_dataset=2, datasets=("MedExam",))
    )
    coverage = dict(rotator.pools.metas[rotated.pool.pool_id].coverage)
    assert {name for name, _ in rotated.pool.datasets} == {"MedExam"}
    assert coverage == {d.name: d.dimension for d in rotator.catalog.datasets_in("llm")}
