"""ListSubmissions through the running stack: two tenants create submissions and each lists its
own only (gRPC and the CLI's `list`), newest first, in pages, filtered; a bad token is
INVALID_ARGUMENT."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from medbench.common.v1 import common_pb2
from medbench.identity.v1 import access_pb2
from medbench.submission.v1 import submission_pb2
from medbench_client.api import PartnerClient
from medbench_client.bank_files import read_jsonl
from medbench_devstack.services import ServiceStack
from tests.e2e.harness import eventually, lift_caps, load_pool, partner_client, partner_key

pytestmark = [pytest.mark.e2e]

BANK = Path(__file__).resolve().parents[2] / "services/rotator/src/rotator/sample_bank"
ROWS = list(read_jsonl(BANK / "items.jsonl"))
SCORING_OR_DONE = [
    submission_pb2.SUBMISSION_STATE_SCORING,
    submission_pb2.SUBMISSION_STATE_COMPLETED,
]


async def cli(stack: ServiceStack, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`medbench` as a partner runs it (gateway and key from the environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDBENCH_")}
    env |= {"MEDBENCH_GATEWAY": stack.address("gateway"), "MEDBENCH_API_KEY": key}
    return await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).with_name("medbench")), *args],
        env={**env, "XDG_CONFIG_HOME": "/nonexistent-medbench-config"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def listed(
    client: PartnerClient, page_size: int, **kw: Any
) -> list[submission_pb2.Submission]:
    """Every page, in order."""
    out: list[submission_pb2.Submission] = []
    token = ""
    while True:
        page = await client.list_submissions(page_size=page_size, page_token=token, **kw)
        assert len(page.submissions) <= page_size
        out.extend(page.submissions)
        token = page.next_page_token
        if not token:
            return out


async def test_each_tenant_lists_its_own_submissions_only(stack: ServiceStack) -> None:
    await load_pool(stack, ROWS, "list-pool")
    for tenant in ("list-a", "list-b"):
        await lift_caps(stack, tenant)  # more runs on one pool than a partner may make
    a, b = partner_client(stack, "list-a"), partner_client(stack, "list-b")
    made_a = [(await a.create(f"req-{n}", f"a-model-{n}")).submission for n in range(5)]
    # Tenant b reuses a request id of tenant a: another submission, never listed for a.
    made_b = [(await b.create(f"req-{n}", f"b-model-{n}")).submission for n in range(3)]
    ids_a = [s.submission_id for s in made_a]
    ids_b = [s.submission_id for s in made_b]
    assert not set(ids_a) & set(ids_b)

    # Paged (2 per page), newest first, each entry as GetSubmission shows it.
    got_a = await listed(a, 2)
    assert [s.submission_id for s in got_a] == list(reversed(ids_a))
    for s in got_a:
        assert s.tenant_id == "list-a"
        assert s == await a.get(s.submission_id)
    got_b = await listed(b, 2)
    assert [s.submission_id for s in got_b] == list(reversed(ids_b))
    # A viewer of tenant a sees the same list; a new tenant sees none.
    viewer = partner_client(stack, "list-a", access_pb2.ROLE_PARTNER_VIEWER)
    assert [s.submission_id for s in await listed(viewer, 50)] == list(reversed(ids_a))
    assert (await partner_client(stack, "list-c").list_submissions()).submissions == []

    # Filters: one submission of a ends its upload (final, no answers) and is scored.
    await a.upload(ids_a[1], [("only-final", [], True)])

    async def moved() -> list[submission_pb2.Submission] | None:
        found = await listed(a, 50, states=SCORING_OR_DONE)
        return found or None

    assert [s.submission_id for s in await eventually(moved, 60, "a SCORING entry")] == [ids_a[1]]
    awaiting = await listed(a, 50, states=[submission_pb2.SUBMISSION_STATE_AWAITING_ANSWERS])
    assert [s.submission_id for s in awaiting] == [i for i in reversed(ids_a) if i != ids_a[1]]
    assert len(await listed(a, 50, mode=common_pb2.SUBMISSION_MODE_UPLOAD)) == 5
    assert await listed(a, 50, mode=common_pb2.SUBMISSION_MODE_API) == []
    assert len(await listed(a, 50, track=common_pb2.TRACK_LLM)) == 5
    assert await listed(a, 50, track=common_pb2.TRACK_AGENT) == []
    since = made_a[2].created_at.ToDatetime(tzinfo=UTC)
    newer = await listed(a, 50, created_after=since)
    assert [s.submission_id for s in newer] == [
        s.submission_id for s in got_a if s.created_at.ToDatetime(tzinfo=UTC) >= since
    ]
    assert ids_a[2] in {s.submission_id for s in newer} and ids_a[0] not in {
        s.submission_id for s in newer
    }
    older = await listed(a, 50, created_before=since)
    assert {s.submission_id for s in older} | {s.submission_id for s in newer} == set(ids_a)

    # What a list cannot ask.
    for bad in (
        {"page_token": "garbage"},
        {"page_size": 501},
        {"states": [submission_pb2.SUBMISSION_STATE_UNSPECIFIED]},
        {"created_after": since, "created_before": since - timedelta(seconds=1)},
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await a.list_submissions(**bad)  # type: ignore[arg-type]
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad

    # The CLI: each tenant its own, newest first; filters; --limit; bad input is exit code 2.
    key_a, key_b = partner_key(stack, "list-a"), partner_key(stack, "list-b")
    done = await cli(stack, key_a, "list", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [s["submission_id"] for s in data["submissions"]] == list(reversed(ids_a))
    assert data["count"] == 5 and data["more"] is False
    assert {s["tenant_id"] for s in data["submissions"]} == {"list-a"}
    done = await cli(stack, key_b, "list", "--json", "--board", "upload", "--track", "llm")
    assert [s["submission_id"] for s in json.loads(done.stdout)["submissions"]] == list(
        reversed(ids_b)
    )
    done = await cli(stack, key_a, "list", "--json", "--limit", "2")
    data = json.loads(done.stdout)
    assert [s["submission_id"] for s in data["submissions"]] == list(reversed(ids_a))[:2]
    assert data["more"] is True
    done = await cli(stack, key_a, "list", "--json", "--state", "scoring", "--state", "completed")
    assert [s["submission_id"] for s in json.loads(done.stdout)["submissions"]] == [ids_a[1]]
    # Days of the first and the last submission (the same day unless the test spans midnight).
    days = sorted(s.created_at.ToDatetime(tzinfo=UTC).date().isoformat() for s in got_a)
    done = await cli(stack, key_a, "list", "--json", "--since", days[0], "--until", days[-1])
    assert len(json.loads(done.stdout)["submissions"]) == 5
    done = await cli(stack, key_a, "list", "--json", "--board", "api")
    assert json.loads(done.stdout)["submissions"] == []
    text = await cli(stack, key_a, "list")
    assert text.returncode == 0 and all(i in text.stdout for i in ids_a)
    assert not any(i in text.stdout for i in ids_b)
    for args in (("--since", "yesterday"), ("--limit", "0"), ("--state", "bogus")):
        done = await cli(stack, key_a, "list", *args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stdout == ""
