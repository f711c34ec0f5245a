"""Authentication and access control of every RPC: API keys, roles, the policy each RPC declares.

An API key is "mbk_<key_id>_<secret>": the key id is public (it names the key in lists and the
audit log), the secret is 256 random bits shown once and stored only as its SHA-256 (a slow hash
adds nothing for a secret of that entropy). The platform's services call each other with their
own service tokens, "mbs_<service>_<secret>", which carry ROLE_SERVICE and the service's name:
a server knows only the tokens' SHA-256 (MEDBENCH_AUTH__SERVICE_TOKEN_HASHES), and an RPC that
admits ROLE_SERVICE names the services that may call it (Access.services), so one service's
token opens nothing another service's RPCs reserve. Each RPC declares its allowed roles in
the proto (option medbench.identity.v1.access); a method without a policy is refused to all.
A deployment without token hashes falls back to one shared token (any length >= 32) that
counts as every service: the legacy mode, for single-process tools and old deployments.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

from google.protobuf import descriptor_pool

from medbench.identity.v1 import access_pb2
from medbench_runtime.errors import PermissionDenied, Unauthenticated

KEY_PREFIX = "mbk_"
KEY_PATTERN = re.compile(r"^mbk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
SERVICE_TOKEN_PREFIX = "mbs_"
SERVICE_TOKEN_PATTERN = re.compile(r"^mbs_([a-z][a-z_]{1,31}?)_([A-Za-z0-9_-]{43})$")
# The platform's own callers, each with its own service token (the review app and partner
# tools call with their users' keys instead).
PLATFORM_SERVICES = (
    "gateway",
    "rotator",
    "dispatcher",
    "metric_scorer",
    "judge_scorer",
    "aggregator",
    "site",
)
PLATFORM_TENANT = "platform"
SERVICE_KEY_ID = "service"
MIN_SERVICE_TOKEN = 32
AUTHORIZATION = "authorization"

_principal: ContextVar[Principal | None] = ContextVar("medbench_principal", default=None)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key, its tenant and role, and the caller's address."""

    key_id: str
    tenant_id: str
    role: int
    peer: str = ""
    # ROLE_SERVICE only: the calling service's name ("" for the legacy shared token).
    service: str = ""

    @property
    def role_name(self) -> str:
        name: str = access_pb2.Role.Name(self.role)
        return name.removeprefix("ROLE_").lower()

    @property
    def is_partner(self) -> bool:
        return self.role in (access_pb2.ROLE_PARTNER_SUBMITTER, access_pb2.ROLE_PARTNER_VIEWER)


def current_principal() -> Principal:
    """The caller of the RPC being handled; UNAUTHENTICATED outside an authenticated call."""
    principal = _principal.get()
    if principal is None:
        raise Unauthenticated("this call carries no authenticated caller")
    return principal


def set_principal(principal: Principal | None) -> None:
    """Binds the caller to the current task (the interceptor; tests of handlers)."""
    _principal.set(principal)


@dataclass(frozen=True)
class NewKey:
    """A freshly minted key: the full secret goes to the caller once, the hash to storage."""

    key_id: str
    secret: str
    secret_hash: str


def hash_secret(secret_part: str) -> str:
    return hashlib.sha256(secret_part.encode()).hexdigest()


def mint_key() -> NewKey:
    key_id = secrets.token_hex(8)
    secret_part = secrets.token_urlsafe(32)
    return NewKey(key_id, f"{KEY_PREFIX}{key_id}_{secret_part}", hash_secret(secret_part))


def mint_service_token(service: str) -> tuple[str, str]:
    """A new token for one of the platform's services and its SHA-256 (hex), the only form
    the servers keep (MEDBENCH_AUTH__SERVICE_TOKEN_HASHES)."""
    if service not in PLATFORM_SERVICES:
        raise ValueError(f"unknown service {service!r}; one of {', '.join(PLATFORM_SERVICES)}")
    token = f"{SERVICE_TOKEN_PREFIX}{service}_{secrets.token_urlsafe(32)}"
    return token, hash_secret(token)


def parse_service_token(token: str) -> str | None:
    """The service a token of the form "mbs_<service>_<secret>" names, or None."""
    match = SERVICE_TOKEN_PATTERN.match(token)
    if match is None or match.group(1) not in PLATFORM_SERVICES:
        return None
    return match.group(1)


def parse_key(token: str) -> tuple[str, str]:
    """(key_id, secret part) of a well-formed key, else UNAUTHENTICATED."""
    match = KEY_PATTERN.match(token)
    if match is None:
        raise Unauthenticated("the API key is malformed: expected mbk_<16 hex>_<43 characters>")
    return match.group(1), match.group(2)


def bearer_token(metadata: Any) -> str | None:
    """The token of an `authorization: Bearer <token>` metadata entry, if any."""
    for key, value in metadata or ():
        if key.lower() == AUTHORIZATION:
            text = value if isinstance(value, str) else value.decode(errors="replace")
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization metadata must be 'Bearer <api key>'")
            return token.strip()
    return None


@lru_cache(maxsize=512)
def method_access(method: str) -> access_pb2.Access | None:
    """The access policy a method declares in its proto ("/pkg.Service/Method"), or None."""
    service, _, name = method.lstrip("/").rpartition("/")
    try:
        descriptor = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
    except KeyError:
        return None
    options = descriptor.GetOptions()
    if not options.HasExtension(access_pb2.access):
        return None
    access: access_pb2.Access = options.Extensions[access_pb2.access]
    return access


class KeyStore(Protocol):
    """Where keys and tenants are read from (the identity collections)."""

    async def find_key(self, key_id: str) -> Mapping[str, Any] | None: ...

    async def find_tenant(self, tenant_id: str) -> Mapping[str, Any] | None: ...


class Authenticator:
    """Turns call metadata into a Principal and checks it against the method's policy.

    Verified keys are cached for cache_ttl_s, so a revocation reaches every service within that
    time (the gateway, which revokes, forgets the key at once).
    """

    def __init__(
        self,
        service_token: str,
        store: KeyStore | None,
        cache_ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        service_token_hashes: Mapping[str, str] | None = None,
    ) -> None:
        """service_token_hashes: SHA-256 (hex) of each platform service's own token; when
        given, only those tokens are service callers (the shared service_token is not)."""
        unknown = sorted(set(service_token_hashes or {}) - set(PLATFORM_SERVICES))
        if unknown:
            raise ValueError(
                f"service token hashes for unknown services {unknown}; "
                f"known: {', '.join(PLATFORM_SERVICES)}"
            )
        self._service_hashes = {
            k: v.strip().lower() for k, v in (service_token_hashes or {}).items()
        }
        token = service_token.strip()
        shared = len(token) >= MIN_SERVICE_TOKEN and not self._service_hashes
        self._service_token = token.encode() if shared else None
        self._store = store
        self._ttl = cache_ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, Mapping[str, Any], Mapping[str, Any] | None]] = {}

    def forget(self, key_id: str) -> None:
        self._cache.pop(key_id, None)

    async def authenticate(
        self, metadata: Any, peer: str = "", certificate_subject: str | None = None
    ) -> Principal:
        """The caller; with mutual TLS (certificate_subject set) a partner's certificate must be
        bound to its key's tenant."""
        principal = await self._verify(metadata, peer)
        if certificate_subject is not None and principal.is_partner:
            _, tenant = await self._lookup(principal.key_id)
            bound = (tenant or {}).get("certificate_subjects") or []
            if certificate_subject not in bound:
                raise Unauthenticated(
                    f"client certificate {certificate_subject!r} is not bound to tenant "
                    f"{principal.tenant_id}"
                )
        return principal

    async def _verify(self, metadata: Any, peer: str) -> Principal:
        token = bearer_token(metadata)
        if token is None:
            raise Unauthenticated(
                "missing credentials: send metadata 'authorization: Bearer <api key>'"
            )
        if token.startswith(SERVICE_TOKEN_PREFIX) and self._service_hashes:
            service = parse_service_token(token)
            expected = self._service_hashes.get(service or "")
            if service is None or expected is None:
                raise Unauthenticated("the service token is not valid")
            if not hmac.compare_digest(hash_secret(token), expected):
                raise Unauthenticated(f"the service token of {service} is not valid")
            return Principal(
                f"service:{service}", PLATFORM_TENANT, access_pb2.ROLE_SERVICE, peer, service
            )
        if not token.startswith(KEY_PREFIX):
            if self._service_token is not None and hmac.compare_digest(
                token.encode(), self._service_token
            ):
                return Principal(SERVICE_KEY_ID, PLATFORM_TENANT, access_pb2.ROLE_SERVICE, peer)
            raise Unauthenticated("the API key is not valid")
        key_id, secret_part = parse_key(token)
        key, tenant = await self._lookup(key_id)
        if key is None or not hmac.compare_digest(
            hash_secret(secret_part), str(key.get("secret_hash", ""))
        ):
            raise Unauthenticated("the API key is not valid")
        now = datetime.now(UTC)
        if key.get("revoked_at") is not None:
            raise Unauthenticated(f"API key {key_id} was revoked")
        expires = key.get("expires_at")
        if expires is not None and _aware(expires) <= now:
            raise Unauthenticated(f"API key {key_id} expired at {_aware(expires).isoformat()}")
        if tenant is None or tenant.get("disabled"):
            raise Unauthenticated(f"tenant {key.get('tenant_id')} is disabled")
        return Principal(key_id, str(key["tenant_id"]), int(key["role"]), peer)

    async def _lookup(
        self, key_id: str
    ) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
        hit = self._cache.get(key_id)
        if hit is not None and hit[0] > self._clock():
            return hit[1], hit[2]
        if self._store is None:
            return None, None
        key = await self._store.find_key(key_id)
        if key is None:
            return None, None
        tenant = await self._store.find_tenant(str(key["tenant_id"]))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_id] = (self._clock() + self._ttl, key, tenant)
        return key, tenant


def authorize(method: str, principal: Principal) -> access_pb2.Access:
    """The method's policy if principal's role may call it, else PERMISSION_DENIED."""
    policy = method_access(method)
    if policy is None:
        raise PermissionDenied(f"{method} declares no access policy; it is refused to everyone")
    name = method.rpartition("/")[2]
    if principal.role not in policy.roles:
        raise PermissionDenied(f"role {principal.role_name} may not call {name}")
    if principal.service and principal.service not in policy.services:
        raise PermissionDenied(f"service {principal.service} may not call {name}")
    return policy


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
