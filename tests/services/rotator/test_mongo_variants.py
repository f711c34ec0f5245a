"""Sealed variants and canaries in the real Mongo-wire server: what the rotator writes is what
it and the scorers read back (orders, both kinds of canary, an older download's fictitious
extras), canaries are found by fingerprint once per download, and the metric scorer's leak
signals are what maintainers list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from medbench_storage.variants import DETAIL, ORDER, MongoVariants
from metric_scorer.adapters.mongo_leak_signals import MongoLeakSignals as SignalWriter
from metric_scorer.core.canary import LeakSignal as Recorded
from rotator.adapters.mongo_assignment_store import MongoAssignmentStore
from rotator.adapters.mongo_leak_signals import MongoLeakSignals
from rotator.core.canaries import LIST, Canary
from rotator.core.leaktrace import LegacyCanary, Variant
from tests.conftest import Servers
from tests.services.rotator.fakes import InMemoryPoolStore

ORDER_CANARY = Canary("MedExam-3-p1", 4, "MedExam", ORDER, "fp-order", 1 / 119, ("E", "A"),
                      order=(4, 0, 1, 2, 3))  # fmt: skip
DETAIL_CANARY = Canary("SMDoc-2", 9, "SMDoc", DETAIL, "fp-detail", 1 / 4, ("47",), age="47",
                       moved="48", moves_key=True)  # fmt: skip
# A label item's candidates: a list canary's order, a detail canary's and a plain item's.
LIST_CANARY = Canary("MedIntentID-4", 11, "MedIntentID", LIST, "fp-list", 1 / 23, (),
                     lists=((7, 30, (2, 0, 3, 1)),))  # fmt: skip
AGED_LABEL = Canary("MedOutcome-2", 12, "MedOutcome", DETAIL, "fp-aged", 1 / 4, (), age="62",
                    moved="63", lists=((40, 51, (1, 2, 0, 3)),))  # fmt: skip


def variant(submission_id: str, tenant_id: str) -> Variant:
    return Variant(
        submission_id,
        tenant_id,
        "pool-1",
        (("MedExam-1-p1", (1, 0, 2, 3, 4)), ("MedExam-3-p1", (4, 0, 1, 2, 3))),
        (ORDER_CANARY, DETAIL_CANARY, LIST_CANARY, AGED_LABEL),
        lists=(
            ("MedIntentID-1", ((7, 30, (1, 0, 3, 2)),)),
            ("MedIntentID-4", ((7, 30, (2, 0, 3, 1)),)),
            ("MedOutcome-2", ((40, 51, (1, 2, 0, 3)),)),
        ),
    )


@pytest.fixture
async def sealed(servers: Servers, unique: str) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri, tz_aware=True)
    try:
        yield client[f"sealed_{unique}"]
    finally:
        await client.drop_database(f"sealed_{unique}")
        await client.close()


async def test_a_variant_reads_back_whole_for_the_rotator_and_keyed_for_the_scorers(
    sealed: AsyncDatabase[dict[str, Any]],
) -> None:
    store = MongoAssignmentStore(sealed, sealed, InMemoryPoolStore())
    stored = variant("sub-a", "tenant-a")
    await store.store_variant(stored)
    await store.store_variant(stored)  # idempotent
    assert await store.variant("sub-a") == stored
    # Never the canaries' texts: they follow from the pool items.
    doc = await sealed.variants.find_one({"_id": "sub-a"})
    assert doc is not None and not any("question" in c for c in doc["canaries"])
    seen = await MongoVariants(sealed).variant("sub-a")
    assert dict(seen.orders) == dict(stored.orders)
    order, detail = seen.canaries["MedExam-3-p1"], seen.canaries["SMDoc-2"]
    assert (order.kind, order.originals, order.own_key) == (ORDER, ("E", "A"), False)
    assert order.alter_key('{"年龄": "47"}') == '{"年龄": "47"}'
    assert (detail.kind, detail.originals, detail.own_key) == (DETAIL, ("47",), True)
    assert detail.alter_key('{"年龄": "47", "体温": "36.47"}') == '{"年龄": "48", "体温": "36.47"}'
    assert (await MongoVariants(sealed).variant("sub-none")).canaries == {}
    # A label item's shown candidate order never reaches a scorer's key: not an option order,
    # and a list canary (or a detail canary whose key does not move) is scored by the pool key.
    assert not {"MedIntentID-1", "MedIntentID-4", "MedOutcome-2"} & set(seen.orders)
    listed, aged = seen.canaries["MedIntentID-4"], seen.canaries["MedOutcome-2"]
    assert (listed.kind, listed.originals, listed.own_key) == (LIST, (), False)
    assert listed.alter_key("预约挂号") == "预约挂号" and aged.alter_key("好转") == "好转"
    assert not aged.own_key


async def test_canaries_are_found_by_fingerprint_once_per_download_and_old_ones_too(
    sealed: AsyncDatabase[dict[str, Any]],
) -> None:
    store = MongoAssignmentStore(sealed, sealed, InMemoryPoolStore())
    # Two downloads of one tenant show the same canaries.
    await store.store_variant(variant("sub-a", "tenant-a"))
    await store.store_variant(variant("sub-a2", "tenant-a"))
    # An older download: a fictitious extra item, indexed by its fingerprint alone.
    extra = LegacyCanary("MedExam-123456", "MedExam", "题目", "fp-old", 60, 7)
    old = Variant("sub-old", "tenant-b", "pool-0", (), (), (extra,))
    await sealed.variants.insert_one(
        {
            "_id": "sub-old",
            "tenant_id": "tenant-b",
            "pool_id": "pool-0",
            "orders": [],
            "canaries": [
                {
                    "item_id": "MedExam-123456",
                    "dataset": "MedExam",
                    "question": "题目",
                    "fingerprint": "fp-old",
                    "ordinal": 60,
                    "after": 7,
                }  # fmt: skip
            ],
        }
    )
    await sealed.canaries.insert_one(
        {
            "_id": "fp-old",
            "tenant_id": "tenant-b",
            "submission_id": "sub-old",
            "pool_id": "pool-0",
            "item_id": "MedExam-123456",
        }  # fmt: skip
    )
    assert await store.variant("sub-old") == old
    # The scorers never score an older download's extras.
    assert (await MongoVariants(sealed).variant("sub-old")).canaries == {}
    hits = await store.canary_hits(["fp-detail", "fp-old", "fp-nothing"])
    assert sorted((h.submission_id, h.item_id, h.chance, h.fingerprint) for h in hits) == [
        ("sub-a", "SMDoc-2", 1 / 4, "fp-detail"),
        ("sub-a2", "SMDoc-2", 1 / 4, "fp-detail"),
        ("sub-old", "MedExam-123456", 0.0, "fp-old"),
    ]


async def test_leak_signals_written_by_the_scorer_are_listed_for_maintainers(
    sealed: AsyncDatabase[dict[str, Any]],
) -> None:
    writer = SignalWriter(sealed)
    first = Recorded("sub-a", "tenant-a", "pool-1", "SMDoc-2", "SMDoc", DETAIL, "value 47")
    await writer.record([first])
    await writer.record([first])  # a redelivered batch: the same document, its first time kept
    await sealed.leak_signals.update_one(
        {"_id": "sub-a:SMDoc-2"}, {"$set": {"recorded_at": datetime(2026, 12, 6, tzinfo=UTC)}}
    )
    second = Recorded("sub-b", "tenant-b", "pool-1", "MedExam-3-p1", "MedExam", ORDER, "letters E")
    await writer.record([second])
    reader = MongoLeakSignals(sealed)
    listed = await reader.signals("", "", 10)
    assert [(s.submission_id, s.item_id, s.kind, s.matched) for s in listed] == [
        ("sub-b", "MedExam-3-p1", ORDER, "letters E"),
        ("sub-a", "SMDoc-2", DETAIL, "value 47"),
    ]
    assert [s.submission_id for s in await reader.signals("tenant-a", "pool-1", 10)] == ["sub-a"]
    assert await reader.signals("", "pool-2", 10) == []
    assert len(await reader.signals("", "", 1)) == 1
