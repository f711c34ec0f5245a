"""API keys, the authenticator and method policies (pure unit tests; the key store is a dict)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from medbench.identity.v1 import access_pb2
from medbench.submission.v1 import submission_service_pb2  # noqa: F401 - its descriptors
from medbench.taskpool.v1 import taskpool_service_pb2  # noqa: F401 - its descriptors
from medbench_runtime.auth import (
    PLATFORM_SERVICES,
    Authenticator,
    Principal,
    authorize,
    bearer_token,
    hash_secret,
    method_access,
    mint_key,
    mint_service_token,
    parse_key,
    parse_service_token,
)
from medbench_runtime.errors import PermissionDenied, Unauthenticated

SERVICE_TOKEN = "s" * 40


class Store:
    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Any]] = {}
        self.tenants: dict[str, dict[str, Any]] = {"t1": {"_id": "t1", "disabled": False}}
        self.reads = 0

    async def find_key(self, key_id: str) -> Mapping[str, Any] | None:
        self.reads += 1
        found = self.keys.get(key_id)
        return dict(found) if found is not None else None  # a fresh document, as a database

    async def find_tenant(self, tenant_id: str) -> Mapping[str, Any] | None:
        return self.tenants.get(tenant_id)

    def add(self, role: int = access_pb2.ROLE_PARTNER_SUBMITTER, **fields: Any) -> str:
        key = mint_key()
        self.keys[key.key_id] = {
            "_id": key.key_id,
            "tenant_id": "t1",
            "role": role,
            "secret_hash": key.secret_hash,
            "revoked_at": None,
            "expires_at": datetime.now(UTC) + timedelta(days=1),
            **fields,
        }
        return key.secret


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def test_minted_keys_parse_and_are_stored_only_as_a_hash() -> None:
    key = mint_key()
    key_id, secret_part = parse_key(key.secret)
    assert key_id == key.key_id and hash_secret(secret_part) == key.secret_hash
    assert secret_part not in key.secret_hash
    assert mint_key().secret != key.secret
    for bad in ("", "mbk_", "mbk_xyz_abc", key.secret + "!", key.secret.replace("mbk_", "mbx_")):
        with pytest.raises(Unauthenticated):
            parse_key(bad)


def test_bearer_metadata() -> None:
    assert bearer_token(bearer("abc")) == "abc"
    assert bearer_token((("Authorization", "bearer  abc "),)) == "abc"
    assert bearer_token((("x-other", "v"),)) is None
    for bad in ("Basic abc", "Bearer", "abc"):
        with pytest.raises(Unauthenticated):
            bearer_token((("authorization", bad),))


async def test_a_valid_key_becomes_its_principal_and_everything_else_is_refused() -> None:
    store = Store()
    auth = Authenticator(SERVICE_TOKEN, store)
    secret = store.add()
    me = await auth.authenticate(bearer(secret), "ipv4:127.0.0.1:1")
    assert (me.tenant_id, me.role, me.peer) == (
        "t1",
        access_pb2.ROLE_PARTNER_SUBMITTER,
        "ipv4:127.0.0.1:1",
    )
    key_id, secret_part = parse_key(secret)
    wrong = f"mbk_{key_id}_{'A' * 43}"
    cases = {
        "missing": (),
        "wrong secret": bearer(wrong),
        "unknown key": bearer(f"mbk_{'0' * 16}_{secret_part}"),
        "not a key": bearer("hello"),
        "revoked": bearer(store.add(revoked_at=datetime.now(UTC))),
        "expired": bearer(store.add(expires_at=datetime.now(UTC) - timedelta(seconds=1))),
        "expired naive": bearer(store.add(expires_at=datetime.utcnow() - timedelta(hours=1))),
    }
    for name, metadata in cases.items():
        with pytest.raises(Unauthenticated):
            await auth.authenticate(metadata)
        assert name
    store.tenants["t1"]["disabled"] = True
    auth.forget(key_id)
    with pytest.raises(Unauthenticated, match="disabled"):
        await auth.authenticate(bearer(secret))


async def test_the_service_token_and_its_minimum_length() -> None:
    auth = Authenticator(SERVICE_TOKEN, None)
    me = await auth.authenticate(bearer(SERVICE_TOKEN))
    assert me.role == access_pb2.ROLE_SERVICE and me.tenant_id == "platform"
    with pytest.raises(Unauthenticated):
        await auth.authenticate(bearer(SERVICE_TOKEN[:-1] + "x"))
    short = Authenticator("short", None)
    with pytest.raises(Unauthenticated):
        await short.authenticate(bearer("short"))
    with pytest.raises(Unauthenticated):
        await Authenticator("", None).authenticate(bearer(""))


async def test_verified_keys_are_cached_until_their_lifetime_ends() -> None:
    store = Store()
    now = [0.0]
    auth = Authenticator(SERVICE_TOKEN, store, cache_ttl_s=5, clock=lambda: now[0])
    secret = store.add()
    await auth.authenticate(bearer(secret))
    await auth.authenticate(bearer(secret))
    assert store.reads == 1
    key_id, _ = parse_key(secret)
    store.keys[key_id]["revoked_at"] = datetime.now(UTC)
    await auth.authenticate(bearer(secret))  # still cached
    now[0] = 5.1
    with pytest.raises(Unauthenticated, match="revoked"):
        await auth.authenticate(bearer(secret))


async def test_a_client_certificate_must_be_bound_to_the_partner_tenant() -> None:
    store = Store()
    store.tenants["t1"]["certificate_subjects"] = ["hospital-1.example.org"]
    auth = Authenticator(SERVICE_TOKEN, store)
    secret = store.add()
    me = await auth.authenticate(bearer(secret), certificate_subject="hospital-1.example.org")
    assert me.tenant_id == "t1"
    with pytest.raises(Unauthenticated, match="not bound"):
        await auth.authenticate(bearer(secret), certificate_subject="someone-else")


def test_policies_come_from_the_protos() -> None:
    create = "/medbench.submission.v1.SubmissionService/CreateSubmission"
    policy = method_access(create)
    assert policy is not None and policy.audit
    assert list(policy.roles) == [access_pb2.ROLE_PARTNER_SUBMITTER]
    submitter = Principal("k", "t1", access_pb2.ROLE_PARTNER_SUBMITTER)
    viewer = Principal("k", "t1", access_pb2.ROLE_PARTNER_VIEWER)
    assert authorize(create, submitter).audit
    with pytest.raises(PermissionDenied, match="partner_viewer may not call CreateSubmission"):
        authorize(create, viewer)
    # A method without a policy (or unknown) is refused to everyone.
    assert method_access("/grpc.health.v1.Health/Check") is None
    with pytest.raises(PermissionDenied, match="no access policy"):
        authorize("/nope.Service/Method", submitter)


async def test_each_service_is_admitted_by_its_own_tokens_hash_only() -> None:
    tokens = {name: mint_service_token(name) for name in PLATFORM_SERVICES}
    hashes = {name: digest for name, (_, digest) in tokens.items()}
    auth = Authenticator(SERVICE_TOKEN, None, service_token_hashes=hashes)
    for name, (token, digest) in tokens.items():
        assert parse_service_token(token) == name and digest == hash_secret(token)
        me = await auth.authenticate(bearer(token))
        assert (me.role, me.service, me.key_id) == (
            access_pb2.ROLE_SERVICE,
            name,
            f"service:{name}",
        )
    dispatcher = tokens["dispatcher"][0]
    # Another secret under a service's name, an unknown service, the legacy shared token.
    forged = dispatcher[:-43] + "A" * 43
    with pytest.raises(Unauthenticated, match="service token of dispatcher is not valid"):
        await auth.authenticate(bearer(forged))
    with pytest.raises(Unauthenticated, match="service token is not valid"):
        await auth.authenticate(bearer("mbs_intruder_" + "A" * 43))
    with pytest.raises(Unauthenticated, match="not valid"):
        await auth.authenticate(bearer(SERVICE_TOKEN))
    # A server that knows only some services' hashes admits only those.
    only_gateway = Authenticator("", None, service_token_hashes={"gateway": hashes["gateway"]})
    with pytest.raises(Unauthenticated):
        await only_gateway.authenticate(bearer(dispatcher))
    with pytest.raises(ValueError, match="unknown services"):
        Authenticator("", None, service_token_hashes={"intruder": "0" * 64})
    with pytest.raises(ValueError, match="unknown service"):
        mint_service_token("intruder")


def test_a_service_may_call_only_the_rpcs_that_name_it() -> None:
    assign = "/medbench.taskpool.v1.TaskPoolService/AssignItems"
    prompts = "/medbench.taskpool.v1.TaskPoolService/GetPrompts"
    registry = "/medbench.taskpool.v1.TaskPoolService/GetRegistry"
    policy = method_access(assign)
    assert policy is not None and list(policy.services) == ["gateway"]

    def service(name: str) -> Principal:
        return Principal(f"service:{name}", "platform", access_pb2.ROLE_SERVICE, service=name)

    assert authorize(assign, service("gateway")).audit
    with pytest.raises(PermissionDenied, match="service dispatcher may not call AssignItems"):
        authorize(assign, service("dispatcher"))
    authorize(prompts, service("dispatcher"))
    with pytest.raises(PermissionDenied, match="service site may not call GetPrompts"):
        authorize(prompts, service("site"))
    # An RPC no service calls admits no service token at all.
    with pytest.raises(PermissionDenied, match="role service may not call GetRegistry"):
        authorize(registry, service("gateway"))


def test_every_rpc_that_admits_services_names_known_ones() -> None:
    """Over every service of every proto: ROLE_SERVICE comes with a non-empty list of known
    services, and a list never comes without the role."""
    import importlib
    from pathlib import Path

    protos = Path(__file__).resolve().parents[3] / "protos"
    checked = 0
    for path in sorted(protos.rglob("*_service.proto")):
        module = importlib.import_module(
            str(path.relative_to(protos).with_suffix("")).replace("/", ".") + "_pb2"
        )
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                policy = method_access(f"/{service.full_name}/{method.name}")
                assert policy is not None, method.full_name
                names = list(policy.services)
                if access_pb2.ROLE_SERVICE in policy.roles:
                    checked += 1
                    assert names, f"{method.full_name} admits services without naming them"
                    assert set(names) <= set(PLATFORM_SERVICES), (method.full_name, names)
                else:
                    assert not names, f"{method.full_name} names services but not the role"
    assert checked == 12
