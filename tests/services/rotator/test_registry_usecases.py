"""The registry as versions, through the use cases on in-memory fakes: maintainers add and revise
datasets at run time (optimistic concurrency against the version they read), imports and new
pools use the new version at once, pools already built keep theirs, and replicas sharing a
store see each other's versions within the cache time."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from medbench_runtime.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from rotator.core.bank import ImportItem, KeyRecord
from rotator.core.versions import DatasetRejected
from rotator.registry import DEFAULT_REGISTRY_PATH
from rotator.usecases.registry import MAX_VERSIONS_LISTED, RegistryVersions
from rotator.usecases.rotation import RotationRequest
from tests.services.rotator.fakes import InMemoryRegistryStore
from tests.services.rotator.test_usecases import Rotator, batches, stocked

RAW = DEFAULT_REGISTRY_PATH.read_bytes()
NEW = "MedNewQA"


def new_dataset(**changes: Any) -> dict[str, Any]:
    return {
        "name": NEW,
        "track": "llm",
        "dimension": "complex_reasoning",
        "description": "Open questions added at run time",
        "answer_format": "free_text",
        "metric": "key_point_recall+judge",
        "dataset_rule": "mean",
        "permutations": 1,
        "pool_lines": 30,
    } | changes


def new_items(n: int, answer_format: str = "free_text", dataset: str = NEW) -> list[ImportItem]:
    return [
        ImportItem(
            item_id=f"{dataset}-{i}",
            dataset=dataset,
            answer_format=answer_format,
            question=f"病例 {i}：请给出诊断与依据。",
            key=KeyRecord("", (f"参考答案 {i}",), (f"要点 {i}",)),
            ref=f"new.jsonl:{i + 1}",
        )
        for i in range(n)
    ]


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def metrics_of(rotator: Rotator, pool_id: str, dataset: str) -> set[str]:
    """The metric specs a stored pool's items of a dataset carry (the sealed keys' context)."""
    frozen = rotator.pools.frozen[pool_id]
    return {p.dataset.metric for p in frozen.items if p.task.dataset == dataset}


# -- seeding ----------------------------------------------------------------------------------


async def test_seeding_stores_version_1_once_however_many_replicas_start() -> None:
    store = InMemoryRegistryStore()
    replicas = [RegistryVersions(store) for _ in range(3)]
    infos = await asyncio.gather(*(r.seed(RAW, "medbench_v4.json") for r in replicas))
    assert {i.number for i in infos} == {1} and list(store.versions) == [1]
    again = await replicas[0].seed(RAW, "medbench_v4.json")
    assert again.number == 1 and list(store.versions) == [1]


async def test_a_store_with_versions_keeps_them_when_a_replica_starts() -> None:
    rotator = Rotator()
    await rotator.registry.put_dataset(1, new_dataset(), "k1")
    restarted = RegistryVersions(rotator.registry_store)
    assert (await restarted.seed(RAW, "medbench_v4.json")).number == 2
    assert (await restarted.current()).registry.dataset(NEW).metric == "key_point_recall+judge"


# -- a dataset added at run time --------------------------------------------------------------


async def test_a_dataset_added_at_run_time_is_imported_and_pooled_under_the_new_version() -> None:
    rotator = Rotator()
    before = await rotator.bank.import_items(batches(new_items(4)))
    assert before.imported == 0
    assert {r.field for r in before.rejected} == {"task.dataset"}

    put = await rotator.registry.put_dataset(1, new_dataset(), "k1", "new open QA")
    assert (put.version.number, put.added, put.unchanged, put.current) == (2, True, False, 2)
    assert put.version.change == f"added dataset {NEW}"

    after = await rotator.bank.import_items(batches(new_items(4)))
    assert (after.imported, after.rejected) == (4, ())
    rotated = await rotator.rotation.rotate(
        RotationRequest("llm", "upload", "c1", groups_per_dataset=4, datasets=(NEW,))
    )
    assert rotated.pool.registry_version == "2"
    # (The boards split a dataset's question groups between them.)
    assert [name for name, _ in rotated.pool.datasets] == [NEW]
    assert metrics_of(rotator, rotated.pool.pool_id, NEW) == {"key_point_recall+judge"}
    listed = await rotator.listing.list_datasets("llm")
    assert listed.registry_version == "2"
    mine = next(d for d in listed.datasets if d.name == NEW)
    assert (mine.bank_items, mine.keyed_items, mine.dimension) == (4, 4, "complex_reasoning")


async def test_an_older_pool_keeps_its_version_when_a_dataset_is_revised() -> None:
    rotator = Rotator()
    await rotator.registry.put_dataset(1, new_dataset(), "k1")
    await rotator.bank.import_items(batches(new_items(3)))
    old = await rotator.rotation.publish("llm-old", "llm", "upload")
    assert old.registry_version == "2"

    revised = await rotator.registry.put_dataset(2, new_dataset(metric="judge"), "k1", "judge only")
    assert (revised.version.number, revised.added) == (3, False)
    assert revised.version.change == f"revised dataset {NEW}"
    new = await rotator.rotation.publish("llm-new", "llm", "upload")
    assert new.registry_version == "3"

    # What scores each pool's items: the version each was built from.
    assert metrics_of(rotator, "llm-old", NEW) == {"key_point_recall+judge"}
    assert metrics_of(rotator, "llm-new", NEW) == {"judge"}
    pool, _ = await rotator.serving.pool("llm-old")
    assert pool.registry_version == "2"
    # The datasets of a pool are listed under its own version, only the pool's datasets.
    of_old = await rotator.listing.list_datasets(None, pool_id="llm-old")
    assert of_old.registry_version == "2"
    assert [(d.name, d.metric) for d in of_old.datasets] == [(NEW, "key_point_recall+judge")]
    current = await rotator.listing.list_datasets("llm")
    assert next(d.metric for d in current.datasets if d.name == NEW) == "judge"
    first = await rotator.listing.list_datasets("llm", version=1)
    assert first.registry_version == "1" and NEW not in {d.name for d in first.datasets}
    # A submission assigned to the old pool still gets the old pool's items.
    await rotator.current.make_current(old, ())
    assigned, _ = await rotator.serving.assign("sub-1", "tenant-a", "llm", "upload")
    assert assigned.pool_id == "llm-old"


async def test_a_revised_answer_format_keeps_old_items_out_until_they_are_imported_again() -> None:
    rotator = Rotator()
    await rotator.registry.put_dataset(1, new_dataset(), "k1")
    await rotator.bank.import_items(batches(new_items(3)))
    await rotator.registry.put_dataset(2, new_dataset(answer_format="json_object"), "k1")
    with pytest.raises(FailedPrecondition, match=rf"3 items of {NEW} in answer format free_text"):
        await rotator.rotation.publish("llm-p", "llm", "upload")
    assert "llm-p" not in rotator.pools.pools
    again = await rotator.bank.import_items(batches(new_items(3, answer_format="json_object")))
    assert (again.new_versions, again.rejected) == (3, ())
    pool = await rotator.rotation.publish("llm-p", "llm", "upload")
    assert pool.registry_version == "3" and dict(pool.datasets) == {NEW: 3}


# -- optimistic concurrency -------------------------------------------------------------------


async def test_a_change_against_a_stale_version_is_aborted_and_a_retry_gets_its_version() -> None:
    store = InMemoryRegistryStore()
    a, b = Rotator(registry_store=store), Rotator(registry_store=store)
    made = await a.registry.put_dataset(1, new_dataset(), "k-a", "first")
    with pytest.raises(Aborted, match="the registry is at version 2, not 1"):
        await b.registry.put_dataset(1, new_dataset(name="MedOtherQA"), "k-b")
    # The same request again (its answer lost): the version it made, not ABORTED.
    retried = await a.registry.put_dataset(1, new_dataset(), "k-a", "first")
    assert (retried.version.number, retried.added) == (made.version.number, True)
    assert sorted(store.versions) == [1, 2]
    # Another maintainer's identical change is not a retry.
    with pytest.raises(Aborted):
        await b.registry.put_dataset(1, new_dataset(), "k-b", "first")
    # Re-read, put again.
    second = await b.registry.put_dataset(2, new_dataset(name="MedOtherQA"), "k-b")
    assert second.version.number == 3
    unchanged = await a.registry.put_dataset(3, new_dataset(), "k-a")
    assert (unchanged.unchanged, unchanged.version.number) == (True, 3)
    assert sorted(store.versions) == [1, 2, 3]


async def test_a_refused_dataset_names_its_field_and_makes_no_version() -> None:
    rotator = Rotator()
    with pytest.raises(DatasetRejected, match=r"^dataset\.metric: .*unknown metric") as caught:
        await rotator.registry.put_dataset(1, new_dataset(metric="judge+bertscore"), "k1")
    assert isinstance(caught.value, InvalidArgument)
    with pytest.raises(DatasetRejected, match=r"^dataset\.dimension: "):
        await rotator.registry.put_dataset(1, new_dataset(dimension="tool_use"), "k1")
    with pytest.raises(InvalidArgument, match="^revises: "):
        await rotator.registry.put_dataset(0, new_dataset(), "k1")
    with pytest.raises(InvalidArgument, match="^note: "):
        await rotator.registry.put_dataset(1, new_dataset(), "k1", "x" * 1001)
    assert list(rotator.registry_store.versions) == [1]


# -- replicas ---------------------------------------------------------------------------------


async def test_a_replica_sees_another_ones_version_within_the_cache_time() -> None:
    store, clock = InMemoryRegistryStore(), Clock()
    writer = Rotator(registry_store=store)
    reader = Rotator(registry_store=store, registry_cache_s=1.0, clock=clock)
    assert (await reader.registry.current()).number == 1
    await writer.registry.put_dataset(1, new_dataset(), "k1")
    reads = store.reads
    clock.t += 0.5
    assert (await reader.registry.current()).number == 1  # within the cache time
    assert store.reads == reads  # and no read for it
    clock.t += 0.5
    assert (await reader.registry.current()).number == 2
    assert store.reads == reads + 1


async def test_an_import_or_rotation_naming_a_dataset_just_added_elsewhere_works_at_once() -> None:
    store, clock = InMemoryRegistryStore(), Clock()
    writer = Rotator(registry_store=store)
    reader = Rotator(registry_store=store, registry_cache_s=60.0, clock=clock)
    assert (await reader.registry.current()).number == 1
    await writer.registry.put_dataset(1, new_dataset(), "k1")
    done = await reader.bank.import_items(batches(new_items(2)))
    assert (done.imported, done.rejected) == (2, ())
    assert (await reader.registry.current()).number == 2  # the fresh read was kept
    await writer.registry.put_dataset(2, new_dataset(name="MedOtherQA"), "k1")
    await reader.bank.import_items(batches(new_items(2, dataset="MedOtherQA")))
    rotated = await reader.rotation.rotate(
        RotationRequest("llm", "upload", "c1", groups_per_dataset=2, datasets=("MedOtherQA",))
    )
    assert rotated.pool.registry_version == "3"
    # Nothing unknown named: the cached version serves (60 s have not passed).
    await writer.registry.put_dataset(3, new_dataset(name="MedThirdQA"), "k1")
    assert (await reader.listing.list_datasets("llm")).registry_version == "3"


async def test_every_request_reads_the_version_when_the_cache_time_is_0() -> None:
    store = InMemoryRegistryStore()
    rotator = Rotator(registry_store=store)
    reads = store.reads
    for _ in range(3):
        await rotator.listing.list_datasets("llm")
    assert store.reads == reads + 3


# -- reading versions -------------------------------------------------------------------------


async def test_versions_are_listed_newest_first_in_pages() -> None:
    rotator = Rotator()
    for n in range(1, 5):
        await rotator.registry.put_dataset(n, new_dataset(pool_lines=30 + n), f"k{n}")
    infos, current = await rotator.registry.versions()
    assert current == 5 and [i.number for i in infos] == [5, 4, 3, 2, 1]
    assert infos[-1].change == "seeded from medbench_v4.json"
    page, _ = await rotator.registry.versions(before=4, limit=2)
    assert [i.number for i in page] == [3, 2]
    shown = await rotator.registry.show(2)
    assert not shown.current and shown.info.created_by == "k1"
    assert next(d for d in shown.data["datasets"] if d["name"] == NEW)["pool_lines"] == 31
    assert (await rotator.registry.show()).current
    with pytest.raises(NotFound, match="registry version 9 not found"):
        await rotator.registry.show(9)
    with pytest.raises(InvalidArgument):
        await rotator.registry.versions(before=-1)
    assert MAX_VERSIONS_LISTED == 200


async def test_listing_refuses_unknown_versions_and_pools() -> None:
    rotator = await stocked()
    with pytest.raises(NotFound, match="registry version 7"):
        await rotator.listing.list_datasets(None, version=7)
    with pytest.raises(NotFound, match="pool 'nope'"):
        await rotator.listing.list_datasets(None, pool_id="nope")
    await rotator.rotation.publish("llm-a", "llm", "upload")
    with pytest.raises(InvalidArgument, match="not both"):
        await rotator.listing.list_datasets(None, version=1, pool_id="llm-a")


async def test_a_pool_from_before_versions_finds_version_1_by_the_files_label() -> None:
    rotator = await stocked()
    pool = await rotator.rotation.publish("llm-a", "llm", "upload")
    legacy = rotator.registry_store.versions[1].info.legacy_label
    rotator.pools.pools["llm-legacy"] = replace(pool, pool_id="llm-legacy", registry_version=legacy)
    listed = await rotator.listing.list_datasets("llm", pool_id="llm-legacy")
    assert listed.registry_version == "1" and len(listed.datasets) == len(pool.datasets)
    rotator.pools.pools["llm-other"] = replace(pool, pool_id="llm-other", registry_version="v4+0")
    with pytest.raises(FailedPrecondition, match="before the registry was versioned"):
        await rotator.listing.list_datasets("llm", pool_id="llm-other")
