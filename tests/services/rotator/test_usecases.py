"""The rotator's use cases over in-memory fakes of its ports: import, listing, rotation,
publication, serving downloads, and leak tracing (no stack)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from medbench_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from rotator.core.bank import MAX_IMPORT_BATCH, ImportItem, KeyRecord
from rotator.core.catalog import DatasetCatalog
from rotator.core.download import STREAM_BATCH, prompt_hash
from rotator.core.leaktrace import LeakedLine, LeakSignal, LegacyCanary, Variant, fingerprint
from rotator.core.options import parse_options
from rotator.core.rotation import board_of
from rotator.core.synthetic import synthetic_items
from rotator.core.versions import seed_version
from rotator.registry import DEFAULT_REGISTRY_PATH
from rotator.usecases.bank import BankImport, DatasetListing
from rotator.usecases.leaks import LeakTracing
from rotator.usecases.pool import PoolServing
from rotator.usecases.registry import RegistryVersions
from rotator.usecases.rotation import PoolRotation, RotationRequest
from tests.services.rotator.fakes import (
    PUBLISHED_AT,
    InMemoryAssignmentStore,
    InMemoryCurrentPools,
    InMemoryImageStore,
    InMemoryLeakSignals,
    InMemoryPoolStore,
    InMemoryRegistryStore,
    InMemoryTaskStore,
)

BANK = Path(__file__).resolve().parents[3] / "services/rotator/src/rotator/sample_bank"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
SECRET = b"test-leak-secret"


class Rotator:
    """The use cases wired to one set of fakes, as app.py wires them to Mongo."""

    def __init__(
        self,
        canaries_per_dataset: int = 1,
        registry_store: InMemoryRegistryStore | None = None,
        registry_cache_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # The registry store seeded with the bundled file, as app.py seeds it (version 1).
        seed = seed_version(DEFAULT_REGISTRY_PATH.read_bytes(), "medbench_v4.json", PUBLISHED_AT)
        self.registry_store = registry_store or InMemoryRegistryStore()
        self.registry_store.versions.setdefault(1, seed)
        self.catalog = DatasetCatalog.of_version(seed)
        self.registry = RegistryVersions(self.registry_store, registry_cache_s, clock)
        self.tasks = InMemoryTaskStore()
        self.pools = InMemoryPoolStore()
        self.current = InMemoryCurrentPools(self.pools)
        self.assignments = InMemoryAssignmentStore(self.pools)
        self.images = InMemoryImageStore()
        self.bank = BankImport(self.tasks, self.images, self.registry)
        self.listing = DatasetListing(self.tasks, self.pools, self.registry)
        self.rotation = PoolRotation(self.tasks, self.pools, self.current, self.registry)
        self.serving = PoolServing(
            self.pools, self.assignments, self.images, SECRET, canaries_per_dataset
        )
        self.signals = InMemoryLeakSignals()
        self.leaks = LeakTracing(self.tasks, self.assignments, self.signals)


def import_item(row: Mapping[str, Any], **changes: Any) -> ImportItem:
    """A bank-file row (sample_bank/items.jsonl, synthetic_items) as an import sends it."""
    item = ImportItem(
        item_id=row["item_id"],
        dataset=row["dataset"],
        answer_format=row["answer_format"],
        question=row["question"],
        group_id=row.get("group_id", ""),
        specialties=tuple(row.get("specialties", ())),
        provenance=row.get("provenance", ""),
        licence=row.get("licence", ""),
        key=KeyRecord("", tuple(row["reference"])) if "reference" in row else None,
    )
    return replace(item, **changes)


def sample_rows() -> list[dict[str, Any]]:
    with (BANK / "items.jsonl").open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


async def batches(*groups: Sequence[Any]) -> AsyncIterator[Sequence[Any]]:
    for group in groups:
        yield group


async def collect(rotator: Rotator, submission_id: str, include_prompts: bool = True) -> list[Any]:
    return [
        item
        async for batch in rotator.serving.prompts(submission_id, include_prompts)
        for item in batch.items
    ]


async def stocked(rows: Iterable[Mapping[str, Any]] | None = None, **kw: Any) -> Rotator:
    rotator = Rotator(**kw)
    items = [import_item(r) for r in (sample_rows() if rows is None else rows)]
    done = await rotator.bank.import_items(batches(items))
    assert not done.rejected, done.rejected
    return rotator


# -- import -----------------------------------------------------------------------------------


async def test_importing_the_sample_bank_twice_stores_it_once_and_a_change_makes_a_version() -> (
    None
):
    rows = sample_rows()
    rotator = await stocked(rows)
    assert len(rotator.tasks.tasks) == len(rows)
    again = await rotator.bank.import_items(batches([import_item(r) for r in rows]))
    assert (again.imported, again.unchanged, again.new_versions) == (0, len(rows), 0)
    changed = import_item(rows[0], question=rows[0]["question"] + "\n(修订)")
    third = await rotator.bank.import_items(batches([changed]))
    assert (third.imported, third.unchanged, third.new_versions) == (0, 0, 1)
    assert rotator.tasks.tasks[rows[0]["item_id"]].version == 2


async def test_a_rejected_item_is_reported_with_its_field_and_the_others_are_stored() -> None:
    rows = sample_rows()[:3]
    rotator = Rotator()
    items = [
        import_item(rows[0], ref="line 1"),
        import_item(rows[1], dataset="NoSuchSet", ref="line 2"),
        import_item(rows[2], key=KeyRecord("", ("Z",)), ref="line 3"),
        import_item(rows[0], ref="line 4"),
    ]
    done = await rotator.bank.import_items(batches(items))
    assert done.imported == 1
    assert [(r.ref, r.item_id, r.field) for r in done.rejected] == [
        ("line 2", rows[1]["item_id"], "task.dataset"),
        ("line 3", rows[2]["item_id"], "key.reference"),
        ("line 4", rows[0]["item_id"], "task.item_id"),
    ]
    assert "appears twice" in done.rejected[2].reason
    assert set(rotator.tasks.tasks) == {rows[0]["item_id"]}


async def test_a_choice_key_is_normalised_and_names_its_item_when_the_import_does_not() -> None:
    row = sample_rows()[0]
    rotator = Rotator()
    await rotator.bank.import_items(batches([import_item(row, key=KeyRecord("", ("<B>",)))]))
    stored = rotator.tasks.tasks[row["item_id"]].item.key
    assert stored == KeyRecord(row["item_id"], ("B",))


async def test_an_item_without_a_key_is_banked_but_never_offered_to_a_pool() -> None:
    rows = sample_rows()
    rotator = await stocked(rows)
    await rotator.bank.import_items(batches([import_item(rows[0], key=None, question="改")]))
    listed = await rotator.listing.list_datasets("llm")
    exam = next(d for d in listed.datasets if d.name == rows[0]["dataset"])
    n = sum(r["dataset"] == rows[0]["dataset"] for r in rows)
    assert (exam.bank_items, exam.keyed_items) == (n, n - 1)
    assert rows[0]["item_id"] not in {
        t.item_id for t, *_ in await rotator.tasks.bank_entries("llm", ())
    }


async def test_images_are_checked_before_any_is_stored_and_stored_once_by_content() -> None:
    rows = sample_rows()[:3]
    rotator = Rotator()
    with_image = import_item(rows[0], image_paths=("a.png",), images={"a.png": PNG})
    same_bytes = import_item(rows[1], image_paths=("b.png",), images={"b.png": PNG})
    not_an_image = import_item(
        rows[2], image_paths=("c.png", "d.png"), images={"c.png": PNG + b"x", "d.png": b"GIF"}
    )
    done = await rotator.bank.import_items(batches([with_image, same_bytes, not_an_image]))
    assert done.images_stored == 1
    assert [r.field for r in done.rejected] == ["images"]
    assert "d.png is not a PNG, JPEG, GIF or WebP file" in done.rejected[0].reason
    # The rejected item's valid image was not stored either.
    assert len(rotator.images.images) == 1
    assert rotator.tasks.tasks[rows[1]["item_id"]].item.image_ids == (
        rotator.tasks.tasks[rows[0]["item_id"]].item.image_ids
    )


async def test_an_image_the_item_does_not_list_rejects_the_item() -> None:
    row = sample_rows()[0]
    rotator = Rotator()
    done = await rotator.bank.import_items(batches([import_item(row, images={"x.png": PNG})]))
    assert [r.field for r in done.rejected] == ["images"]
    assert not rotator.images.images


async def test_an_oversized_import_message_is_invalid() -> None:
    row = sample_rows()[0]
    with pytest.raises(InvalidArgument, match=f"at most {MAX_IMPORT_BATCH}"):
        await Rotator().bank.import_items(batches([import_item(row)] * (MAX_IMPORT_BATCH + 1)))


async def test_listing_shows_registry_datasets_with_counts_and_dimension_names() -> None:
    rows = sample_rows()
    rotator = await stocked(rows)
    listed = await rotator.listing.list_datasets("llm")
    assert listed.registry_version == rotator.catalog.version
    by_name = {d.name: d for d in listed.datasets}
    assert [d.name for d in listed.datasets] == [
        d.name for d in rotator.catalog.registry.datasets_in("llm")
    ]
    exam = by_name["MedExam"]
    assert exam.bank_items == sum(r["dataset"] == "MedExam" for r in rows) > 0
    assert exam.dimension == "knowledge_qa" and exam.dimension_name_zh
    assert all(
        d.bank_items == 0 for d in listed.datasets if d.name not in {r["dataset"] for r in rows}
    )
    assert len((await rotator.listing.list_datasets(None)).datasets) > len(listed.datasets)


# -- rotation and publication -----------------------------------------------------------------


def synthetic(n: int = 1200) -> list[dict[str, Any]]:
    return list(synthetic_items(n, seed=7))


async def test_a_rotation_freezes_a_pool_of_its_board_makes_it_current_and_counts_exposure() -> (
    None
):
    rotator = await stocked(synthetic())
    rotated = await rotator.rotation.rotate(
        RotationRequest("llm", "upload", "2026-q1", groups_per_dataset=5)
    )
    pool = rotated.pool
    assert pool.pool_id == "llm-upload-2026-q1" and pool.method == "rotation"
    assert pool.params is not None and pool.params.groups_per_dataset == 5
    assert await rotator.pools.is_current(pool)
    assert rotator.current.announced == [pool]
    groups = {g for gs in rotator.pools.groups[pool.pool_id].values() for g in gs}
    # The boards never share data, and each dataset holds at most 5 question groups.
    assert groups and all(board_of(g) == "upload" for g in groups)
    assert all(len(gs) <= 5 for gs in rotator.pools.groups[pool.pool_id].values())
    assert set(await rotator.pools.exposures()) == groups


async def test_a_cycle_is_rotated_once() -> None:
    rotator = await stocked(synthetic())
    request = RotationRequest("llm", "api", "c1", groups_per_dataset=4)
    first = await rotator.rotation.rotate(request)
    again = await rotator.rotation.rotate(request)
    assert again.pool == first.pool and rotator.pools.stored == [first.pool.pool_id]
    with pytest.raises(AlreadyExists, match="a cycle is rotated once"):
        await rotator.rotation.rotate(replace(request, groups_per_dataset=6))


async def test_the_next_cycle_keeps_anchors_and_skips_groups_at_the_exposure_cap() -> None:
    rotator = await stocked(synthetic())
    first = await rotator.rotation.rotate(
        RotationRequest("llm", "upload", "c1", groups_per_dataset=4, exposure_cap=1)
    )
    second = await rotator.rotation.rotate(
        RotationRequest(
            "llm", "upload", "c2", groups_per_dataset=4, exposure_cap=1, anchors_per_dataset=1
        )
    )
    before = rotator.pools.groups[first.pool.pool_id]
    after = rotator.pools.groups[second.pool.pool_id]
    for dataset, groups in after.items():
        reused = [g for g in groups if g in before.get(dataset, [])]
        # One anchor per dataset carries over; every other group is new (cap 1).
        assert len(reused) <= 1, (dataset, reused)
    assert second.pool.anchor_groups == sum(
        any(g in before.get(d, []) for g in gs) for d, gs in after.items()
    )
    assert second.pool.anchor_groups > 0
    assert await rotator.pools.is_current(second.pool)
    assert not await rotator.pools.is_current(first.pool)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (RotationRequest("llm", "upload", "bad cycle!"), "cycle must be"),
        (RotationRequest("llm", "upload", "c1", exposure_cap=-1), "must be positive"),
        (RotationRequest("llm", "upload", "c1", datasets=("CMB-Clin-img",)), "is not a llm"),
    ],
)
async def test_a_malformed_rotation_is_invalid_and_stores_nothing(
    request_: RotationRequest, message: str
) -> None:
    rotator = await stocked(synthetic(60))
    with pytest.raises(InvalidArgument, match=message):
        await rotator.rotation.rotate(request_)
    assert not rotator.pools.stored and not rotator.current.announced


async def test_publishing_a_whole_bank_pool_takes_every_keyed_item_and_can_be_repeated() -> None:
    rows = sample_rows()
    rotator = await stocked(rows)
    pool = await rotator.rotation.publish("llm-sample-v1", "llm", "upload")
    assert pool.item_count == len(rows) and pool.method == "whole-bank" and pool.params is None
    again = await rotator.rotation.publish("llm-sample-v1", "llm", "upload")
    assert again == pool and rotator.pools.stored == ["llm-sample-v1"]
    assert len(rotator.current.announced) == 2
    with pytest.raises(AlreadyExists, match="exists for track llm, board upload"):
        await rotator.rotation.publish("llm-sample-v1", "llm", "api")
    with pytest.raises(InvalidArgument, match="pool_id"):
        await rotator.rotation.publish("bad id!", "llm", "upload")
    with pytest.raises(InvalidArgument, match="no items for track multimodal"):
        await rotator.rotation.publish("mm-empty", "multimodal", "upload")


# -- serving ----------------------------------------------------------------------------------


async def test_a_download_shows_the_tenants_option_order_and_its_canaries_in_place() -> None:
    rows = sample_rows()
    rotator = await stocked(rows)
    pool = await rotator.rotation.publish("p1", "llm", "upload")
    assigned, variant = await rotator.serving.assign("sub-a", "tenant-a", "llm", "upload")
    assert (await rotator.serving.assign("sub-a", "tenant-a", "llm", "upload"))[1] == variant
    assert assigned == pool and variant.legacy == ()
    items = await collect(rotator, "sub-a")
    # Nothing is added: the pool's items, in order, some of them canaries (altered in place).
    assert [(i.item_id, i.ordinal) for i in items] == [
        (e.item_id, e.ordinal) async for e in rotator.pools.pool_entries("p1")
    ]
    assert not any(i.canary for i in items)
    by_id = {r["item_id"]: r for r in rows}
    canaries = {c.item_id: c for c in variant.canaries}
    # One question group of each dataset, whole (a permutation group with its -pN siblings).
    assert {c.dataset for c in variant.canaries} == {r["dataset"] for r in rows}
    for dataset in {c.dataset for c in variant.canaries}:
        groups = {by_id[c.item_id]["group_id"] for c in variant.canaries if c.dataset == dataset}
        [group] = groups
        assert {i for i, r in by_id.items() if r["group_id"] == group} == {
            c.item_id for c in variant.canaries if c.dataset == dataset
        }
    moved = 0
    for item in items:
        block, shown = parse_options(by_id[item.item_id]["question"]), parse_options(item.question)
        assert block is not None and shown is not None
        assert (
            sorted(shown.texts) == sorted(block.texts)
            and item.answer_format == by_id[item.item_id]["answer_format"]
        )
        moved += shown.texts != block.texts
        assert item.prompt_hash == prompt_hash(item.question, item.messages, item.image_ids)
        if item.item_id in canaries:
            canary = canaries[item.item_id]
            assert canary.fingerprint == fingerprint(item.question)
            assert dict(variant.orders)[item.item_id] == canary.order
    # Every choice item with two options or more is shown in another order.
    assert moved == len(variant.orders) == pool.item_count


async def test_a_tenants_downloads_of_a_pool_show_the_same_canaries_and_another_tenant_others() -> (
    None
):
    rotator = await stocked()
    await rotator.rotation.publish("p1", "llm", "upload")
    for sid, tenant in (("sub-a", "tenant-a"), ("sub-a2", "tenant-a"), ("sub-b", "tenant-b")):
        await rotator.serving.assign(sid, tenant, "llm", "upload")
    a, again, b = [await collect(rotator, s) for s in ("sub-a", "sub-a2", "sub-b")]
    assert [(i.item_id, i.question, i.prompt_hash) for i in a] == [
        (i.item_id, i.question, i.prompt_hash) for i in again
    ]
    va, vb = (rotator.assignments.stored_variants[s] for s in ("sub-a", "sub-b"))
    assert [c.item_id for c in va.canaries] != [c.item_id for c in vb.canaries]
    assert [(i.item_id, i.ordinal) for i in a] == [(i.item_id, i.ordinal) for i in b]


async def test_an_older_downloads_fictitious_canaries_are_still_served_after_their_item() -> None:
    rotator = await stocked()
    pool = await rotator.rotation.publish("p1", "llm", "upload")
    await rotator.assignments.assign("sub-old", "tenant-a", "llm", "upload")
    extra = LegacyCanary(
        "MedExam-123456", "MedExam", "旧题\nA. 甲\nB. 乙", "fp", pool.item_count, 2
    )
    rotator.assignments.stored_variants["sub-old"] = Variant(
        "sub-old", "tenant-a", "p1", (), (), (extra,)
    )
    items = await collect(rotator, "sub-old")
    assert [(i.item_id, i.ordinal, i.canary) for i in items[2:4]] == [
        (items[2].item_id, 2, False),
        ("MedExam-123456", pool.item_count, True),
    ]
    assert len(items) == pool.item_count + 1 and items[3].question == extra.question


async def test_a_text_item_quoting_the_patients_age_is_shown_with_another_age() -> None:
    rows = [
        {
            "item_id": f"MedRecordGen-{n}",
            "dataset": "MedRecordGen",
            "answer_format": "free_text",
            "question": f"患者：我今年{40 + n}岁，头痛{n}天。\n请生成门诊病历。",
            "reference": [f"患者{40 + n}岁，头痛{n}天。"],
        }
        for n in range(1, 4)
    ]
    rotator = await stocked(rows)
    await rotator.rotation.publish("p1", "llm", "upload")
    _, variant = await rotator.serving.assign("sub-a", "tenant-a", "llm", "upload")
    [canary] = variant.canaries
    [shown] = [i for i in await collect(rotator, "sub-a") if i.item_id == canary.item_id]
    original = next(r for r in rows if r["item_id"] == canary.item_id)
    age, moved = canary.age, canary.moved
    assert shown.question == original["question"].replace(age, moved) != original["question"]
    assert canary.originals == (age,) and canary.fingerprint == fingerprint(shown.question)
    assert canary.moves_key and canary.alter_key(original["reference"][0]) == original["reference"][
        0
    ].replace(age, moved)
    # A leaked copy of it (without its id) names the tenant.
    trace = await rotator.leaks.trace(batches([LeakedLine("", shown.question)]))
    assert [(s.tenant_id, s.canary_hits) for s in trace.suspects] == [("tenant-a", 1)]


async def test_a_download_comes_in_messages_of_at_most_stream_batch_items() -> None:
    rotator = await stocked(synthetic(1200), canaries_per_dataset=0)
    pool = await rotator.rotation.publish("big", "llm", "upload")
    await rotator.serving.assign("sub", "t", "llm", "upload")
    sizes = [len(b.items) async for b in rotator.serving.prompts("sub", False)]
    assert sum(sizes) == pool.item_count > STREAM_BATCH
    assert sizes[0] == STREAM_BATCH and all(s <= STREAM_BATCH for s in sizes)


async def test_serving_without_a_pool_or_an_assignment_or_an_image_fails_cleanly() -> None:
    rotator = await stocked()
    with pytest.raises(FailedPrecondition, match="no pool is published"):
        await rotator.serving.assign("sub", "t", "llm", "upload")
    with pytest.raises(NotFound, match="has no assignment"):
        await collect(rotator, "sub")
    with pytest.raises(NotFound):
        await rotator.serving.pool("nope")
    with pytest.raises(InvalidArgument, match="image_id is required"):
        await rotator.serving.image("")
    with pytest.raises(NotFound):
        await rotator.serving.image("0" * 64)
    with pytest.raises(InvalidArgument, match="submission_id"):
        await rotator.serving.assign("", "t", "llm", "upload")


async def test_a_pool_reads_as_current_until_another_replaces_it() -> None:
    rotator = await stocked()
    first = await rotator.rotation.publish("p1", "llm", "upload")
    assert await rotator.serving.pool("p1") == (first, True)
    await rotator.rotation.publish("p2", "llm", "upload")
    assert await rotator.serving.pool("p1") == (first, False)
    assert (await rotator.serving.current_pool("llm", "upload")).pool_id == "p2"


# -- leak tracing -----------------------------------------------------------------------------


async def test_a_leaked_download_is_traced_to_its_submission_by_option_order() -> None:
    rotator = await stocked()
    await rotator.rotation.publish("p1", "llm", "upload")
    for sid, tenant in (("sub-a", "tenant-a"), ("sub-b", "tenant-b"), ("sub-c", "tenant-c")):
        await rotator.serving.assign(sid, tenant, "llm", "upload")
    canaries = {c.item_id for c in rotator.assignments.stored_variants["sub-b"].canaries}
    leaked = [
        LeakedLine(i.item_id, i.question)
        for i in await collect(rotator, "sub-b")
        if i.item_id not in canaries
    ][:6]
    trace = await rotator.leaks.trace(batches(leaked[:3], leaked[3:]))
    assert trace.lines == 6
    top = trace.suspects[0]
    assert (top.submission_id, top.tenant_id, top.pool_id) == ("sub-b", "tenant-b", "p1")
    assert top.matched_items == top.checked_items == 6 and top.canary_hits == 0
    assert 0 < top.chance < 1e-6
    assert all(s.matched_items < 6 for s in trace.suspects[1:])


async def test_leaked_canaries_without_ids_name_their_tenants_downloads() -> None:
    rotator = await stocked()
    await rotator.rotation.publish("p1", "llm", "upload")
    for sid, tenant in (("sub-a", "tenant-a"), ("sub-a2", "tenant-a"), ("sub-b", "tenant-b")):
        await rotator.serving.assign(sid, tenant, "llm", "upload")
    variant = rotator.assignments.stored_variants["sub-a"]
    shown = {i.item_id: i.question for i in await collect(rotator, "sub-a")}
    others = {i.question for s in ("sub-b",) for i in await collect(rotator, s)}
    # Three of tenant-a's canaries no other tenant was shown, ids stripped, spaces changed.
    mine = [c for c in variant.canaries if shown[c.item_id] not in others][:3]
    assert len(mine) == 3
    lines = [LeakedLine("", "  " + shown[c.item_id] + "\n") for c in mine]
    trace = await rotator.leaks.trace(batches(lines))
    assert [(s.submission_id, s.canary_hits) for s in trace.suspects] == [
        ("sub-a", 3),
        ("sub-a2", 3),
    ]
    expected = math.prod(c.chance for c in mine)
    assert all(math.isclose(s.chance, expected) for s in trace.suspects) and expected < 1e-5
    # Under another item's id, a canary's text is that item's business: no hit.
    wrong = [LeakedLine("MedExam-1-p1", line.question) for line in lines]
    assert (await rotator.leaks.trace(batches(wrong))).suspects == ()


async def test_leak_signals_are_listed_newest_first_per_tenant_and_pool() -> None:
    rotator = Rotator()
    at = [datetime(2026, 12, 6, h, tzinfo=UTC) for h in (9, 10, 11)]
    rotator.signals.recorded = [
        LeakSignal("s1", "t1", "p1", "MedExam-1-p1", "MedExam", "order", "letters A", at[0]),
        LeakSignal("s2", "t2", "p1", "MedHC-4", "MedHC", "detail", "value 45", at[1]),
        LeakSignal("s3", "t1", "p2", "MedExam-2-p3", "MedExam", "order", "letters C", at[2]),
    ]
    assert [s.submission_id for s in await rotator.leaks.signals("", "", 0)] == ["s3", "s2", "s1"]
    assert [s.submission_id for s in await rotator.leaks.signals("t1", "", 0)] == ["s3", "s1"]
    assert [s.submission_id for s in await rotator.leaks.signals("", "p1", 1)] == ["s2"]
    with pytest.raises(InvalidArgument, match="limit"):
        await rotator.leaks.signals("", "", 1001)


async def test_a_file_of_unknown_lines_suspects_nobody_and_oversized_messages_are_invalid() -> None:
    rotator = await stocked()
    await rotator.rotation.publish("p1", "llm", "upload")
    await rotator.serving.assign("sub-a", "tenant-a", "llm", "upload")
    trace = await rotator.leaks.trace(batches([LeakedLine("nope", "A. x\nB. y")]))
    assert trace.suspects == () and trace.lines == 1
    with pytest.raises(InvalidArgument, match="lines in one message"):
        await rotator.leaks.trace(batches([LeakedLine("x", "y")] * (MAX_IMPORT_BATCH + 1)))
