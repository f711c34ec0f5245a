"""The quota ledger's caps per pool and the probing store against the real Mongo-wire server:
racing creates never pass a cap (each charge is a conditional update inside the create's
transaction), a failed run gives its charge back, usage shows the runs per pool, and digests
and findings round-trip. The peers (rotator, aggregator, dispatcher) are fakes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from pymongo import AsyncMongoClient

from gateway.adapters.mongo_probing import INDEXES as PROBING_INDEXES
from gateway.adapters.mongo_probing import MongoProbing
from gateway.adapters.mongo_quota_ledger import MongoQuotaLedger
from gateway.adapters.mongo_submissions import INDEXES, MongoSubmissions
from gateway.core.probing import StoredDigest, compare, digest_vector
from gateway.core.quotas import BoardPool, Quotas, pool_run
from gateway.core.submission import CreateRequest, DispatchProgress, EndpointRequest, ModelInfo
from gateway.usecases.probing import Probing
from gateway.usecases.submissions import Submissions
from medbench.common.v1 import common_pb2
from medbench_runtime.errors import ResourceExhausted
from medbench_storage.client import in_transaction
from medbench_storage.endpoint_keys import EndpointKeys
from medbench_storage.indexes import ensure_indexes
from medbench_storage.secrets import KEY_BYTES, Envelope, LocalKeys
from tests.services.gateway.fakes import FakeDispatch, FakeReports, FakeRotator

pytestmark = [pytest.mark.integration]
T = "tenant-a"
UPLOAD, API = common_pb2.SUBMISSION_MODE_UPLOAD, common_pb2.SUBMISSION_MODE_API
R = TypeVar("R")


class Transactions:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]]) -> None:
        self._client = client

    async def run(self, work: Callable[[Any], Awaitable[R]]) -> R:
        return await in_transaction(self._client, work)


class Outbox:
    """Keeps the events of every transaction attempt (these tests read none of them)."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def add(self, tx: Any, events: Any) -> None:
        self.events.extend(events)

    def notify(self) -> None:
        pass


@dataclass
class Env:
    client: AsyncMongoClient[dict[str, Any]]
    db: Any
    ledger: MongoQuotaLedger
    store: MongoSubmissions
    rotator: FakeRotator
    probing: MongoProbing
    submissions: Submissions

    async def override(self, **quotas: int) -> None:
        """The tenant's quota record (as UpdateTenant writes it)."""
        await self.db.tenants.update_one(
            {"_id": T}, {"$set": {f"quotas.{k}": v for k, v in quotas.items()}}, upsert=True
        )


@pytest.fixture
async def env(servers: Any, unique: str) -> AsyncIterator[Env]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri, tz_aware=True)
    db, sealed = client[f"gwcaps_{unique}"], client[f"gwcaps_{unique}_sealed"]
    await ensure_indexes(db, (*INDEXES, *PROBING_INDEXES))
    keys = EndpointKeys(sealed, Envelope(LocalKeys({"k1": os.urandom(KEY_BYTES)})))
    ledger = MongoQuotaLedger(db, Quotas(50, 5, 1_000_000))
    store, rotator, probing = MongoSubmissions(db, keys), FakeRotator(items=20), MongoProbing(db)
    outbox = Outbox()
    submissions = Submissions(
        store,
        Transactions(client),
        outbox,
        rotator,
        FakeReports(),
        FakeDispatch(),
        ledger,
        probing=Probing(probing),
    )
    try:
        yield Env(client, db, ledger, store, rotator, probing, submissions)
    finally:
        await client.drop_database(db.name)
        await client.drop_database(sealed.name)
        await client.close()


def create(request_id: str, mode: int = UPLOAD, self_test: bool = False) -> CreateRequest:
    endpoint = None
    if mode == API:
        endpoint = EndpointRequest("https://m.example.com/v1", "m", 2, "sk-1", self_test)
    return CreateRequest(T, request_id, ModelInfo("m"), 1, mode, endpoint)


async def race(env: Env, requests: list[CreateRequest]) -> tuple[int, list[str]]:
    """Creates them all at once: how many were created, and the refusals' messages."""
    results = await asyncio.gather(
        *(env.submissions.create(r) for r in requests), return_exceptions=True
    )
    refused = [str(r) for r in results if isinstance(r, ResourceExhausted)]
    others = [r for r in results if isinstance(r, BaseException) and str(r) not in refused]
    assert not others, others
    return len(results) - len(refused), refused


async def count(env: Env, counter: str) -> int:
    doc = await env.db.quota_usage.find_one({"_id": f"{T}:{counter}"})
    return int((doc or {}).get("count", 0))


async def test_racing_creates_never_pass_a_cap(env: Env) -> None:
    await env.override(concurrent_submissions=40, hidden_per_day=3, official_per_cycle=2)
    created, refused = await race(env, [create(f"u-{n}") for n in range(10)])
    assert created == 3 and len(refused) == 7
    assert all("hidden_per_day" in m and "pool-1" in m for m in refused), refused
    assert await env.db.submissions.count_documents({"tenant_id": T}) == 3
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    assert await count(env, f"p:pool-1:hidden:d:{day}") == 3
    assert await count(env, "p:pool-1:hidden") == 3
    # Refused creates charged nothing else either.
    assert await count(env, f"d:{day}") == 3
    # Official runs: their own cap.
    created, refused = await race(env, [create(f"a-{n}", API) for n in range(8)])
    assert created == 2 and all("official_per_cycle" in m for m in refused), refused
    assert await count(env, "p:pool-1:official") == 2


async def test_racing_charges_inside_transactions_never_pass_a_cap(env: Env) -> None:
    """Without the early check: the conditional updates in the transactions alone."""
    await env.override(concurrent_submissions=40, hidden_per_cycle=4, hidden_per_day=100)
    run, now = pool_run("pool-7", False, False), datetime.now(UTC)

    async def charge(n: int) -> None:
        await in_transaction(
            env.client, lambda tx: env.ledger.charge(T, f"s-{n}", 10, tx, now, run=run)
        )

    results = await asyncio.gather(*(charge(n) for n in range(12)), return_exceptions=True)
    refusals = [r for r in results if isinstance(r, ResourceExhausted)]
    assert len(refusals) == 8 and all("hidden_per_cycle" in str(r) for r in refusals)
    assert sum(r is None for r in results) == 4
    assert await count(env, "p:pool-7:hidden") == 4
    usage = await env.ledger.usage(T)
    assert (usage.submissions_today, usage.active_submissions, usage.items_this_month) == (
        4,
        4,
        40,
    )


async def test_a_failed_run_gives_its_charges_back_and_usage_shows_the_pools(env: Env) -> None:
    await env.override(official_per_cycle=1)
    record, _ = await env.submissions.create(create("a-1", API))
    with pytest.raises(ResourceExhausted, match="official_per_cycle"):
        await env.submissions.create(create("a-2", API))
    await env.submissions.create(create("s-1", API, self_test=True))
    usage = await env.ledger.usage(T, pools=[BoardPool("pool-1", 1, True)])
    (pool,) = usage.pools
    assert (pool.official_runs, pool.hidden_runs_today, pool.hidden_runs) == (1, 1, 1)
    assert usage.quotas.official_per_cycle == 1 and usage.quotas.hidden_per_day == 2
    failed = DispatchProgress(str(record["_id"]), T, "FAILED", "HTTP 403", 0, 0, 1)
    await env.submissions.apply_dispatch_progress(failed)
    await env.submissions.apply_dispatch_progress(failed)  # a redelivery gives back nothing more
    (pool,) = (await env.ledger.usage(T, pools=[BoardPool("pool-1", 1, True)])).pools
    assert pool.official_runs == 0
    await env.submissions.create(create("a-2", API))
    # A board the tenant never ran on shows zeros.
    (other,) = (await env.ledger.usage(T, pools=[BoardPool("pool-9", 2, False)])).pools
    assert (other.official_runs, other.hidden_runs_today, other.hidden_runs) == (0, 0, 0)


async def test_a_cap_of_an_earlier_day_is_given_back_on_that_day(env: Env) -> None:
    run = pool_run("pool-3", False, False)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    await in_transaction(
        env.client, lambda tx: env.ledger.charge(T, "s-old", 1, tx, yesterday, run=run)
    )
    await env.ledger.release(T, "s-old", yesterday, run=run, refund_run=True)
    day = yesterday.strftime("%Y-%m-%d")
    assert await count(env, f"p:pool-3:hidden:d:{day}") == 0
    assert await count(env, "p:pool-3:hidden") == 0


async def test_near_identical_uploads_are_found_through_the_mongo_store(env: Env) -> None:
    await env.override(hidden_per_day=5)
    sids = []
    for n, changed in enumerate(({}, {3: "B"}, dict.fromkeys(range(12), "C"))):
        record, _ = await env.submissions.create(create(f"u-{n}"))
        answers = [(f"item-{o}", changed.get(o, "A")) for o in range(20)]
        await env.submissions.upload(T, record["_id"], "b1", answers[:10], final=False)
        await env.submissions.upload(T, record["_id"], "b2", answers[10:], final=True)
        sids.append(record["_id"])
    stored = await env.probing.digests(T, "pool-1", 10)
    assert [d.submission_id for d in stored] == list(reversed(sids))
    assert all(len(d.vector) == 20 * 4 for d in stored)
    found, token = await Probing(env.probing).findings(T, "pool-1", 0, "")
    assert token == "" and [f.finding_id for f in found] == [f"{sids[0]}:{sids[1]}"]
    (f,) = found
    assert (f.differing, f.items, f.threshold, f.track) == (1, 20, 5, 1)
    assert [(d.dataset, d.differing, d.items) for d in f.datasets] == [("D", 1, 20)]


async def test_findings_page_newest_first_by_tenant_and_pool(env: Env) -> None:
    t0 = datetime(2026, 12, 6, tzinfo=UTC)
    for n in range(7):
        tenant, pool = ("tenant-b", "p-2") if n % 3 == 0 else (T, "p-1")
        a = StoredDigest(f"s{n}a", tenant, pool, 1, t0, digest_vector([(0, "A")], 1))
        b = StoredDigest(f"s{n}b", tenant, pool, 1, t0, digest_vector([(0, "A")], 1))
        finding = compare(a, b, ["D"], t0 + timedelta(seconds=n // 2))  # ties on found_at
        assert finding is not None
        assert await env.probing.add_finding(finding)
        assert not await env.probing.add_finding(finding)  # stored once
    probing = Probing(env.probing)

    async def every(tenant: str, pool: str) -> list[str]:
        seen, token = [], ""
        while True:
            page, token = await probing.findings(tenant, pool, 2, token)
            seen += [f.finding_id for f in page]
            if not token:
                return seen

    everyone = await every("", "")
    assert len(everyone) == len(set(everyone)) == 7
    at = {f"s{n}a:s{n}b": n // 2 for n in range(7)}
    assert [at[i] for i in everyone] == sorted((at[i] for i in everyone), reverse=True)
    assert await every(T, "") == [i for i in everyone if i[1] not in "036"]
    assert await every("tenant-b", "p-2") == [i for i in everyone if i[1] in "036"]
    assert await every(T, "p-2") == []
