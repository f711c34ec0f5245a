"""Adaptive probing is bounded (issue 22), through the running stack: a tenant hitting each cap
per pool gets RESOURCE_EXHAUSTED naming it and the pool, GetUsage (and `medbench usage`) show
the caps and the runs on each board's current pool, and two near-identical uploads are a
probing finding a maintainer sees (RPC, admin CLI, counter) while a genuinely different one is
not; the partner is told nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from medbench.common.v1 import common_pb2
from medbench.identity.v1 import identity_pb2, identity_service_pb2
from medbench.ops.v1 import probing_service_pb2, probing_service_pb2_grpc
from medbench.submission.v1 import submission_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client.api import AdminClient, IdentityAdmin, PartnerClient, channel, service_stub
from medbench_client.bank_files import import_item, read_jsonl
from medbench_devstack.services import ServiceStack
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
from tests.e2e.fake_endpoint import FakeEndpoint, Script
from tests.e2e.harness import (
    admin_channel,
    eventually,
    gateway_metric,
    maintainer_cli,
    partner_client,
    partner_key,
)

pytestmark = [pytest.mark.e2e]

BANK = Path(__file__).resolve().parents[2] / "services/rotator/src/rotator/sample_bank"
ROWS = list(read_jsonl(BANK / "items.jsonl"))
UPLOAD_POOL, API_POOL = "caps-upload", "caps-api"
API = common_pb2.SUBMISSION_MODE_API
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    with running_stack(servers, tmp_path_factory, "caps") as services:
        yield services


@pytest.fixture(scope="module")
async def pools(stack: ServiceStack) -> None:
    admin = AdminClient(admin_channel(stack, "rotator"))
    await admin.import_items([import_item(r) for r in ROWS])
    await admin.publish(UPLOAD_POOL)
    await admin.publish(API_POOL, board=taskpool_pb2.BOARD_API)


async def tenant(stack: ServiceStack, name: str, **quotas: int) -> PartnerClient:
    """A partner of a new tenant, with these overrides in its quota record."""
    admin = IdentityAdmin(admin_channel(stack, "gateway"))
    await admin.ensure_tenant(name, quotas=identity_pb2.Quotas(**quotas))
    return partner_client(stack, name)


async def refusal(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    assert err.value.code() == EXHAUSTED, err.value
    return err.value


def retry_after(err: grpc.aio.AioRpcError) -> int:
    return int(dict(err.trailing_metadata() or ())["retry-after"])


async def usage(stack: ServiceStack, name: str) -> identity_pb2.Usage:
    stub = IdentityAdmin(channel(stack.address("gateway"), partner_key(stack, name))).stub
    found: identity_pb2.Usage = await stub.GetUsage(identity_service_pb2.GetUsageRequest())
    return found


def on(u: identity_pb2.Usage, pool_id: str) -> identity_pb2.PoolUsage:
    (found,) = [p for p in u.pools if p.pool_id == pool_id]
    return found


async def test_upload_runs_are_capped_per_day_and_per_pool(
    stack: ServiceStack, pools: None
) -> None:
    partner = await tenant(stack, "caps-day")
    await partner.create("d-1", "m")
    await partner.create("d-2", "m")
    assert not (await partner.create("d-2", "m")).created  # a retry is no new run
    err = await refusal(partner.create("d-3", "m"))
    assert "hidden_per_day" in (err.details() or "") and UPLOAD_POOL in (err.details() or "")
    assert 0 < retry_after(err) <= 86_400
    shown = await usage(stack, "caps-day")
    q = shown.quotas
    assert (q.official_per_cycle, q.hidden_per_day, q.hidden_per_cycle) == (3, 2, 10)
    upload = on(shown, UPLOAD_POOL)
    assert (upload.board, upload.track) == ("upload", common_pb2.TRACK_LLM)
    assert (upload.official_runs, upload.hidden_runs_today, upload.hidden_runs) == (0, 2, 2)
    assert shown.submissions_today == 2  # the refused create charged nothing
    # The cap per pool, with a tenant whose day cap is raised in its quota record.
    partner = await tenant(stack, "caps-cycle", hidden_per_day=50, hidden_per_cycle=3)
    for n in range(3):
        await partner.create(f"c-{n}", "m")
    err = await refusal(partner.create("c-9", "m"))
    assert "hidden_per_cycle" in (err.details() or "") and UPLOAD_POOL in (err.details() or "")
    assert retry_after(err) == 86_400
    shown = await usage(stack, "caps-cycle")
    assert (shown.quotas.hidden_per_day, shown.quotas.hidden_per_cycle) == (50, 3)
    assert on(shown, UPLOAD_POOL).hidden_runs == 3


async def test_official_runs_are_capped_per_pool_and_self_tests_are_hidden_runs(
    stack: ServiceStack, pools: None
) -> None:
    partner = await tenant(stack, "caps-official", concurrent_submissions=10)
    with FakeEndpoint(Script(answer=lambda question: "<A>")) as fake:
        endpoint = submission_pb2.Endpoint(
            base_url=fake.base_url, model="test-model", api_key="secret-key", max_concurrency=2
        )
        for n in range(3):
            await partner.create(f"o-{n}", "m", mode=API, endpoint=endpoint)
        err = await refusal(partner.create("o-3", "m", mode=API, endpoint=endpoint))
        details = err.details() or ""
        assert "official_per_cycle" in details and API_POOL in details, details
        assert retry_after(err) == 86_400
        # A self-test run is a hidden-pool run on the API board's pool, not an official one.
        self_test = submission_pb2.Endpoint()
        self_test.CopyFrom(endpoint)
        self_test.self_test = True
        await partner.create("s-1", "m", mode=API, endpoint=self_test)
        # (Read while the endpoint still answers: a run that failed would give its run back.)
        shown = on(await usage(stack, "caps-official"), API_POOL)
    assert shown.board == "api"
    assert (shown.official_runs, shown.hidden_runs_today, shown.hidden_runs) == (3, 1, 1)


async def upload_all(partner: PartnerClient, request_id: str, answer: dict[str, str]) -> str:
    """An upload run: every shown item answered "<A>" unless answer says otherwise."""
    sid = (await partner.create(request_id, "m")).submission.submission_id
    prompts = await partner.prompts(sid)
    pairs = [(p.item_id, answer.get(p.item_id, "<A>")) for p in prompts]
    await partner.upload(sid, [("b1", pairs[:30], False), ("b2", pairs[30:], True)])
    return sid


async def test_near_identical_uploads_are_flagged_to_maintainers_only(
    stack: ServiceStack, pools: None
) -> None:
    name = f"probe-{uuid.uuid4().hex[:6]}"
    partner = await tenant(stack, name, hidden_per_day=10)
    first = await upload_all(partner, "p-1", {})
    one_item = ROWS[7]["item_id"]
    second = await upload_all(partner, "p-2", {one_item: "<B>"})
    # Genuinely different: every item answered otherwise.
    await upload_all(partner, "p-3", {r["item_id"]: "<C>" for r in ROWS})
    maintainer = service_stub(
        probing_service_pb2_grpc.ProbingServiceStub, admin_channel(stack, "gateway")
    )
    page = await maintainer.ListProbingFindings(
        probing_service_pb2.ListProbingFindingsRequest(tenant_id=name)
    )
    (finding,) = page.findings
    assert (finding.earlier_submission_id, finding.later_submission_id) == (first, second)
    assert (finding.pool_id, finding.tenant_id, finding.differing) == (UPLOAD_POOL, name, 1)
    assert finding.items == len(ROWS) and finding.threshold == 5
    dataset = next(r["dataset"] for r in ROWS if r["item_id"] == one_item)
    assert [(d.dataset, d.differing) for d in finding.datasets if d.differing] == [(dataset, 1)]
    assert sum(d.items for d in finding.datasets) == len(ROWS)
    assert gateway_metric(stack, "medbench_gateway_probing_flags_total", f'tenant="{name}"') == 1
    listed = maintainer_cli(stack, "probing", "--tenant", name)
    assert listed.returncode == 0, listed.stderr
    assert f"{first} -> {second}: 1 of {len(ROWS)} answers differ" in listed.stdout
    # The partner is told nothing and cannot ask.
    partner_stub = service_stub(
        probing_service_pb2_grpc.ProbingServiceStub,
        channel(stack.address("gateway"), partner_key(stack, name)),
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await partner_stub.ListProbingFindings(probing_service_pb2.ListProbingFindingsRequest())
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for sid in (first, second):
        shown = await partner.get(sid)
        assert shown.state_reason == "" and "probing" not in str(shown).lower()


async def test_near_identical_api_runs_are_flagged_as_uploads_are(
    stack: ServiceStack, pools: None
) -> None:
    """API mode: the dispatcher digests each answer as it is scored (one reading with the
    gateway's) and hands the run's digests to the gateway with its DONE progress; two runs of
    one tenant whose endpoints answer alike but for one item are a finding, a third answering
    otherwise is not."""
    name = f"probe-api-{uuid.uuid4().hex[:6]}"
    partner = await tenant(stack, name, hidden_per_day=10, concurrent_submissions=5)
    one = ROWS[7]
    # Its own question (the prompts share their instructions): its permutations share it too,
    # so up to 5 items are answered otherwise, within the threshold of 5 for 60 items.
    stem = str(one["question"]).rsplit("题目：", 1)[1].split("\n")[0]
    assert len(stem) >= 8
    maintainer = service_stub(
        probing_service_pb2_grpc.ProbingServiceStub, admin_channel(stack, "gateway")
    )

    async def run(request_id: str, answer: object) -> str:
        with FakeEndpoint(Script(answer=answer)) as fake:  # type: ignore[arg-type]
            endpoint = submission_pb2.Endpoint(
                base_url=fake.base_url,
                model="test-model",
                api_key="secret-key",
                max_concurrency=4,
                self_test=True,
            )
            created = await partner.create(request_id, "m", mode=API, endpoint=endpoint)
            sid = created.submission.submission_id

            async def answered() -> bool:
                shown = await partner.get(sid)
                return shown.state not in (
                    submission_pb2.SUBMISSION_STATE_DISPATCHING,
                    submission_pb2.SUBMISSION_STATE_AWAITING_ANSWERS,
                )

            await eventually(answered, 120, f"API run {request_id} answered")
        return sid

    first = await run("a-1", lambda question: "<A>")
    second = await run("a-2", lambda question: "<B>" if stem in question else "<A>")
    await run("a-3", lambda question: "<C>")

    async def flagged() -> probing_service_pb2.ListProbingFindingsResponse | None:
        page = await maintainer.ListProbingFindings(
            probing_service_pb2.ListProbingFindingsRequest(tenant_id=name)
        )
        return page if page.findings else None

    page = await eventually(flagged, 60, "a probing finding on the API runs")
    (finding,) = page.findings
    assert (finding.earlier_submission_id, finding.later_submission_id) == (first, second)
    assert finding.pool_id == API_POOL and finding.items == len(ROWS)
    assert 1 <= finding.differing <= finding.threshold
    changed = [d.dataset for d in finding.datasets if d.differing]
    assert changed == [one["dataset"]]
