"""The caps per pool that bound adaptive probing (issue 22): the rules (core/quotas.py), and the
create path and GetUsage with in-memory fakes of their ports."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.core import quotas as rules
from gateway.core import submission as sub
from gateway.core.quotas import Quotas, caps_for, pool_run
from gateway.core.submission import CreateRequest, DispatchProgress, EndpointRequest, ModelInfo
from gateway.entrypoints import convert
from gateway.settings import QuotaSettings
from gateway.usecases.identity import Identity
from medbench.common.v1 import common_pb2
from medbench.identity.v1 import identity_pb2
from medbench_runtime.errors import ResourceExhausted, Unavailable
from tests.services.gateway.fakes import FakeRotator
from tests.services.gateway.test_usecases import T, World, upload_request

NOON = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


# -- the rules ---------------------------------------------------------------------------------


def test_the_defaults_are_the_documented_ones_everywhere() -> None:
    q = Quotas(50, 5, 1_000_000)
    assert (q.official_per_cycle, q.hidden_per_day, q.hidden_per_cycle) == (3, 2, 10)
    settings = QuotaSettings()
    assert all(getattr(settings, f) == getattr(q, f) for f in rules.QUOTA_FIELDS)
    assert tuple(f.name for f in dataclasses.fields(Quotas)) == rules.QUOTA_FIELDS
    # Every quota is a field of the tenant's record on the wire (CreateTenant, GetUsage).
    assert set(rules.QUOTA_FIELDS) == set(identity_pb2.Quotas.DESCRIPTOR.fields_by_name)


def test_a_tenant_overrides_each_cap_and_zero_keeps_the_default() -> None:
    defaults = Quotas(50, 5, 1_000_000)
    merged = defaults.merged({"hidden_per_day": 7, "official_per_cycle": 0, "items_per_month": 9})
    assert merged == replace(defaults, hidden_per_day=7, items_per_month=9)
    assert defaults.merged(None) == defaults


def test_official_runs_are_api_runs_under_the_official_settings_only() -> None:
    assert pool_run("p", api=True, self_test=False).official
    assert not pool_run("p", api=True, self_test=True).official
    assert not pool_run("p", api=False, self_test=False).official


def test_an_official_run_is_charged_per_pool_a_hidden_run_per_pool_and_per_day() -> None:
    q = Quotas(50, 5, 1_000_000)
    (official,) = caps_for(pool_run("llm-api-1", True, False), q, NOON)
    assert (official.name, official.limit, official.per_day) == ("official_per_cycle", 3, False)
    cycle, day = caps_for(pool_run("llm-upload-1", False, False), q, NOON)
    # The cap a retry tomorrow would not pass is named first.
    assert (cycle.name, cycle.limit, day.name, day.limit) == (
        "hidden_per_cycle",
        10,
        "hidden_per_day",
        2,
    )
    # Counters are per pool (and per UTC day), apart from the official ones.
    counters = {c.counter for c in caps_for(pool_run("llm-upload-1", False, False), q, NOON)}
    tomorrow = caps_for(pool_run("llm-upload-1", False, False), q, NOON.replace(day=7))
    other_pool = caps_for(pool_run("llm-upload-2", False, False), q, NOON)
    assert tomorrow[0].counter in counters and tomorrow[1].counter not in counters
    assert not counters & {c.counter for c in other_pool}
    assert official.counter not in counters | {c.counter for c in tomorrow}


def test_a_refusal_names_the_cap_and_the_pool_and_says_when_to_retry() -> None:
    run = pool_run("llm-upload-1", False, False)
    cycle, day = caps_for(run, Quotas(50, 5, 1_000_000), NOON)
    by_day = rules.cap_refusal(day, "t-1", run, NOON)
    assert "hidden_per_day" in str(by_day) and "llm-upload-1" in str(by_day)
    assert "2 hidden-pool runs" in str(by_day) and by_day.retry_after_s == 12 * 3600
    by_cycle = rules.cap_refusal(cycle, "t-1", run, NOON)
    assert "hidden_per_cycle" in str(by_cycle) and "llm-upload-1" in str(by_cycle)
    assert by_cycle.retry_after_s == rules.CYCLE_RETRY_AFTER_S
    official = pool_run("llm-api-1", True, False)
    (cap,) = caps_for(official, Quotas(50, 5, 1_000_000), NOON)
    message = str(rules.cap_refusal(cap, "t-1", official, NOON))
    assert "3 official runs" in message and "official_per_cycle" in message
    assert "llm-api-1" in message
    assert not rules.spent(cap, 2) and rules.spent(cap, 3)


# -- the create path ---------------------------------------------------------------------------


def api_request(request_id: str, self_test: bool = False) -> CreateRequest:
    endpoint = EndpointRequest(
        "https://models.example.com/v1", "m", 4, api_key="sk-1", self_test=self_test
    )
    return CreateRequest(T, request_id, ModelInfo("model-x"), 1, sub.MODE_API, endpoint)


async def refused(w: World, request: CreateRequest) -> ResourceExhausted:
    assigned, preflights = list(w.rotator.assigned), list(w.dispatch.preflights)
    with pytest.raises(ResourceExhausted) as err:
        await w.submissions.create(request)
    # Refused before the rotator assigned or the endpoint was called, and nothing stored.
    assert w.rotator.assigned == assigned and w.dispatch.preflights == preflights
    assert request.request_id not in {r["request_id"] for r in w.store.records.values()}
    return err.value


async def test_upload_runs_are_capped_per_pool_and_day_and_a_retry_charges_nothing() -> None:
    w = World()
    await w.upload_mode("u-1")
    await w.upload_mode("u-1")  # the same request again: no second charge
    await w.upload_mode("u-2")
    err = await refused(w, upload_request("u-3"))
    assert "hidden_per_day" in str(err) and "pool-1" in str(err)
    # The board's next pool is another pool: its caps are fresh.
    w.rotator.pools[False] = "pool-2"
    await w.upload_mode("u-3")


async def test_the_cap_per_cycle_holds_across_days() -> None:
    w = World()
    w.quotas.defaults = replace(w.quotas.defaults, hidden_per_day=100, hidden_per_cycle=3)
    for n in range(3):
        await w.upload_mode(f"u-{n}")
    err = await refused(w, upload_request("u-9"))
    assert "hidden_per_cycle" in str(err) and err.retry_after_s == rules.CYCLE_RETRY_AFTER_S


async def test_official_runs_are_capped_per_pool_before_the_endpoint_is_called() -> None:
    w = World()
    w.quotas.defaults = replace(w.quotas.defaults, concurrent_submissions=10)
    for n in range(3):
        await w.submissions.create(api_request(f"a-{n}"))
    err = await refused(w, api_request("a-3"))
    assert "official_per_cycle" in str(err) and "pool-1" in str(err)
    # Self-test runs are hidden-pool runs on the API board's pool: not official ones.
    await w.submissions.create(api_request("s-1", self_test=True))
    await w.submissions.create(api_request("s-2", self_test=True))
    err = await refused(w, api_request("s-3", self_test=True))
    assert "hidden_per_day" in str(err)
    # Upload runs are on the upload board's pool, with its own counters.
    w.rotator.pools[False] = "upload-pool"
    await w.upload_mode("u-1")


async def test_a_failed_run_gives_its_charge_on_the_pool_back() -> None:
    w = World()
    w.quotas.defaults = replace(w.quotas.defaults, official_per_cycle=1)
    record, _ = await w.submissions.create(api_request("a-1"))
    await refused(w, api_request("a-2"))
    failed = DispatchProgress(str(record["_id"]), T, "FAILED", "HTTP 403", 0, 0, 1)
    await w.submissions.apply_dispatch_progress(failed)
    second, _ = await w.submissions.create(api_request("a-2"))
    # A completed one keeps it.
    await w.submissions.complete(T, str(second["_id"]), 4, datetime.now(UTC))
    await refused(w, api_request("a-3"))


async def test_racing_creates_never_pass_a_cap_the_charge_enforces_it() -> None:
    w = World()
    w.quotas.defaults = replace(w.quotas.defaults, concurrent_submissions=20, hidden_per_day=4)
    results = await asyncio.gather(
        *(w.submissions.create(upload_request(f"r-{n}")) for n in range(12)),
        return_exceptions=True,
    )
    created = [r for r in results if not isinstance(r, BaseException)]
    assert len(created) == 4
    assert all(isinstance(r, ResourceExhausted) for r in results if r not in created)
    assert len(w.store.records) == 4


# -- GetUsage ----------------------------------------------------------------------------------


class Tenants:
    async def find(self, tenant_id: str) -> dict[str, Any] | None:
        return {"_id": tenant_id}


async def test_usage_shows_the_runs_on_the_current_pool_of_every_board() -> None:
    w = World()
    w.quotas.defaults = replace(w.quotas.defaults, concurrent_submissions=10)
    w.rotator.pools = {True: "llm-api-1", False: "llm-upload-1"}
    await w.submissions.create(api_request("a-1"))
    await w.submissions.create(api_request("s-1", self_test=True))
    await w.upload_mode("u-1")
    await w.upload_mode("u-2")
    rotator = FakeRotator()
    rotator.pools = w.rotator.pools
    identity = Identity(Tenants(), None, w.quotas, None, rotator)  # type: ignore[arg-type]
    usage = await identity.usage(T, T, caller_is_partner=True)
    shown = convert.usage_to_proto(T, usage)
    assert shown.quotas.official_per_cycle == 3 and shown.quotas.hidden_per_day == 2
    assert shown.quotas.hidden_per_cycle == 10
    # Three tracks, two boards each (the fake names the same pools on every track).
    assert len(shown.pools) == 6
    api, upload = shown.pools[0], shown.pools[1]
    assert (api.pool_id, api.track, api.board) == ("llm-api-1", common_pb2.TRACK_LLM, "api")
    assert (api.official_runs, api.hidden_runs_today, api.hidden_runs) == (1, 1, 1)
    assert (upload.pool_id, upload.board) == ("llm-upload-1", "upload")
    assert (upload.official_runs, upload.hidden_runs_today, upload.hidden_runs) == (0, 2, 2)
    # A board without a pool is left out.
    rotator.has_pool = False
    assert (await identity.usage(T, T, caller_is_partner=True)).pools == ()


async def test_usage_without_the_rotator_leaves_the_pools_out() -> None:
    class Down(FakeRotator):
        async def current_pool(self, track: int, api: bool) -> str:
            raise Unavailable("rotator down")

    w = World()
    await w.upload_mode("u-1")
    identity = Identity(Tenants(), None, w.quotas, None, Down())  # type: ignore[arg-type]
    usage = await identity.usage(T, T, caller_is_partner=True)
    assert usage.pools == () and usage.active_submissions == 1
