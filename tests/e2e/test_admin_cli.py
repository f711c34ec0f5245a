"""`medbench admin ...` (issue 24 item 6), the operator CLI, against one running stack: the
installed entry point as a subprocess, and in process where that is enough. A maintainer creates
a tenant and a key (the secret printed once, never listed), sets a quota and reads it back,
suspends and resumes the tenant, imports the bank, rotates a pool and lists the pools, lists
quarantined events, and finds each of these actions in the audit log (filters and paging); a
partner key is refused with exit 1 and PERMISSION_DENIED; bad usage exits 2."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from medbench.identity.v1 import (
    access_pb2,
    identity_pb2,
    identity_service_pb2,
    identity_service_pb2_grpc,
)
from medbench_client import admin_cli
from medbench_client.admin_cli import identity
from medbench_client.admin_cli.output import message_dict
from medbench_client.api import service_stub
from medbench_client.cli_config import KEY_PATTERN, ConfigError
from medbench_devstack.services import ServiceStack
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
from tests.e2e.harness import partner_key

pytestmark = [pytest.mark.e2e]

MEDBENCH = Path(sys.executable).parent / "medbench"
BANK = Path(__file__).resolve().parents[2] / "services/rotator/src/rotator/sample_bank/items.jsonl"
MAP = (
    "item_id=item_id,question=question,dataset=dataset,reference=reference,"
    "answer_format=answer_format,group_id=group_id,specialties=specialties"
)
TENANT = f"acme-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    with running_stack(servers, tmp_path_factory, "admincli") as services:
        yield services


@pytest.fixture(scope="module")
def config_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty XDG_CONFIG_HOME: no profile of the user's own config file is read."""
    return tmp_path_factory.mktemp("xdg")


def addresses(stack: ServiceStack) -> list[str]:
    return [
        "--gateway",
        stack.address("gateway"),
        "--rotator",
        stack.address("rotator"),
        "--judge-scorer",
        stack.address("judge_scorer"),
    ]


def medbench(
    stack: ServiceStack, config_home: Path, *args: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed `medbench admin ...`, its key from MEDBENCH_API_KEY (the maintainer's)."""
    env = {
        "PATH": str(MEDBENCH.parent),
        "XDG_CONFIG_HOME": str(config_home),
        "MEDBENCH_API_KEY": key or stack.admin_key,
    }
    return subprocess.run(
        [str(MEDBENCH), "admin", *args, *addresses(stack)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def admin(
    stack: ServiceStack, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """`medbench admin ...` in process (exit code, stdout, stderr), with the maintainer key."""
    capsys.readouterr()
    code = admin_cli.main([*args, *addresses(stack), "--key", stack.admin_key])
    out, err = capsys.readouterr()
    return code, out, err


def ok_json(stack: ServiceStack, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = admin(stack, capsys, *args, "--json")
    assert code == 0, (args, err)
    return json.loads(out)


def whoami(stack: ServiceStack, key: str) -> identity_service_pb2.WhoAmIResponse:
    with grpc.insecure_channel(stack.address("gateway")) as chan:
        stub = service_stub(identity_service_pb2_grpc.IdentityServiceStub, chan)
        response: identity_service_pb2.WhoAmIResponse = stub.WhoAmI(
            identity_service_pb2.WhoAmIRequest(),
            metadata=(("authorization", f"Bearer {key}"),),
        )
        return response


@pytest.fixture(scope="module")
def created_key(stack: ServiceStack, config_home: Path) -> dict[str, Any]:
    """A tenant created and a partner key made for it, both through the installed CLI."""
    made = medbench(stack, config_home, "tenants", "create", TENANT, "--display-name", "Acme")
    assert made.returncode == 0, made.stderr
    assert f"tenant {TENANT} (Acme)" in made.stdout
    done = medbench(
        stack, config_home, "keys", "create", "--tenant", TENANT, "--role", "partner-submitter",
        "--name", "ci pipeline", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    key: dict[str, Any] = json.loads(done.stdout)
    return key


def test_key_created_once_and_never_listed(
    stack: ServiceStack, config_home: Path, created_key: dict[str, Any]
) -> None:
    secret = created_key["secret"]
    assert KEY_PATTERN.fullmatch(secret)
    assert created_key["tenant_id"] == TENANT and created_key["role"] == "partner_submitter"
    prefix = f"mbk_{created_key['key_id']}_"
    assert secret.startswith(prefix)
    # The key works at the gateway as the tenant's.
    seen = whoami(stack, secret)
    assert (seen.tenant_id, seen.key_id) == (TENANT, created_key["key_id"])
    # Listed (table and JSON) by its id, never with its secret.
    for extra in ((), ("--json",)):
        listed = medbench(stack, config_home, "keys", "list", "--tenant", TENANT, *extra)
        assert listed.returncode == 0, listed.stderr
        assert created_key["key_id"] in listed.stdout
        assert secret.removeprefix(prefix) not in listed.stdout + listed.stderr
    keys = json.loads(listed.stdout)["keys"]
    assert [k["key_id"] for k in keys] == [created_key["key_id"]]
    assert "secret" not in keys[0]


def test_tenants_list_show_and_already_exists(
    stack: ServiceStack, capsys: pytest.CaptureFixture[str], created_key: dict[str, Any]
) -> None:
    listed = ok_json(stack, capsys, "tenants", "list")
    assert TENANT in [t["tenant_id"] for t in listed["tenants"]]
    assert listed["next_page_token"] == ""
    shown = ok_json(stack, capsys, "tenants", "show", TENANT)
    assert shown["display_name"] == "Acme" and shown["disabled"] is False
    assert shown["created_at"].endswith("Z")
    code, out, err = admin(stack, capsys, "tenants", "create", TENANT)
    assert (code, out) == (1, "")
    assert err.startswith("medbench: ALREADY_EXISTS: ")


def test_quota_set_and_read_back(
    stack: ServiceStack, capsys: pytest.CaptureFixture[str], created_key: dict[str, Any]
) -> None:
    before = ok_json(stack, capsys, "quotas", "show", TENANT)["quotas"]
    done = ok_json(
        stack, capsys, "quotas", "set", TENANT, "--submissions-per-day", "7",
        "--hidden-per-day", "4",
    )  # fmt: skip
    assert done["quotas"]["submissions_per_day"] == 7
    read = ok_json(stack, capsys, "quotas", "show", TENANT)
    assert read["tenant_id"] == TENANT
    assert read["quotas"]["submissions_per_day"] == 7 and read["quotas"]["hidden_per_day"] == 4
    # Quotas not named keep their values.
    assert read["quotas"]["items_per_month"] == before["items_per_month"]
    assert read["submissions_today"] == 0
    code, out, _ = admin(stack, capsys, "quotas", "show", TENANT)
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("submissions_per_day"))
    assert row.split() == ["submissions_per_day", "7", "0"]
    # Naming none is bad usage.
    code, _, err = admin(stack, capsys, "quotas", "set", TENANT)
    assert code == 2 and "name at least one quota" in err


def key_accepted(stack: ServiceStack, key: str, accepted: bool, timeout_s: float = 20) -> None:
    """Waits until the gateway accepts (or refuses) key: it caches key records for
    MEDBENCH_AUTH__CACHE_TTL_S (5 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            whoami(stack, key)
            now = True
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc
            assert "is disabled" in str(exc.details())
            now = False
        if now == accepted:
            return
        assert time.monotonic() < deadline, f"key still {'refused' if accepted else 'accepted'}"
        time.sleep(0.2)


def test_suspend_and_resume(
    stack: ServiceStack, capsys: pytest.CaptureFixture[str], created_key: dict[str, Any]
) -> None:
    assert ok_json(stack, capsys, "tenants", "suspend", TENANT)["disabled"] is True
    key_accepted(stack, created_key["secret"], False)
    code, out, _ = admin(stack, capsys, "tenants", "resume", TENANT)
    assert (code, out) == (0, f"tenant {TENANT} resumed: its keys work again\n")
    key_accepted(stack, created_key["secret"], True)
    assert ok_json(stack, capsys, "tenants", "show", TENANT)["disabled"] is False


def test_partner_key_refused(
    stack: ServiceStack, config_home: Path, created_key: dict[str, Any]
) -> None:
    partner = partner_key(stack, f"{TENANT}-p")
    for args in (("tenants", "list", "--json"), ("quotas", "set", TENANT, "--hidden-per-day", "9")):
        refused = medbench(stack, config_home, *args, key=partner)
        assert refused.returncode == 1, refused.stderr
        assert refused.stdout == ""
        assert refused.stderr.startswith("medbench: PERMISSION_DENIED: ")


@pytest.fixture(scope="module")
def rotated(stack: ServiceStack, config_home: Path) -> dict[str, Any]:
    """The sample bank imported and the LLM upload board's pool rotated, through the CLI."""
    imported = medbench(stack, config_home, "import", "jsonl", str(BANK), "--map", MAP, "--json")
    assert imported.returncode == 0, imported.stderr
    report = json.loads(imported.stdout)
    assert report["server"]["imported"] == report["rows"] == 60
    assert report["server"]["rejected"] == [] and report["unreadable"] == []
    before = medbench(stack, config_home, "pools", "list")
    assert before.returncode == 0, before.stderr
    assert "llm upload: no pool" in before.stdout
    done = medbench(
        stack, config_home, "rotate", "--track", "llm", "--board", "upload", "--cycle", "c1",
        "--groups", "2", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pool: dict[str, Any] = json.loads(done.stdout)["pool"]
    return pool


def test_import_rotate_and_pools(
    stack: ServiceStack, capsys: pytest.CaptureFixture[str], rotated: dict[str, Any]
) -> None:
    datasets = ok_json(stack, capsys, "datasets", "--track", "llm")
    banked = {d["dataset"]: d["bank_items"] for d in datasets["datasets"]}
    assert banked["MedExam"] > 0
    pool = rotated
    assert pool["pool_id"] == "llm-upload-c1" and pool["current"] is True
    assert pool["track"] == "llm" and pool["board"] == "upload" and pool["item_count"] > 0
    listed = ok_json(stack, capsys, "pools", "list", "--track", "llm")
    assert [(p["pool_id"], p["current"]) for p in listed["pools"]] == [("llm-upload-c1", True)]
    assert listed["without_pool"] == [{"track": "llm", "board": "api"}]
    code, out, _ = admin(stack, capsys, "pools", "list", "--track", "llm")
    assert code == 0 and "llm-upload-c1  llm    upload" in out
    shown = ok_json(stack, capsys, "pools", "show", "llm-upload-c1")
    assert sum(d["items"] for d in shown["datasets"]) == pool["item_count"]
    pooled = ok_json(stack, capsys, "datasets", "--pool", "llm-upload-c1")
    assert pooled["pool_id"] == "llm-upload-c1" and pooled["registry_version"] == "1"
    # The board's current pool cannot be disclosed: refused with the rotator's reason.
    code, out, err = admin(stack, capsys, "disclose", "llm-upload-c1")
    assert (code, out) == (1, "")
    assert err.startswith("medbench: FAILED_PRECONDITION: ")


def test_registry(stack: ServiceStack, capsys: pytest.CaptureFixture[str]) -> None:
    versions = ok_json(stack, capsys, "registry", "versions")
    assert versions["current"] >= 1 and versions["versions"][0]["current"] is True
    shown = ok_json(stack, capsys, "registry", "show")
    assert "MedExam" in [d["name"] for d in shown["datasets"]]
    one = ok_json(stack, capsys, "registry", "show", "--dataset", "MedExam")
    assert one["name"] == "MedExam"


def test_quarantine_and_calibration(
    stack: ServiceStack, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = ok_json(stack, capsys, "quarantine", "list")
    assert listed == {"held": 0, "events": [], "next_page_token": ""}
    code, out, _ = admin(stack, capsys, "quarantine", "list")
    assert code == 0 and out.splitlines()[0] == "0 held"
    code, _, err = admin(stack, capsys, "quarantine", "retry", "q_" + "0" * 24)
    assert code == 1 and err.startswith("medbench: ")
    code, _, err = admin(stack, capsys, "calibration", "report", "no-such-rubric")
    assert code == 1 and err.startswith("medbench: NOT_FOUND: ")


def test_audit_log_shows_the_actions(
    stack: ServiceStack,
    config_home: Path,
    capsys: pytest.CaptureFixture[str],
    created_key: dict[str, Any],
    rotated: dict[str, Any],
) -> None:
    # Actions of its own (the module's other tests may run or not): a quota set, a refusal.
    test_quota_set_and_read_back(stack, capsys, created_key)
    test_partner_key_refused(stack, config_home, created_key)
    events = ok_json(stack, capsys, "audit", "--since", "1h", "--limit", "1000")["events"]
    seen = {(e["method"].rsplit("/", 1)[-1], e["code"]) for e in events}
    for action in ("CreateTenant", "CreateApiKey", "UpdateTenant", "ImportTasks", "RotatePool"):
        assert (action, "OK") in seen, (action, seen)
    # The refused partner calls are there too, with their outcome.
    assert ("UpdateTenant", "PERMISSION_DENIED") in seen
    # Filters: by action, by actor (the maintainer's key id), by outcome.
    created = ok_json(stack, capsys, "audit", "--action", "createtenant")["events"]
    assert created and all(e["method"].endswith("/CreateTenant") for e in created)
    assert any(TENANT in e["target"] for e in created), created
    actor = created[0]["key_id"]
    mine = ok_json(stack, capsys, "audit", "--actor", actor)["events"]
    assert mine and {e["key_id"] for e in mine} == {actor}
    denied = ok_json(stack, capsys, "audit", "--code", "permission_denied")["events"]
    assert denied and {e["code"] for e in denied} == {"PERMISSION_DENIED"}
    # Paging: two pages of two, newest first, no event twice.
    first = ok_json(stack, capsys, "audit", "--limit", "2")
    assert len(first["events"]) == 2 and first["next_page_token"]
    second = ok_json(
        stack, capsys, "audit", "--limit", "2", "--page-token", first["next_page_token"]
    )
    ids = [e["event_id"] for e in first["events"] + second["events"]]
    assert len(set(ids)) == 4
    stamps = [e["at"] for e in first["events"] + second["events"]]
    assert stamps == sorted(stamps, reverse=True)
    code, out, _ = admin(stack, capsys, "audit", "--action", "CreateApiKey")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["AT", "SERVICE", "ACTION"]
    assert "CreateApiKey" in out


def test_usage_errors(stack: ServiceStack, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as bad:
        admin_cli.main(["tenants", "frobnicate"])
    assert bad.value.code == 2
    code = admin_cli.main(["datasets", "--gateway", stack.address("gateway"), "--key", "k"])
    assert code == 2
    assert "no rotator address: pass --rotator HOST:PORT or set MEDBENCH_ROTATOR" in (
        capsys.readouterr().err
    )
    code, _, err = admin(stack, capsys, "keys", "create", "--tenant", TENANT, "--role", "root")
    assert code == 2 and "unknown role 'root'" in err
    roles = ok_json(stack, capsys, "roles")["roles"]
    by_role = {r["role"]: r["rpcs"] for r in roles}
    assert "IdentityService.CreateTenant" in by_role["maintainer"]
    assert "IdentityService.CreateTenant" not in by_role["partner_submitter"]


def test_since_and_json_shapes_without_a_stack() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert identity.parse_since("90m", now) == datetime(2026, 12, 7, 10, 30, tzinfo=UTC)
    assert identity.parse_since("7d", now) == datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert identity.parse_since("2026-12-01", now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert identity.parse_since("2026-12-01T08:00:00+01:00", now) == datetime(
        2026, 12, 1, 7, 0, tzinfo=UTC
    )
    with pytest.raises(ConfigError):
        identity.parse_since("yesterday", now)
    key = identity_pb2.ApiKey(key_id="ab", tenant_id="t", role=access_pb2.ROLE_PARTNER_VIEWER)
    key.created_at.FromDatetime(now)
    shown = message_dict(key)
    assert shown["role"] == "partner_viewer" and shown["created_at"] == "2026-12-07T12:00:00Z"
    assert shown["revoked_at"] is None and shown["name"] == ""
    assert message_dict(identity_pb2.Quotas(items_per_month=5))["items_per_month"] == 5
