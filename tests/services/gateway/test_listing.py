"""ListSubmissions with in-memory fakes: a tenant lists its own submissions only, newest first,
in pages that cover every submission exactly once while new ones are created, filtered by
state, track, board (mode) and creation time; what a list cannot ask is INVALID_ARGUMENT."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from gateway.adapters.mongo_submissions import INDEXES, MongoSubmissions
from gateway.core import listing
from gateway.core import submission as rules
from gateway.core.listing import ListRequest
from gateway.entrypoints import convert
from medbench.common.v1 import common_pb2
from medbench.submission.v1 import submission_pb2, submission_service_pb2
from medbench_runtime.errors import InvalidArgument
from medbench_storage.indexes import ensure_indexes
from tests.services.gateway.fakes import InMemorySubmissionStore
from tests.services.gateway.test_usecases import World

A, B = "tenant-a", "tenant-b"
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def record(tenant: str, n: int, at: datetime, **kw: object) -> dict[str, object]:
    return {
        "_id": f"sub_{tenant}_{n:04d}",
        "tenant_id": tenant,
        "request_id": f"r{n}",
        "model": {"name": f"model-{n}"},
        "track": kw.get("track", 1),
        "mode": kw.get("mode", rules.MODE_UPLOAD),
        "state": kw.get("state", rules.AWAITING),
        "state_reason": "",
        "pool_id": "pool-1",
        "expected": 4,
        "canaries": 0,
        "answered": 0,
        "answered_shown": 0,
        "answered_bits": b"\0",
        "created_at": at,
        "updated_at": at,
    }


async def put(world: World, tenant: str, n: int, at: datetime, **kw: object) -> str:
    rec = record(tenant, n, at, **kw)
    await world.store.insert(tenant, rec, None)
    return str(rec["_id"])


async def ids(world: World, **kw: object) -> list[str]:
    views, token = await world.submissions.list(ListRequest(A, **kw))  # type: ignore[arg-type]
    assert token == ""
    return [str(v.record["_id"]) for v in views]


async def test_a_tenant_lists_its_own_submissions_only_newest_first_as_get_shows_them() -> None:
    w = World()
    # Three runs on one pool in a day: above the default cap (the tenant's quota record).
    w.quotas.defaults = replace(w.quotas.defaults, hidden_per_day=3)
    mine = [await w.upload_mode(f"run-{n}") for n in range(3)]
    # Another tenant's submissions, some newer, one with the same request id.
    for n in range(4):
        await put(w, B, n, datetime.now(UTC) + timedelta(seconds=n))
    views, token = await w.submissions.list(ListRequest(A))
    assert token == ""
    assert [v.record["_id"] for v in views] == list(reversed(mine))
    for v in views:
        assert v.record["tenant_id"] == A and "answered_bits" not in v.record
        # The same partner view as GetSubmission.
        got = await w.submissions.view(A, str(v.record["_id"]))
        assert convert.view_to_proto(v) == convert.view_to_proto(got)
    others, _ = await w.submissions.list(ListRequest(B))
    assert {v.record["tenant_id"] for v in others} == {B} and len(others) == 4
    assert (await w.submissions.list(ListRequest("tenant-c")))[0] == []


async def test_pages_cover_every_submission_once_while_new_ones_are_created() -> None:
    w = World()
    rng = random.Random(7)
    # 130 submissions, many sharing a created_at (ties are broken by id).
    before = {await put(w, A, n, T0 + timedelta(seconds=rng.randrange(40))) for n in range(130)}
    seen: list[str] = []
    token, pages, n = "", 0, 1000
    while True:
        views, token = await w.submissions.list(ListRequest(A, page_size=17, page_token=token))
        seen += [str(v.record["_id"]) for v in views]
        pages += 1
        # Created meanwhile (newer than every entry, as a create makes them).
        for _ in range(3):
            await put(w, A, n, T0 + timedelta(hours=1, seconds=n))
            n += 1
        assert len(views) <= 17
        if not token:
            break
    assert len(seen) == len(set(seen)), "an entry was listed twice"
    assert set(seen) == before
    assert pages == -(-130 // 17)
    # Newest first throughout.
    keys = [listing.newest_first(w.store.records[(A, sid)]) for sid in seen]
    assert keys == sorted(keys, reverse=True)


async def test_a_full_last_page_ends_with_no_token_and_the_default_size_is_50() -> None:
    w = World()
    for n in range(100):
        await put(w, A, n, T0 + timedelta(seconds=n))
    first, token = await w.submissions.list(ListRequest(A))
    assert len(first) == 50 and token
    second, token = await w.submissions.list(ListRequest(A, page_token=token))
    assert len(second) == 50 and token == ""
    everything, token = await w.submissions.list(ListRequest(A, page_size=500))
    assert len(everything) == 100 and token == ""


async def test_each_filter_selects_what_it_names() -> None:
    w = World()
    api, up = rules.MODE_API, rules.MODE_UPLOAD
    specs = [
        (0, rules.AWAITING, 1, up),
        (1, rules.SCORING, 1, up),
        (2, rules.COMPLETED, 2, up),
        (3, rules.COMPLETED, 3, api),
        (4, rules.FAILED, 1, api),
        (5, rules.DISPATCHING, 2, api),
    ]
    made = {
        n: await put(w, A, n, T0 + timedelta(hours=n), state=s, track=t, mode=m)
        for n, s, t, m in specs
    }

    def named(*ns: int) -> list[str]:
        return [made[n] for n in sorted(ns, reverse=True)]

    assert await ids(w, states=("COMPLETED",)) == named(2, 3)
    assert await ids(w, states=("COMPLETED", "FAILED")) == named(2, 3, 4)
    assert await ids(w, track=1) == named(0, 1, 4)
    assert await ids(w, mode=api) == named(3, 4, 5)
    assert await ids(w, mode=up) == named(0, 1, 2)
    # created_after is inclusive, created_before exclusive.
    assert await ids(w, created_after=T0 + timedelta(hours=2)) == named(2, 3, 4, 5)
    assert await ids(w, created_before=T0 + timedelta(hours=2)) == named(0, 1)
    assert await ids(
        w, created_after=T0 + timedelta(hours=1), created_before=T0 + timedelta(hours=4)
    ) == named(1, 2, 3)
    # Filters combine.
    assert await ids(w, states=("COMPLETED",), mode=api, track=3) == named(3)
    assert await ids(w, states=("COMPLETED",), track=1) == []
    # Paging within a filter.
    views, token = await w.submissions.list(ListRequest(A, page_size=1, mode=api))
    rest, last = await w.submissions.list(ListRequest(A, page_size=5, mode=api, page_token=token))
    assert [v.record["_id"] for v in views + rest] == named(3, 4, 5) and last == ""


@pytest.mark.parametrize(
    "request_",
    [
        ListRequest(A, page_size=501),
        ListRequest(A, page_size=-1),
        ListRequest(A, page_token="not-a-token"),
        ListRequest(A, page_token="czE6MTIzOg"),  # s1:123: with no id
        ListRequest(A, page_token="eDoxOnN1Yg"),  # another version
        ListRequest(A, page_token="%%%"),
        ListRequest(A, page_token="A" * 600),
        ListRequest(A, states=("UNSPECIFIED",)),
        ListRequest(A, states=("99",)),
        ListRequest(A, states=("PUBLISHED",)),
        ListRequest(A, track=9),
        ListRequest(A, mode=3),
        ListRequest(A, created_after=T0, created_before=T0),
        ListRequest(A, created_after=T0 + timedelta(1), created_before=T0),
    ],
)
async def test_what_a_list_cannot_ask_is_invalid_argument(request_: ListRequest) -> None:
    w = World()
    await put(w, A, 1, T0)
    reads = w.store.reads
    with pytest.raises(InvalidArgument):
        await w.submissions.list(request_)
    assert w.store.reads == reads  # refused before the store is asked


def test_a_page_token_names_its_entry_and_survives_millisecond_storage() -> None:
    rec = record(A, 1, T0 + timedelta(microseconds=123_000))
    cursor = listing.read_token(listing.page_token(rec))
    assert (cursor.created_at, cursor.submission_id) == (rec["created_at"], rec["_id"])
    # MongoDB returns naive UTC datetimes: the same token.
    naive = {**rec, "created_at": T0.replace(tzinfo=None) + timedelta(microseconds=123_000)}
    assert listing.page_token(naive) == listing.page_token(rec)


def test_the_wire_request_converts_and_unknown_states_reach_the_rules() -> None:
    request = submission_service_pb2.ListSubmissionsRequest(
        page_size=7,
        states=[submission_pb2.SUBMISSION_STATE_COMPLETED, 42],
        track=common_pb2.TRACK_AGENT,
        mode=common_pb2.SUBMISSION_MODE_API,
    )
    request.created_after.FromDatetime(T0)
    asked = convert.list_request(A, request)
    assert asked == ListRequest(
        A, 7, "", ("COMPLETED", "42"), 3, rules.MODE_API, created_after=T0, created_before=None
    )
    with pytest.raises(InvalidArgument, match="states"):
        listing.validate_list(asked)
    wire = {
        n.removeprefix("SUBMISSION_STATE_")
        for n, _ in submission_pb2.SubmissionState.items()
        if n != "SUBMISSION_STATE_UNSPECIFIED"
    }
    assert wire == listing.STATES


@pytest.mark.integration
async def test_the_mongo_store_pages_like_the_rule_ties_and_filters_included(
    servers: Any, unique: str
) -> None:
    """MongoSubmissions.page against the Mongo-wire server equals core.listing's rule (what the
    in-memory store applies), page after page, with many entries sharing a created_at."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri, tz_aware=True)
    db = client[f"gwlist_{unique}"]
    try:
        await ensure_indexes(db, INDEXES)
        mongo, memory = MongoSubmissions(db), InMemorySubmissionStore()
        rng = random.Random(11)
        for tenant in (A, B):
            for n in range(60):
                # Millisecond times (as MongoDB keeps them), a few seconds for 60 entries.
                at = T0 + timedelta(seconds=rng.randrange(6), milliseconds=rng.choice([0, 250]))
                kw = {
                    "state": rng.choice([rules.AWAITING, rules.SCORING, rules.COMPLETED]),
                    "track": rng.choice([1, 2]),
                    "mode": rng.choice([rules.MODE_UPLOAD, rules.MODE_API]),
                }
                rec = record(tenant, n, at, **kw)
                await mongo.insert(tenant, dict(rec), None)  # type: ignore[arg-type]
                await memory.insert(tenant, rec, None)
        for asked in (
            ListRequest(A, page_size=7),
            ListRequest(B, page_size=9, states=("COMPLETED", "SCORING")),
            ListRequest(A, page_size=4, track=2, mode=rules.MODE_API),
            ListRequest(A, page_size=5, created_after=T0 + timedelta(seconds=2)),
            ListRequest(B, page_size=3, created_before=T0 + timedelta(seconds=3, milliseconds=250)),
        ):
            pages: dict[str, list[str]] = {}
            for name, store in (("mongo", mongo), ("memory", memory)):
                seen: list[str] = []
                token = ""
                while True:
                    query = listing.validate_list(
                        ListRequest(**{**asked.__dict__, "page_token": token})
                    )
                    docs = await store.page(query, query.page_size + 1)
                    assert all("answered_bits" not in d for d in docs)
                    assert {d["tenant_id"] for d in docs} <= {asked.tenant_id}
                    seen += [d["_id"] for d in docs[: query.page_size]]
                    if len(docs) <= query.page_size:
                        break
                    token = listing.page_token(docs[query.page_size - 1])
                pages[name] = seen
            assert pages["mongo"] == pages["memory"], asked
            assert len(set(pages["mongo"])) == len(pages["mongo"])
        names = set(await db.submissions.index_information())
        assert "tenant_id_1_created_at_-1__id_-1" in names
    finally:
        await client.drop_database(db.name)
        await client.close()
