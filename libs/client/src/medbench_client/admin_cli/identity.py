"""Tenants, API keys, roles, quotas and the audit log: the gateway's IdentityService."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import medbench
from medbench.common.v1 import common_pb2
from medbench.identity.v1 import access_pb2, identity_pb2, identity_service_pb2
from medbench_client.admin_cli.context import Context
from medbench_client.admin_cli.output import emit, enum_name, message_dict, stamp, table, when
from medbench_client.cli_config import ConfigError
from medbench_runtime.auth import PLATFORM_SERVICES, mint_service_token

# The quota fields, as flags (--submissions-per-day ...) and JSON keys.
QUOTAS = [f.name for f in identity_pb2.Quotas.DESCRIPTOR.fields]
# Roles a key can be created with (services use their own tokens), by their short name.
KEY_ROLES: dict[str, int] = {
    enum_name(access_pb2.Role, value): value
    for value in access_pb2.Role.values()
    if value not in (access_pb2.ROLE_UNSPECIFIED, access_pb2.ROLE_SERVICE)
}


def service_modules() -> list[str]:
    """Every generated `*_service_pb2` module of the platform's protos (whose services' access
    policies `roles` reads)."""
    return sorted(
        m.name
        for m in pkgutil.walk_packages(medbench.__path__, "medbench.")
        if m.name.endswith("_service_pb2")
    )


def role_value(name: str) -> access_pb2.Role:
    """A key role by its short name (partner_submitter or partner-submitter)."""
    key = name.strip().lower().replace("-", "_")
    if key not in KEY_ROLES:
        raise ConfigError(f"unknown role {name!r}; one of {', '.join(KEY_ROLES)}")
    return cast(access_pb2.Role, KEY_ROLES[key])


def tenant_dict(t: identity_pb2.Tenant) -> dict[str, Any]:
    return message_dict(t)


def tenant_lines(t: identity_pb2.Tenant) -> list[str]:
    q = t.quotas
    return [
        f"tenant {t.tenant_id} ({t.display_name}){'  DISABLED' if t.disabled else ''}",
        f"  created {stamp(t.created_at) or '-'}",
        *[f"  {name:<24} {getattr(q, name)}" for name in QUOTAS],
        f"  certificate subjects: {', '.join(t.certificate_subjects) or '-'}",
    ]


async def tenants_create(args: argparse.Namespace, ctx: Context) -> int:
    created = await ctx.identity.CreateTenant(
        identity_service_pb2.CreateTenantRequest(
            tenant_id=args.tenant,
            display_name=args.display_name or args.tenant,
            quotas=quotas_from_args(args),
            certificate_subjects=args.certificate_subject or [],
        )
    )
    emit(args, tenant_dict(created), tenant_lines(created))
    return 0


async def tenants_list(args: argparse.Namespace, ctx: Context) -> int:
    token = args.page_token
    found: list[identity_pb2.Tenant] = []
    while True:
        page = await ctx.identity.ListTenants(
            identity_service_pb2.ListTenantsRequest(
                page_size=min(500, args.limit - len(found)), page_token=token
            )
        )
        found.extend(page.tenants)
        token = page.next_page_token
        if not token or len(found) >= args.limit:
            break
    rows = [
        [
            t.tenant_id,
            t.display_name,
            "disabled" if t.disabled else "active",
            str(t.quotas.submissions_per_day),
            str(t.quotas.concurrent_submissions),
            str(t.quotas.items_per_month),
            when(t.created_at),
        ]
        for t in found
    ]
    header = ["TENANT", "NAME", "STATE", "SUBS/DAY", "CONCURRENT", "ITEMS/MONTH", "CREATED"]
    lines = table(header, rows, right={3, 4, 5})
    if token:
        lines.append(f"more: --page-token {token}")
    emit(
        args,
        {"tenants": [tenant_dict(t) for t in found], "next_page_token": token},
        lines,
    )
    return 0


async def tenants_show(args: argparse.Namespace, ctx: Context) -> int:
    t = await ctx.identity.GetTenant(identity_service_pb2.GetTenantRequest(tenant_id=args.tenant))
    emit(args, tenant_dict(t), tenant_lines(t))
    return 0


async def tenants_update(args: argparse.Namespace, ctx: Context) -> int:
    request = identity_service_pb2.UpdateTenantRequest(tenant_id=args.tenant)
    if args.display_name is not None:
        request.display_name = args.display_name
    if args.certificate_subject is not None:
        request.certificate_subjects.extend(args.certificate_subject)
        request.replace_certificate_subjects = True
    t = await ctx.identity.UpdateTenant(request)
    emit(args, tenant_dict(t), tenant_lines(t))
    return 0


async def _set_disabled(args: argparse.Namespace, ctx: Context, disabled: bool) -> int:
    t = await ctx.identity.UpdateTenant(
        identity_service_pb2.UpdateTenantRequest(tenant_id=args.tenant, disabled=disabled)
    )
    what = "suspended: its keys are refused" if disabled else "resumed: its keys work again"
    emit(args, tenant_dict(t), f"tenant {t.tenant_id} {what}")
    return 0


async def tenants_suspend(args: argparse.Namespace, ctx: Context) -> int:
    return await _set_disabled(args, ctx, True)


async def tenants_resume(args: argparse.Namespace, ctx: Context) -> int:
    return await _set_disabled(args, ctx, False)


def quotas_from_args(args: argparse.Namespace) -> identity_pb2.Quotas:
    """The quota flags given (0 for those not given: the platform default, or unchanged)."""
    return identity_pb2.Quotas(**{name: getattr(args, name) or 0 for name in QUOTAS})


def usage_dict(usage: identity_pb2.Usage) -> dict[str, Any]:
    return message_dict(usage)


def usage_lines(usage: identity_pb2.Usage) -> list[str]:
    q = usage.quotas
    used = {
        "submissions_per_day": str(usage.submissions_today),
        "concurrent_submissions": str(usage.active_submissions),
        "items_per_month": str(usage.items_this_month),
    }
    rows = [[name, str(getattr(q, name)), used.get(name, "per pool")] for name in QUOTAS]
    lines = [f"tenant {usage.tenant_id}", *table(["QUOTA", "LIMIT", "USED"], rows, {1, 2})]
    for p in usage.pools:
        lines.append(
            f"pool {p.pool_id} ({enum_name(common_pb2.Track, p.track)} {p.board}): "
            f"official {p.official_runs}/{q.official_per_cycle}, hidden today "
            f"{p.hidden_runs_today}/{q.hidden_per_day}, hidden {p.hidden_runs}/{q.hidden_per_cycle}"
        )
    return lines


async def quotas_show(args: argparse.Namespace, ctx: Context) -> int:
    usage = await ctx.identity.GetUsage(identity_service_pb2.GetUsageRequest(tenant_id=args.tenant))
    emit(args, usage_dict(usage), usage_lines(usage))
    return 0


async def quotas_set(args: argparse.Namespace, ctx: Context) -> int:
    quotas = quotas_from_args(args)
    if not any(getattr(quotas, name) for name in QUOTAS):
        raise ConfigError(
            f"name at least one quota: {', '.join('--' + n.replace('_', '-') for n in QUOTAS)}"
        )
    await ctx.identity.UpdateTenant(
        identity_service_pb2.UpdateTenantRequest(tenant_id=args.tenant, quotas=quotas)
    )
    usage = await ctx.identity.GetUsage(identity_service_pb2.GetUsageRequest(tenant_id=args.tenant))
    emit(args, usage_dict(usage), usage_lines(usage))
    return 0


def key_dict(key: identity_pb2.ApiKey) -> dict[str, Any]:
    return message_dict(key)


def _key_state(key: identity_pb2.ApiKey, now: datetime) -> str:
    if key.HasField("revoked_at") and key.revoked_at.seconds:
        return "revoked"
    if key.expires_at.seconds and key.expires_at.ToDatetime(tzinfo=UTC) <= now:
        return "expired"
    return "active"


def key_row(key: identity_pb2.ApiKey, now: datetime) -> list[str]:
    return [
        key.key_id,
        key.tenant_id,
        enum_name(access_pb2.Role, key.role),
        _key_state(key, now),
        key.name,
        when(key.created_at),
        when(key.expires_at),
    ]


KEY_HEADER = ["KEY", "TENANT", "ROLE", "STATE", "NAME", "CREATED", "EXPIRES"]


def _created(args: argparse.Namespace, response: identity_service_pb2.CreateApiKeyResponse) -> int:
    data = key_dict(response.key) | {"secret": response.secret}
    lines = table(KEY_HEADER, [key_row(response.key, datetime.now(UTC))], set())
    lines += ["", response.secret]
    if not args.json:
        print(
            "medbench: the key is shown this once (last line); store it now, it cannot be read "
            "again",
            file=sys.stderr,
        )
    emit(args, data, lines)
    return 0


async def keys_create(args: argparse.Namespace, ctx: Context) -> int:
    response = await ctx.identity.CreateApiKey(
        identity_service_pb2.CreateApiKeyRequest(
            tenant_id=args.tenant,
            role=role_value(args.role),
            name=args.name,
            ttl_days=args.ttl_days,
        )
    )
    return _created(args, response)


async def keys_rotate(args: argparse.Namespace, ctx: Context) -> int:
    response = await ctx.identity.RotateApiKey(
        identity_service_pb2.RotateApiKeyRequest(
            key_id=args.key_id.removeprefix("mbk_"), ttl_days=args.ttl_days
        )
    )
    return _created(args, response)


async def keys_list(args: argparse.Namespace, ctx: Context) -> int:
    response = await ctx.identity.ListApiKeys(
        identity_service_pb2.ListApiKeysRequest(tenant_id=args.tenant, include_inactive=args.all)
    )
    now = datetime.now(UTC)
    emit(
        args,
        {"keys": [key_dict(k) for k in response.keys]},
        table(KEY_HEADER, [key_row(k, now) for k in response.keys], set()),
    )
    return 0


async def keys_revoke(args: argparse.Namespace, ctx: Context) -> int:
    key = await ctx.identity.RevokeApiKey(
        identity_service_pb2.RevokeApiKeyRequest(key_id=args.key_id.removeprefix("mbk_"))
    )
    emit(args, key_dict(key), f"key {key.key_id} revoked at {stamp(key.revoked_at)}")
    return 0


def role_policies() -> dict[str, list[str]]:
    """Every key role with the RPCs its keys may call, read from the protos' access options."""
    allowed: dict[str, list[str]] = {name: [] for name in KEY_ROLES}
    for module_name in service_modules():
        module = importlib.import_module(module_name)
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                policy = method.GetOptions().Extensions[access_pb2.access]
                for role in policy.roles:
                    name = enum_name(access_pb2.Role, role)
                    if name in allowed:
                        allowed[name].append(f"{service.name}.{method.name}")
    return allowed


async def roles(args: argparse.Namespace, ctx: Context) -> int:
    policies = role_policies()
    services = service_policies()
    lines = []
    for name, methods in policies.items():
        lines.append(f"{name} ({len(methods)} RPCs)")
        lines += [f"  {m}" for m in methods]
    for name, methods in services.items():
        lines.append(f"service {name}'s own token ({len(methods)} RPCs)")
        lines += [f"  {m}" for m in methods]
    emit(
        args,
        {
            "roles": [{"role": n, "rpcs": m} for n, m in policies.items()],
            "services": [{"service": n, "rpcs": m} for n, m in services.items()],
        },
        lines,
    )
    return 0


def service_policies() -> dict[str, list[str]]:
    """Every platform service with the RPCs its own token may call (the role service and the
    services each RPC names in its access option)."""
    allowed: dict[str, list[str]] = {name: [] for name in PLATFORM_SERVICES}
    for module_name in service_modules():
        module = importlib.import_module(module_name)
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                policy = method.GetOptions().Extensions[access_pb2.access]
                if access_pb2.ROLE_SERVICE in policy.roles:
                    for name in policy.services:
                        allowed.setdefault(name, []).append(f"{service.name}.{method.name}")
    return allowed


async def service_token(args: argparse.Namespace, ctx: Context) -> int:
    """A new token for one platform service, and its SHA-256 for auth.serviceTokenHashes."""
    token, digest = mint_service_token(args.service)
    emit(
        args,
        {"service": args.service, "token": token, "sha256": digest},
        [
            f"token of {args.service} (shown once; put it in the service's own Secret, key "
            f"service-token):",
            f"  {token}",
            f"its SHA-256 (chart value auth.serviceTokenHashes.{args.service}, not secret):",
            f"  {digest}",
        ],
    )
    return 0


RELATIVE = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """--since: a duration back from now (30m, 12h, 7d), a day (YYYY-MM-DD, UTC) or an ISO 8601
    time (UTC when it names no zone)."""
    now = now or datetime.now(UTC)
    match = RELATIVE.fullmatch(text.strip())
    if match:
        return now - timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: give a duration (30m, 12h, 7d), YYYY-MM-DD or an ISO 8601 time"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def audit_matches(event: identity_pb2.AuditEvent, actor: str, action: str, code: str) -> bool:
    """--actor: the caller's key id (mbk_ optional) or tenant; --action: part of the RPC name
    (case-insensitive, e.g. CreateTenant); --code: the outcome's status name."""
    if actor and actor.removeprefix("mbk_") != event.key_id and actor != event.tenant_id:
        return False
    if action and action.lower() not in event.method.lower():
        return False
    return not code or code.upper() == event.code


async def audit_list(args: argparse.Namespace, ctx: Context) -> int:
    request = identity_service_pb2.ListAuditEventsRequest(tenant_id=args.tenant)
    if args.since:
        request.since.FromDatetime(parse_since(args.since))
    filtered = bool(args.actor or args.audit_action or args.code)
    request.page_size = 200 if filtered else min(1000, args.limit)
    token = args.page_token
    found: list[identity_pb2.AuditEvent] = []
    while True:
        request.page_token = token
        page = await ctx.identity.ListAuditEvents(request)
        found += [
            e for e in page.events if audit_matches(e, args.actor, args.audit_action, args.code)
        ]
        token = page.next_page_token
        if not token or len(found) >= args.limit:
            break
    rows = [
        [
            when(e.at),
            e.service,
            e.method.rsplit("/", 1)[-1],
            e.code,
            e.key_id or "-",
            e.tenant_id or "-",
            enum_name(access_pb2.Role, e.role),
            e.target,
        ]
        for e in found
    ]
    lines = table(
        ["AT", "SERVICE", "ACTION", "CODE", "ACTOR", "TENANT", "ROLE", "TARGET"], rows, set()
    )
    if token:
        lines.append(f"more: --page-token {token}")
    emit(args, {"events": [message_dict(e) for e in found], "next_page_token": token}, lines)
    return 0
