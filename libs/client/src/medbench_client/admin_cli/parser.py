"""The operator CLI's command line: `medbench admin GROUP [ACTION] ...` (argparse), and the
table that maps a command to the function that runs it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

from medbench_client.admin_cli import bank, identity, judging, pools, quarantine
from medbench_client.admin_cli.context import Context
from medbench_client.bank_files import TRACKS
from medbench_client.cli import BOARDS
from medbench_runtime.auth import PLATFORM_SERVICES

EXIT_USAGE = 2

Command = Callable[[argparse.Namespace, Context], Awaitable[int]]

# (group, action) -> function; action "" for a group without actions.
COMMANDS: dict[tuple[str, str], Command] = {
    ("tenants", "create"): identity.tenants_create,
    ("tenants", "list"): identity.tenants_list,
    ("tenants", "show"): identity.tenants_show,
    ("tenants", "update"): identity.tenants_update,
    ("tenants", "suspend"): identity.tenants_suspend,
    ("tenants", "resume"): identity.tenants_resume,
    ("keys", "create"): identity.keys_create,
    ("keys", "list"): identity.keys_list,
    ("keys", "revoke"): identity.keys_revoke,
    ("keys", "rotate"): identity.keys_rotate,
    ("roles", ""): identity.roles,
    ("service-token", ""): identity.service_token,
    ("quotas", "show"): identity.quotas_show,
    ("quotas", "set"): identity.quotas_set,
    ("datasets", ""): bank.datasets,
    ("registry", "show"): bank.registry_show,
    ("registry", "put"): bank.registry_put,
    ("registry", "versions"): bank.registry_versions,
    ("import", "medbench"): bank.import_files,
    ("import", "jsonl"): bank.import_files,
    ("import", "csv"): bank.import_files,
    ("rotate", ""): pools.rotate,
    ("pools", "list"): pools.pools_list,
    ("pools", "show"): pools.pools_show,
    ("disclose", ""): pools.disclose,
    ("calibration", "report"): judging.calibration_report,
    ("calibration", "calibrate"): judging.calibrate,
    ("judging-cost", ""): judging.judging_cost,
    ("quarantine", "list"): quarantine.quarantine_list,
    ("quarantine", "retry"): quarantine.quarantine_retry,
    ("quarantine", "drop"): quarantine.quarantine_drop,
    ("probing", ""): quarantine.probing_list,
    ("audit", ""): identity.audit_list,
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"medbench: INVALID_ARGUMENT: {message}\n")


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Connection and output options, accepted before and after a command's name."""
    default: Any = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("connection and output")
    for flag, help_text in (
        ("--gateway", "gateway HOST:PORT (else MEDBENCH_GATEWAY, else the profile)"),
        ("--rotator", "rotator HOST:PORT (else MEDBENCH_ROTATOR): bank, registry, pools"),
        ("--judge-scorer", "judge scorer HOST:PORT (else MEDBENCH_JUDGE_SCORER): judging"),
        ("--key", "maintainer or ops API key (else MEDBENCH_API_KEY, else the profile)"),
        ("--profile", "config file profile (else MEDBENCH_PROFILE, else the default one)"),
        ("--ca-file", "CA certificates (PEM) to verify the servers with (implies --tls)"),
    ):
        group.add_argument(flag, default=default, help=help_text)
    group.add_argument(
        "--tls", action=argparse.BooleanOptionalAction, default=default, help="connect with TLS"
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print one JSON document on stdout (and nothing else)",
    )


def _quota_flags(parser: argparse.ArgumentParser) -> None:
    for name in identity.QUOTAS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=0)


def build_parser(prog: str = "medbench admin") -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Operator commands: tenants, keys, roles, quotas, the task bank and its "
        "registry, pools, calibration, quarantined events, probing findings, the audit log.",
        epilog="Exit codes: 0 ok, 1 refused (the gRPC status and message on stderr) or an "
        "import with problems, 2 bad usage.",
    )
    _common(parser, suppress=False)
    groups = parser.add_subparsers(
        dest="group", required=True, metavar="GROUP", parser_class=_Parser
    )

    def group(name: str, text: str) -> argparse._SubParsersAction[Any]:
        sub = groups.add_parser(name, help=text, description=text)
        _common(sub, suppress=True)
        actions: argparse._SubParsersAction[Any] = sub.add_subparsers(
            dest="action", required=True, metavar="ACTION", parser_class=_Parser
        )
        return actions

    def action(
        actions: argparse._SubParsersAction[Any], name: str, text: str
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = actions.add_parser(name, help=text, description=text)
        _common(sub, suppress=True)
        return sub

    def single(name: str, text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = groups.add_parser(name, help=text, description=text)
        _common(sub, suppress=True)
        sub.set_defaults(action="")
        return sub

    tenants = group("tenants", "partner institutions (the gateway's IdentityService)")
    create = action(tenants, "create", "create a tenant (ALREADY_EXISTS when taken)")
    create.add_argument("tenant", help="1-63 characters of [a-z0-9-]")
    create.add_argument("--display-name", default="")
    create.add_argument("--certificate-subject", action="append", help="mTLS subject CN (repeat)")
    _quota_flags(create)
    listing = action(tenants, "list", "tenants by id")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--page-token", default="", help="resume after a previous listing")
    action(tenants, "show", "one tenant with its effective quotas").add_argument("tenant")
    update = action(tenants, "update", "change a tenant's name or certificate subjects")
    update.add_argument("tenant")
    update.add_argument("--display-name")
    update.add_argument("--certificate-subject", action="append", help="replaces the list")
    action(tenants, "suspend", "disable a tenant: its keys are refused").add_argument("tenant")
    action(tenants, "resume", "enable a suspended tenant again").add_argument("tenant")

    keys = group("keys", "API keys (the secret is printed once, at creation or rotation)")
    create = action(keys, "create", "create a key for a tenant; prints its secret once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--role", required=True, help=", ".join(identity.KEY_ROLES))
    create.add_argument("--name", default="", help="free label, e.g. 'ci pipeline'")
    create.add_argument("--ttl-days", type=int, default=0, help="1-730 (default 365)")
    listing = action(keys, "list", "a tenant's keys (never secrets)")
    listing.add_argument("--tenant", required=True)
    listing.add_argument("--all", action="store_true", help="revoked and expired keys too")
    action(keys, "revoke", "revoke a key at once (idempotent)").add_argument("key_id")
    rot = action(keys, "rotate", "replace a key by a new one (same tenant, role, name)")
    rot.add_argument("key_id")
    rot.add_argument("--ttl-days", type=int, default=0)

    single("roles", "every key role and service token and the RPCs it may call (from the protos)")
    token = single("service-token", "a new token for one platform service and its SHA-256")
    token.add_argument("service", choices=PLATFORM_SERVICES)

    quotas = group("quotas", "a tenant's limits and usage")
    action(quotas, "show", "limits in effect and what is used").add_argument("tenant")
    qset = action(quotas, "set", "override limits (flags not given keep their values)")
    qset.add_argument("tenant")
    _quota_flags(qset)

    ds = single("datasets", "the registry's datasets with bank counts (rotator)")
    ds.add_argument("--track", choices=sorted(TRACKS))
    ds.add_argument("--version", type=int, default=0, help="registry version (current)")
    ds.add_argument("--pool", default="", help="a pool's datasets, under its version")

    registry = group("registry", "the dataset registry's versions (rotator)")
    show = action(registry, "show", "a registry version (the current one)")
    show.add_argument("--version", type=int, default=0)
    show.add_argument("--dataset", default="", help="one dataset, ready to edit and put")
    put = action(registry, "put", "add or revise a dataset: makes the next version (audited)")
    put.add_argument("file", type=Path, help="one dataset as JSON (a registry 'datasets' entry)")
    put.add_argument("--revises", type=int, required=True, help="the version you read")
    put.add_argument("--note", default="", help="why (kept with the version)")
    versions = action(registry, "versions", "registry versions, newest first")
    versions.add_argument("--limit", type=int, default=50)

    imports = group("import", "import item files into the task bank (rotator)")
    for fmt, text in (
        ("medbench", "MedBench upload-format pool files (answers from --gold-dir)"),
        ("jsonl", "JSONL files with a field mapping (--map)"),
        ("csv", "CSV files with a field mapping (--map)"),
    ):
        imp = action(imports, fmt, text)
        imp.set_defaults(format=fmt)
        imp.add_argument("files", nargs="+", type=Path)
        if fmt == "medbench":
            imp.add_argument("--gold-dir", type=Path, help="gold files of the same names")
        else:
            imp.add_argument(
                "--map", required=True, help="e.g. item_id=id,question=q,reference=a,dataset=:X"
            )
        imp.add_argument("--images-dir", type=Path)
        imp.add_argument("--allow-missing-images", action="store_true")
        imp.add_argument("--provenance", default="")
        imp.add_argument("--licence", default="")

    rotate = single("rotate", "build the next pool of a track's board and make it current")
    rotate.add_argument("--track", choices=sorted(TRACKS), required=True)
    rotate.add_argument("--board", choices=sorted(BOARDS), required=True)
    rotate.add_argument("--cycle", required=True, help="e.g. 2026-11")
    rotate.add_argument("--seed", type=int, default=0)
    rotate.add_argument("--groups", type=int, default=0, help="groups per dataset (30)")
    rotate.add_argument("--exposure-cap", type=int, default=0, help="(3)")
    rotate.add_argument("--anchors", type=int, default=0, help="anchors per dataset (3)")
    rotate.add_argument("--dataset", action="append", help="only these datasets (repeat)")

    pool_group = group("pools", "pools (rotator)")
    pl = action(pool_group, "list", "the current pool of every track's boards")
    pl.add_argument("--track", choices=sorted(TRACKS))
    action(pool_group, "show", "one pool with its datasets").add_argument("pool_id")

    single(
        "disclose", "disclose a pool no board serves (release results, retire groups)"
    ).add_argument("pool_id")

    cal = group("calibration", "the judge's calibration against physicians (judge scorer)")
    rep = action(cal, "report", "each rubric's calibration report")
    rep.add_argument("rubric", nargs="+")
    rep.add_argument("--version", type=int, default=0, help="0: the latest")
    measure = action(cal, "calibrate", "measure a rubric's calibration again (audited)")
    measure.add_argument("rubric")
    measure.add_argument("--version", type=int, default=0, help="0: the latest")

    cost = single("judging-cost", "what judging submissions cost: tokens, calls, cache hits, GPU-s")
    cost.add_argument("submission_id", nargs="+")

    held = group("quarantine", "events held for an operator (gateway)")
    ql = action(held, "list", "entries, newest first")
    ql.add_argument("--status", choices=["held", "retried", "dropped"], default="")
    ql.add_argument("--service", default="")
    ql.add_argument("--limit", type=int, default=200)
    ql.add_argument("--page-token", default="")
    action(held, "retry", "send one held entry on again (audited)").add_argument("entry")
    action(held, "drop", "drop one held entry (audited)").add_argument("entry")

    probing = single("probing", "probing findings: a tenant's near-identical runs on one pool")
    probing.add_argument("--tenant", default="")
    probing.add_argument("--pool", default="")
    probing.add_argument("--limit", type=int, default=200)

    audit = single("audit", "the audit log, newest first (gateway)")
    audit.add_argument("--tenant", default="", help="the caller's tenant")
    audit.add_argument("--actor", default="", help="the caller's key id (or tenant)")
    audit.add_argument(
        "--action", dest="audit_action", default="", help="part of the RPC name, e.g. CreateTenant"
    )
    audit.add_argument("--code", default="", help="the outcome, e.g. PERMISSION_DENIED")
    audit.add_argument("--since", default="", help="30m, 12h, 7d, YYYY-MM-DD or an ISO time")
    audit.add_argument(
        "--limit", type=int, default=100, help="events at most (a page is never split)"
    )
    audit.add_argument("--page-token", default="", help="resume where a listing stopped")
    return parser
