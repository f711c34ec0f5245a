"""Identity, isolation, quotas and the audit log through the running stack.

Every RPC of every service is tried with every kind of caller (no key, a malformed key, an
unknown key, each role, the service token): the expected table lives here, written out, so a
change of any RPC's policy in the protos fails this test until the table is changed too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, symbol_database
from pymongo import AsyncMongoClient

from medbench.common.v1 import common_pb2

# Loaded for their descriptors (every service's methods and options).
from medbench.dispatch.v1 import dispatch_service_pb2  # noqa: E402, F401
from medbench.identity.v1 import access_pb2, identity_pb2, identity_service_pb2
from medbench.identity.v1 import identity_service_pb2_grpc as identity_grpc
from medbench.judge.v1 import judge_service_pb2  # noqa: E402, F401
from medbench.leaderboard.v1 import leaderboard_service_pb2  # noqa: E402, F401
from medbench.ops.v1 import probing_service_pb2, quarantine_service_pb2  # noqa: E402, F401
from medbench.report.v1 import report_service_pb2  # noqa: E402, F401
from medbench.submission.v1 import submission_pb2, submission_service_pb2
from medbench.taskpool.v1 import taskpool_service_pb2  # noqa: E402, F401
from medbench_client.api import channel
from medbench_devstack.services import ServiceStack
from medbench_runtime.auth import method_access
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
from tests.e2e.harness import Evaluation, eventually, load_pool, partner_client, partner_key

pytestmark = [pytest.mark.e2e]

S, V, M, O, R, SV = (  # noqa: E741 - the roles' initials
    access_pb2.ROLE_PARTNER_SUBMITTER,
    access_pb2.ROLE_PARTNER_VIEWER,
    access_pb2.ROLE_MAINTAINER,
    access_pb2.ROLE_OPS,
    access_pb2.ROLE_REVIEWER,
    access_pb2.ROLE_SERVICE,
)
EVERYONE = {S, V, M, O, R}

# Who may call what: the specification the protos' access options must match.
EXPECTED: dict[str, set[int]] = {
    "medbench.submission.v1.SubmissionService/CreateSubmission": {S},
    "medbench.submission.v1.SubmissionService/GetSubmission": {S, V},
    "medbench.submission.v1.SubmissionService/DownloadPrompts": {S},
    "medbench.submission.v1.SubmissionService/DownloadImages": {S},
    "medbench.submission.v1.SubmissionService/UploadAnswers": {S},
    "medbench.submission.v1.SubmissionService/WatchSubmission": {S, V},
    "medbench.submission.v1.SubmissionService/GetReport": {S, V},
    "medbench.submission.v1.SubmissionService/ResumeSubmission": {S},
    "medbench.submission.v1.SubmissionService/PublishSubmission": {S},
    "medbench.submission.v1.SubmissionService/GetItemResults": {S, V},
    "medbench.submission.v1.SubmissionService/ListSubmissions": {S, V},
    "medbench.identity.v1.IdentityService/WhoAmI": EVERYONE,
    "medbench.identity.v1.IdentityService/CreateTenant": {M},
    "medbench.identity.v1.IdentityService/UpdateTenant": {M},
    "medbench.identity.v1.IdentityService/GetTenant": {M, O},
    "medbench.identity.v1.IdentityService/ListTenants": {M, O},
    "medbench.identity.v1.IdentityService/CreateApiKey": {M},
    "medbench.identity.v1.IdentityService/ListApiKeys": {M, O},
    "medbench.identity.v1.IdentityService/RotateApiKey": {M},
    "medbench.identity.v1.IdentityService/RevokeApiKey": {M},
    "medbench.identity.v1.IdentityService/GetUsage": {S, V, M, O},
    "medbench.identity.v1.IdentityService/ListAuditEvents": {M, O},
    "medbench.ops.v1.QuarantineService/ListQuarantined": {M, O},
    "medbench.ops.v1.QuarantineService/RetryQuarantined": {M, O},
    "medbench.ops.v1.QuarantineService/DropQuarantined": {M, O},
    "medbench.ops.v1.ProbingService/ListProbingFindings": {M},
    "medbench.leaderboard.v1.LeaderboardService/ListLeaderboard": EVERYONE | {SV},
    "medbench.leaderboard.v1.LeaderboardService/PublishEntry": {SV},
    "medbench.leaderboard.v1.LeaderboardService/EquateBoard": {M},
    "medbench.report.v1.ReportService/GetReport": {SV, M},
    "medbench.report.v1.ReportService/GetProgress": {SV, M, O},
    "medbench.report.v1.ReportService/StreamItemResults": {SV, M},
    "medbench.taskpool.v1.TaskPoolService/ImportTasks": {M},
    "medbench.taskpool.v1.TaskPoolService/ListDatasets": {M, O, SV},
    "medbench.taskpool.v1.TaskPoolService/PutDataset": {M},
    "medbench.taskpool.v1.TaskPoolService/GetRegistry": {M, O},
    "medbench.taskpool.v1.TaskPoolService/ListRegistryVersions": {M, O},
    "medbench.taskpool.v1.TaskPoolService/RotatePool": {M},
    "medbench.taskpool.v1.TaskPoolService/PublishPool": {M},
    "medbench.taskpool.v1.TaskPoolService/DisclosePool": {M},
    "medbench.taskpool.v1.TaskPoolService/GetPool": {M, O, SV},
    "medbench.taskpool.v1.TaskPoolService/AssignItems": {SV},
    "medbench.taskpool.v1.TaskPoolService/GetPrompts": {SV},
    "medbench.taskpool.v1.TaskPoolService/TraceLeak": {M},
    "medbench.taskpool.v1.TaskPoolService/ListLeakSignals": {M},
    "medbench.taskpool.v1.TaskPoolService/GetImage": {SV},
    "medbench.dispatch.v1.DispatcherService/Preflight": {SV},
    "medbench.dispatch.v1.DispatcherService/GetDispatch": {M, O},
    "medbench.dispatch.v1.DispatcherService/ResumeDispatch": {SV},
    "medbench.judge.v1.JudgeService/JudgeAnswer": {M, O},
    "medbench.judge.v1.JudgeService/ImportRatings": {M},
    "medbench.judge.v1.JudgeService/Calibrate": {M},
    "medbench.judge.v1.JudgeService/GetCalibration": {M, O, R},
    "medbench.judge.v1.JudgeService/ListReviews": {M, R},
    "medbench.judge.v1.JudgeService/ClaimReview": {M, R},
    "medbench.judge.v1.JudgeService/SubmitReview": {M, R},
    "medbench.judge.v1.JudgeService/GetReviewImage": {M, R},
    "medbench.judge.v1.JudgeService/GetPanelAgreement": {M, O},
    "medbench.judge.v1.JudgeService/GetJudgingCost": {M, O},
}
# Which service serves each API (the gateway also serves the public leaderboard).
SERVED_BY = {
    "medbench.submission.v1.SubmissionService": "gateway",
    "medbench.identity.v1.IdentityService": "gateway",
    "medbench.ops.v1.QuarantineService": "gateway",
    "medbench.ops.v1.ProbingService": "gateway",
    "medbench.leaderboard.v1.LeaderboardService": "aggregator",
    "medbench.report.v1.ReportService": "aggregator",
    "medbench.taskpool.v1.TaskPoolService": "rotator",
    "medbench.dispatch.v1.DispatcherService": "dispatcher",
    "medbench.judge.v1.JudgeService": "judge_scorer",
}
REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    # A judge model is configured (never reached here), so the judge service is served.
    judge = '[{"model": "unreachable-judge", "base_url": "http://127.0.0.1:9/v1"}]'
    with running_stack(
        servers, tmp_path_factory, "tenancy", {"MEDBENCH_JUDGE__MODELS": judge}
    ) as services:
        yield services


def callers(stack: ServiceStack) -> dict[str, tuple[str | None, int | None]]:
    """Every kind of caller: its token and the role it should be treated as."""
    return {
        "no key": (None, None),
        "malformed key": ("mbk_not-a-key", None),
        "unknown key": (f"mbk_{'0' * 16}_{'x' * 43}", None),
        "submitter": (partner_key(stack, "table-a", S), S),
        "viewer": (partner_key(stack, "table-a", V), V),
        "maintainer": (stack.admin_key, M),
        "ops": (partner_key(stack, "platform", O), O),
        "reviewer": (partner_key(stack, "table-r", R), R),
        # Each platform service with its own token (the site's too).
        **{f"service {name}": (token, SV) for name, token in stack.service_tokens.items()},
    }


async def call(address: str, token: str | None, method: str) -> grpc.StatusCode:
    """Calls method with an empty request (or one empty message); the status it ends with."""
    service, _, name = method.rpartition("/")
    descriptor = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
    request_cls = symbol_database.Default().GetSymbol(descriptor.input_type.full_name)
    response_cls = symbol_database.Default().GetSymbol(descriptor.output_type.full_name)
    path = f"/{method}"
    kwargs: dict[str, Any] = {
        "request_serializer": request_cls.SerializeToString,
        "response_deserializer": response_cls.FromString,
    }
    chan = channel(address, token)
    try:
        if descriptor.client_streaming:
            stream = chan.stream_stream if descriptor.server_streaming else chan.stream_unary
            rpc = stream(path, **kwargs)

            async def one() -> Any:
                yield request_cls()

            result = rpc(one(), timeout=20)
        else:
            unary = chan.unary_stream if descriptor.server_streaming else chan.unary_unary
            result = unary(path, **kwargs)(request_cls(), timeout=20)
        if descriptor.server_streaming:
            async for _ in result:
                pass
        else:
            await result
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    finally:
        await chan.close()


def test_every_rpc_of_every_service_declares_the_expected_policy() -> None:

    declared = {}
    for service in SERVED_BY:
        desc = descriptor_pool.Default().FindServiceByName(service)
        for m in desc.methods:
            policy = method_access(f"/{service}/{m.name}")
            assert policy is not None, f"{service}/{m.name} declares no access policy"
            declared[f"{service}/{m.name}"] = set(policy.roles)
    assert declared == EXPECTED


async def test_every_rpc_refuses_every_caller_its_policy_does_not_name(
    stack: ServiceStack,
) -> None:
    who = callers(stack)
    failures = []
    for method, allowed in EXPECTED.items():
        address = stack.address(SERVED_BY[method.rpartition("/")[0]])
        for caller, (token, role) in who.items():
            code = await call(address, token, method)
            policy = method_access(f"/{method}")
            if role is None:
                expected_ok = code == grpc.StatusCode.UNAUTHENTICATED
            elif role == SV and policy is not None and caller.split()[1] not in policy.services:
                expected_ok = code == grpc.StatusCode.PERMISSION_DENIED
            elif role in allowed:
                # Admitted: whatever the empty request gets, it is not a refusal or a crash.
                expected_ok = code not in REFUSED | {grpc.StatusCode.INTERNAL}
            else:
                expected_ok = code == grpc.StatusCode.PERMISSION_DENIED
            if not expected_ok:
                failures.append(f"{method} as {caller}: {code.name}")
    # The public leaderboard through the gateway follows the same policy.
    listing = "medbench.leaderboard.v1.LeaderboardService/ListLeaderboard"
    assert await call(stack.address("gateway"), None, listing) == grpc.StatusCode.UNAUTHENTICATED
    assert failures == []


async def test_a_tenant_sees_only_its_own_submissions(stack: ServiceStack) -> None:
    from tests.e2e.test_evaluation import ROWS

    await load_pool(stack, ROWS, "tenancy-pool")
    owner = partner_client(stack, "iso-owner")
    created = await owner.create("iso-run", "iso-model")
    sid = created.submission.submission_id
    assert created.submission.tenant_id == "iso-owner"
    stranger = partner_client(stack, "iso-stranger")
    token = partner_key(stack, "iso-stranger")
    for name, request in [
        ("GetSubmission", submission_service_pb2.GetSubmissionRequest(submission_id=sid)),
        ("GetReport", submission_service_pb2.GetReportRequest(submission_id=sid)),
        ("ResumeSubmission", submission_service_pb2.ResumeSubmissionRequest(submission_id=sid)),
        (
            "PublishSubmission",
            submission_service_pb2.PublishSubmissionRequest(submission_id=sid, published=True),
        ),
    ]:
        chan = channel(stack.address("gateway"), token)
        rpc = chan.unary_unary(
            f"/medbench.submission.v1.SubmissionService/{name}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rpc(request)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, name
        assert sid in (err.value.details() or ""), name
    for streaming in (stranger.prompts, stranger.item_results):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await streaming(sid)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stranger.upload(sid, [("b1", [(ROWS[0]["item_id"], "<A>")], False)])
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # The same request id in another tenant is another submission.
    other = await stranger.create("iso-run", "iso-model")
    assert other.created and other.submission.submission_id != sid
    # The owner's viewer reads but cannot write.
    viewer = partner_client(stack, "iso-owner", V)
    assert (await viewer.get(sid)).submission_id == sid
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await viewer.upload(sid, [("b1", [(ROWS[0]["item_id"], "<A>")], False)])
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await owner.get(sid)).progress.answered_items == 0


def identity(stack: ServiceStack, key: str | None = None) -> identity_grpc.IdentityServiceStub:
    return identity_grpc.IdentityServiceStub(
        channel(stack.address("gateway"), key or stack.admin_key)
    )


async def whoami(stack: ServiceStack, key: str) -> grpc.StatusCode:
    try:
        await identity(stack, key).WhoAmI(identity_service_pb2.WhoAmIRequest())
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()


async def rotator_accepts(stack: ServiceStack, key: str) -> grpc.StatusCode:
    return await call(
        stack.address("rotator"), key, "medbench.taskpool.v1.TaskPoolService/ListDatasets"
    )


async def test_keys_are_shown_once_stored_hashed_and_can_be_rotated_and_revoked(
    stack: ServiceStack, servers: Servers
) -> None:
    admin = identity(stack)
    await admin.CreateTenant(identity_service_pb2.CreateTenantRequest(tenant_id="keys-t"))
    made = await admin.CreateApiKey(
        identity_service_pb2.CreateApiKeyRequest(tenant_id="keys-t", role=S, name="ci")
    )
    assert made.secret.startswith(f"mbk_{made.key.key_id}_")
    me = await identity(stack, made.secret).WhoAmI(identity_service_pb2.WhoAmIRequest())
    assert (me.key_id, me.tenant_id, me.role) == (made.key.key_id, "keys-t", S)
    # Listing never shows a secret; storage keeps only a hash.
    listed = await admin.ListApiKeys(identity_service_pb2.ListApiKeysRequest(tenant_id="keys-t"))
    assert [k.key_id for k in listed.keys] == [made.key.key_id]
    assert made.secret.split("_", 2)[2] not in str(listed)
    db_name = stack.env("gateway")["MEDBENCH_MONGO__DATABASE"]
    client: AsyncMongoClient = AsyncMongoClient(servers.mongo_uri)
    try:
        stored = await client[db_name].api_keys.find_one({"_id": made.key.key_id})
        assert stored is not None and made.secret.split("_", 2)[2] not in str(stored)
        # Rotation: the new key works, the old one is refused at once on the gateway and within
        # the cache lifetime everywhere else.
        rotated = await admin.RotateApiKey(
            identity_service_pb2.RotateApiKeyRequest(key_id=made.key.key_id)
        )
        assert await whoami(stack, rotated.secret) == grpc.StatusCode.OK
        assert await whoami(stack, made.secret) == grpc.StatusCode.UNAUTHENTICATED

        async def refused_by_rotator() -> bool:
            return await rotator_accepts(stack, made.secret) == grpc.StatusCode.UNAUTHENTICATED

        await eventually(refused_by_rotator, 30, "the rotator to refuse the revoked key")
        # An expired key is refused (expiry moved into the past in storage).
        await client[db_name].api_keys.update_one(
            {"_id": rotated.key.key_id},
            {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}},
        )

        async def expired() -> bool:
            return await whoami(stack, rotated.secret) == grpc.StatusCode.UNAUTHENTICATED

        await eventually(expired, 30, "the expired key to be refused")
    finally:
        await client.close()
    # A disabled tenant's keys are refused.
    fresh = await admin.CreateApiKey(
        identity_service_pb2.CreateApiKeyRequest(tenant_id="keys-t", role=V)
    )
    assert await whoami(stack, fresh.secret) == grpc.StatusCode.OK
    await admin.UpdateTenant(
        identity_service_pb2.UpdateTenantRequest(tenant_id="keys-t", disabled=True)
    )

    async def disabled() -> bool:
        return await whoami(stack, fresh.secret) == grpc.StatusCode.UNAUTHENTICATED

    await eventually(disabled, 30, "the disabled tenant's key to be refused")
    # Bad admin input is named.
    for request, field in [
        (identity_service_pb2.CreateTenantRequest(tenant_id="Bad Id"), "tenant_id"),
        (identity_service_pb2.CreateTenantRequest(tenant_id="keys-t"), "already exists"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin.CreateTenant(request)
        assert field in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.CreateApiKey(
            identity_service_pb2.CreateApiKeyRequest(tenant_id="table-a", role=M)
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.CreateApiKey(
            identity_service_pb2.CreateApiKeyRequest(tenant_id="table-a", role=SV)
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def finish(stack: ServiceStack, tenant: str, request_id: str, rows: list[Any]) -> str:
    evaluation = Evaluation(stack, tenant, request_id, {r["item_id"]: "<A>" for r in rows})
    await evaluation.create()
    batches = evaluation.batches(await evaluation.prompts())
    last_id, last, _ = batches[-1]
    for batch in [*batches[:-1], (last_id, last, True)]:
        await evaluation.upload_batch(batch)
    await evaluation.wait_completed()
    return evaluation.submission_id


async def test_quotas_refuse_with_resource_exhausted_and_charge_nothing_twice(
    stack: ServiceStack,
) -> None:
    from tests.e2e.test_evaluation import ROWS

    await load_pool(stack, ROWS, "tenancy-pool")
    admin = identity(stack)
    await admin.CreateTenant(
        identity_service_pb2.CreateTenantRequest(
            tenant_id="quota-t",
            # The day's quota, not the cap per pool, is what this tenant runs into.
            quotas=identity_pb2.Quotas(
                submissions_per_day=2, concurrent_submissions=1, hidden_per_day=10
            ),
        )
    )
    partner = partner_client(stack, "quota-t")
    first = await partner.create("q-1", "m")
    # A retry of the same request is the same submission and charges nothing.
    assert not (await partner.create("q-1", "m")).created
    usage = await identity(stack, partner_key(stack, "quota-t")).GetUsage(
        identity_service_pb2.GetUsageRequest()
    )
    assert (usage.submissions_today, usage.active_submissions) == (1, 1)
    # Charged: the pool's items, every one shown (canaries are pool items, shown altered).
    assert usage.items_this_month == len(ROWS)
    # Concurrent creates against the last slot: none gets through while one is active.
    results = await asyncio.gather(
        *(partner.create(f"q-race-{i}", "m") for i in range(4)), return_exceptions=True
    )
    assert all(
        isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for r in results
    ), results
    assert "in progress" in (results[0].details() or "")  # type: ignore[union-attr]
    # Finishing the active one frees the slot.
    evaluation = Evaluation(stack, "quota-t", "q-1", {})
    evaluation.submission_id = first.submission.submission_id
    prompts = await evaluation.prompts()
    await evaluation.upload_batch(("all", [(p.item_id, "<A>") for p in prompts], True))
    await evaluation.wait_completed()
    await finish(stack, "quota-t", "q-2", ROWS)
    # The day's two are spent: refused with when to retry.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await partner.create("q-3", "m")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "midnight UTC" in (err.value.details() or "")
    assert "2 submissions" in (err.value.details() or "")
    trailing = dict(err.value.trailing_metadata() or ())
    assert 0 < int(trailing["retry-after"]) <= 86_400
    # The monthly item quota.
    await admin.CreateTenant(
        identity_service_pb2.CreateTenantRequest(
            tenant_id="quota-m", quotas=identity_pb2.Quotas(items_per_month=len(ROWS) - 1)
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await partner_client(stack, "quota-m").create("m-1", "m")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "monthly quota" in (err.value.details() or "")
    usage = await admin.GetUsage(identity_service_pb2.GetUsageRequest(tenant_id="quota-m"))
    assert (usage.submissions_today, usage.items_this_month) == (0, 0)
    # A partner cannot read another tenant's usage (and learns nothing of it).
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await identity(stack, partner_key(stack, "quota-t")).GetUsage(
            identity_service_pb2.GetUsageRequest(tenant_id="quota-m")
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_audit_log_records_who_did_what_from_where(stack: ServiceStack) -> None:
    key = partner_key(stack, "audit-t")
    partner = partner_client(stack, "audit-t")
    created = await partner.create(f"audit-{uuid.uuid4().hex[:6]}", "m")
    viewer = partner_client(stack, "audit-t", V)
    with pytest.raises(grpc.aio.AioRpcError):
        await viewer.create("audit-denied", "m")
    with pytest.raises(grpc.aio.AioRpcError):
        await identity(stack, "mbk_" + "1" * 16 + "_" + "y" * 43).WhoAmI(
            identity_service_pb2.WhoAmIRequest()
        )
    admin = identity(stack)
    page = await admin.ListAuditEvents(
        identity_service_pb2.ListAuditEventsRequest(tenant_id="audit-t", page_size=1000)
    )
    events = list(page.events)
    key_id = key.split("_")[1]
    mine = [
        e
        for e in events
        if e.method.endswith("/CreateSubmission") and e.key_id == key_id and e.code == "OK"
    ]
    assert mine and f"request_id={created.submission.request_id}" in mine[0].target
    assert mine[0].peer.startswith(("ipv4:127.0.0.1", "ipv6:"))
    assert mine[0].role == S and mine[0].service == "gateway"
    assert any(e.code == "PERMISSION_DENIED" and e.role == V for e in events)
    everything = await admin.ListAuditEvents(
        identity_service_pb2.ListAuditEventsRequest(page_size=1000)
    )
    assert any(e.code == "UNAUTHENTICATED" and e.key_id == "" for e in everything.events)
    # Newest first, and paged without gaps or repeats.
    first = await admin.ListAuditEvents(identity_service_pb2.ListAuditEventsRequest(page_size=2))
    second = await admin.ListAuditEvents(
        identity_service_pb2.ListAuditEventsRequest(page_size=2, page_token=first.next_page_token)
    )
    ids = [e.event_id for e in [*first.events, *second.events]]
    assert ids == [e.event_id for e in everything.events[:4]]
    assert all(
        a.at.ToDatetime() >= b.at.ToDatetime()
        for a, b in zip(everything.events, everything.events[1:], strict=False)
    )
    # Partners cannot read it, and nothing can change it: there is no RPC for that.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await identity(stack, key).ListAuditEvents(identity_service_pb2.ListAuditEventsRequest())
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    names = {
        m.name for m in identity_service_pb2.DESCRIPTOR.services_by_name["IdentityService"].methods
    }
    assert not any("Audit" in n and not n.startswith("List") for n in names)


async def test_a_partner_cannot_choose_its_tenant(stack: ServiceStack) -> None:
    """The tenant comes from the key; the old tenant header is ignored."""
    key = partner_key(stack, "honest-t")
    chan = channel(stack.address("gateway"), key)
    from medbench.submission.v1 import submission_service_pb2_grpc

    stub = submission_service_pb2_grpc.SubmissionServiceStub(chan)
    response = await stub.CreateSubmission(
        submission_service_pb2.CreateSubmissionRequest(
            request_id="header-run",
            model=submission_pb2.ModelInfo(name="m"),
            track=common_pb2.TRACK_LLM,
            mode=common_pb2.SUBMISSION_MODE_UPLOAD,
        ),
        metadata=(("x-medbench-tenant", "someone-else"),),
    )
    assert response.submission.tenant_id == "honest-t"
