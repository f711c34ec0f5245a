"""Commands about the caller: `configure` (the profile), `whoami` (the key) and `usage` (quotas)."""

from __future__ import annotations

import argparse
import os
import sys

from medbench.identity.v1 import access_pb2, identity_service_pb2
from medbench_client import cli_config
from medbench_client.partner_cli.errors import EXIT_OK
from medbench_client.partner_cli.output import emit, table, track_name
from medbench_client.partner_cli.session import Session


def _read_key_from_stdin() -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("API key: ")
    return sys.stdin.readline()


def configure(args: argparse.Namespace) -> int:
    """Writes the given settings into a profile of the config file (mode 0600)."""
    env = os.environ
    path = cli_config.config_path(env)
    name = args.profile or env.get(cli_config.ENV_PROFILE) or ""
    if not name:
        name = str(cli_config.load(path).get("default_profile") or cli_config.DEFAULT_PROFILE)
    key = args.key
    if key == "-":
        key = _read_key_from_stdin()
    elif (
        key is None
        and args.gateway is None
        and args.tls is None
        and args.ca_file is None
        and sys.stdin.isatty()
    ):
        entered = _read_key_from_stdin().strip()
        key = entered or None  # empty: keep the stored key
    profile = cli_config.save_profile(
        path,
        name,
        gateway=args.gateway,
        api_key=key,
        tls=args.tls,
        ca_file=args.ca_file,
        make_default=args.default,
    )
    data = cli_config.load(path)
    shown = {
        "config_file": str(path),
        "profile": name,
        "default_profile": data.get("default_profile"),
        "gateway": profile.get("gateway", ""),
        "key_id": cli_config.key_id(profile.get("api_key", "")),
        "tls": bool(profile.get("tls", False)),
        "ca_file": profile.get("ca_file", ""),
    }
    emit(
        args,
        shown,
        [
            f"wrote profile {name!r} to {path} (mode 0600)",
            f"  gateway  {shown['gateway'] or '(not set)'}",
            f"  key      {shown['key_id'] or '(not set)'}",
            "check it with: medbench whoami" + (f" --profile {name}" if args.profile else ""),
        ],
    )
    return EXIT_OK


async def whoami(args: argparse.Namespace, s: Session) -> int:
    me = await s.identity.WhoAmI(identity_service_pb2.WhoAmIRequest())
    role = access_pb2.Role.Name(me.role).removeprefix("ROLE_").lower()
    sources = s.settings.sources
    emit(
        args,
        {
            "key_id": f"mbk_{me.key_id}",
            "tenant_id": me.tenant_id,
            "role": role,
            "gateway": s.settings.gateway,
            "profile": s.settings.profile,
            "sources": sources,
        },
        [
            f"key      mbk_{me.key_id}  (from {sources.get('api_key', '?')})",
            f"tenant   {me.tenant_id}",
            f"role     {role}",
            f"gateway  {s.settings.gateway}  (from {sources.get('gateway', '?')})",
        ],
    )
    return EXIT_OK


async def usage(args: argparse.Namespace, s: Session) -> int:
    u = await s.identity.GetUsage(identity_service_pb2.GetUsageRequest())
    q = u.quotas
    data = {
        "tenant_id": u.tenant_id,
        "quotas": {
            "submissions_per_day": q.submissions_per_day,
            "concurrent_submissions": q.concurrent_submissions,
            "items_per_month": q.items_per_month,
            "official_per_cycle": q.official_per_cycle,
            "hidden_per_day": q.hidden_per_day,
            "hidden_per_cycle": q.hidden_per_cycle,
        },
        "submissions_today": u.submissions_today,
        "active_submissions": u.active_submissions,
        "items_this_month": u.items_this_month,
        "pools": [
            {
                "pool_id": p.pool_id,
                "track": track_name(p.track),
                "board": p.board,
                "official_runs": p.official_runs,
                "hidden_runs_today": p.hidden_runs_today,
                "hidden_runs": p.hidden_runs,
            }
            for p in u.pools
        ],
    }
    rows = [
        ["submissions today (UTC)", str(u.submissions_today), str(q.submissions_per_day)],
        ["submissions in progress", str(u.active_submissions), str(q.concurrent_submissions)],
        ["items this month (UTC)", str(u.items_this_month), str(q.items_per_month)],
    ]
    # The caps per pool, on each board's current pool: official runs on the API board;
    # upload runs and self-test runs (hidden-pool runs) on either.
    for p in u.pools:
        where = f"{track_name(p.track)} {p.board} pool {p.pool_id}"
        if p.board == "api":
            rows.append(
                [f"official runs, {where}", str(p.official_runs), str(q.official_per_cycle)]
            )
        rows.append(
            [f"hidden-pool runs today, {where}", str(p.hidden_runs_today), str(q.hidden_per_day)]
        )
        rows.append([f"hidden-pool runs, {where}", str(p.hidden_runs), str(q.hidden_per_cycle)])
    emit(
        args,
        data,
        [f"tenant {u.tenant_id}", *table(["quota", "used", "limit"], rows, right={1, 2})],
    )
    return EXIT_OK
