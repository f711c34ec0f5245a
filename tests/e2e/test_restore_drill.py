"""The restore drill (README "Production topology, backup and restore"): back up the platform's
MongoDB state mid-cycle, restore it into a fresh Mongo-wire server, restart the services there
(same Kafka): every report, the board and the audit log are as they were, the submission that
was in flight finishes with the right report, and nothing is counted twice."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from medbench.common.v1 import common_pb2
from medbench.identity.v1 import access_pb2, identity_service_pb2, identity_service_pb2_grpc
from medbench.leaderboard.v1 import leaderboard_service_pb2 as lb
from medbench.leaderboard.v1 import leaderboard_service_pb2_grpc
from medbench.submission.v1 import submission_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client.api import PartnerClient, channel
from medbench_devstack import backup
from medbench_devstack.mongo import MongoWireServer
from medbench_devstack.services import SECRETS_KEYS, ServiceStack
from tests.conftest import Servers
from tests.e2e.harness import Evaluation, eventually, exact_report, load_pool, partner_key
from tests.e2e.test_evaluation import BASELINE, QUESTIONS, ROWS, expected_report
from tests.e2e.test_leaderboard import sample_registry

pytestmark = [pytest.mark.e2e]

VIEWER = access_pb2.ROLE_PARTNER_VIEWER
POOL = "drill-pool"
# Answers uploaded before the backup by the submission left in flight: 3 of 6 batches.
BATCH = 10


def new_stack(
    work: Path, mongo_uri: str, database: str, kafka: str, prefix: str, env: dict[str, str]
) -> ServiceStack:
    stack = ServiceStack(work, mongo_uri, database, kafka, prefix, extra_env=env)
    stack.start(timeout_s=120)
    return stack


def identity(stack: ServiceStack) -> Any:
    return identity_service_pb2_grpc.IdentityServiceStub(
        channel(stack.address("gateway"), stack.admin_key)
    )


async def audit_log(stack: ServiceStack) -> list[Any]:
    """Every audit event, newest first (paged)."""
    events: list[Any] = []
    token = ""
    while True:
        page = await identity(stack).ListAuditEvents(
            identity_service_pb2.ListAuditEventsRequest(page_size=1000, page_token=token)
        )
        events += page.events
        token = page.next_page_token
        if not token:
            return events


async def board(stack: ServiceStack, viewer_key: str) -> lb.ListLeaderboardResponse:
    stub = leaderboard_service_pb2_grpc.LeaderboardServiceStub(
        channel(stack.address("gateway"), viewer_key)
    )
    return await stub.ListLeaderboard(
        lb.ListLeaderboardRequest(track=common_pb2.TRACK_LLM, board=taskpool_pb2.BOARD_UPLOAD)
    )


async def usage(stack: ServiceStack, tenant: str) -> tuple[int, int]:
    got = await identity(stack).GetUsage(identity_service_pb2.GetUsageRequest(tenant_id=tenant))
    return got.submissions_today, got.items_this_month


async def test_a_backup_taken_mid_cycle_restores_into_a_fresh_server(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = tmp_path_factory.mktemp("drill")
    token = uuid.uuid4().hex[:8]
    database, prefix = f"drill_{token}", f"drill{token}."
    env = {"MEDBENCH_REGISTRY_PATH": str(sample_registry(work))}
    before = new_stack(
        work / "before", servers.mongo_uri, database, servers.kafka_bootstrap, prefix, env
    )
    try:
        await load_pool(before, ROWS, POOL)
        done = Evaluation(
            before, "drill-a", "done", BASELINE, batch_size=BATCH, questions=QUESTIONS
        )
        await done.create()
        for batch in done.batches(await done.prompts()):
            await done.upload_batch(batch)
        await done.wait_completed()
        assert await done.partner().publish(done.submission_id)
        viewer = partner_key(before, "drill-reader", VIEWER)
        board_before = await eventually(
            lambda: board(before, viewer),
            30,
            "the published entry on the board",
            describe=lambda: "board empty",
        )
        assert [e.submission_id for e in board_before.entries] == [done.submission_id]
        # Audited refusals: a viewer key may not create; a probe of an unknown id.
        viewer_client = PartnerClient(channel(before.address("gateway"), viewer))
        for call in (viewer_client.create("refused", "m"), done.partner().get("sub_nosuchid")):
            with pytest.raises(Exception, match="PERMISSION_DENIED|NOT_FOUND"):
                await call
        # The submission left in flight: half its answers uploaded, scoring under way.
        inflight = Evaluation(
            before, "drill-b", "inflight", BASELINE, batch_size=BATCH, questions=QUESTIONS
        )
        await inflight.create()
        batches = inflight.batches(await inflight.prompts())
        assert len(batches) >= 4, len(batches)
        half = len(batches) // 2
        for batch in batches[:half]:
            await inflight.upload_batch(batch)
        seen = await inflight.partner().get(inflight.submission_id)
        first_report = await exact_report(before, "drill-a", done.submission_id)
        reports_before = {done.submission_id: first_report}
        audit_before = await audit_log(before)
        usage_before = {t: await usage(before, t) for t in ("drill-a", "drill-b")}
    finally:
        before.stop()
    assert seen.state == submission_pb2.SUBMISSION_STATE_AWAITING_ANSWERS, seen
    assert seen.progress.answered_items == half * BATCH, seen.progress
    assert any(e.code == "PERMISSION_DENIED" for e in audit_before)
    assert any(e.code == "NOT_FOUND" and "sub_nosuchid" in e.target for e in audit_before)

    # Back up (services stopped), restore into a fresh server, check it holds the dump.
    dump_dir = work / "dump"
    names = backup.database_names(database)
    dumped = backup.dump(servers.mongo_uri, names, dump_dir, servers.kafka_bootstrap, prefix)
    manifest = backup.read_manifest(dump_dir)
    offsets = manifest["kafka"]["consumer_offsets"]
    assert {g.removeprefix(prefix) for g in offsets} >= {"aggregator", "metric-scorer"}, offsets
    fresh = MongoWireServer(work / "fresh-mongo")
    fresh.start()
    after: ServiceStack | None = None
    try:
        restored = backup.restore(fresh.uri, dump_dir)
        assert restored.documents == dumped.documents > 0
        t0 = time.monotonic()
        assert backup.verify(fresh.uri, dump_dir) == []
        verify_s = time.monotonic() - t0
        # The consumer groups are not ahead of the restored state (nothing would be skipped).
        assert backup.offsets_ahead(servers.kafka_bootstrap, offsets) == {}
        assert backup.rewind_offsets(servers.kafka_bootstrap, offsets, timeout_s=60) == {}

        pinned = {
            **env,
            "MEDBENCH_AUTH__SERVICE_TOKEN": before.service_token,
            "MEDBENCH_AUTH__BOOTSTRAP_KEY": before.admin_key,
            "MEDBENCH_METRICS_TOKEN": before.metrics_token,
            SECRETS_KEYS: before.secrets_keys,
        }
        after = new_stack(
            work / "after", fresh.uri, database, servers.kafka_bootstrap, prefix, pinned
        )
        # Reports, board and audit log as they were (the partners' keys were restored too).
        for sid, report in reports_before.items():
            assert await exact_report(after, "drill-a", sid) == report
        assert await board(after, viewer) == board_before
        audit_after = {e.event_id: e for e in await audit_log(after)}
        assert [audit_after.get(e.event_id) for e in audit_before] == audit_before
        # A batch uploaded before the backup is recognised as a resend, counted once.
        done_batches = batches[:half]
        inflight.stack = done.stack = after
        replay = await inflight.partner().upload(inflight.submission_id, [done_batches[0]])
        assert replay.replayed_batches == 1 and replay.accepted_answers == 0
        # The submission in flight finishes, with the report of an uninterrupted run.
        for batch in batches[half:]:
            await inflight.upload_batch(batch)
        report = await inflight.wait_completed(timeout_s=180)
        expected = expected_report()
        assert report.scored_items == len(ROWS)
        assert report.overall == pytest.approx(expected["overall"], abs=1e-9)
        assert {d.dataset: (d.score, d.items, d.units) for d in report.datasets} == expected[
            "datasets"
        ]
        final = await inflight.partner().get(inflight.submission_id)
        assert final.progress.answered_items == len(ROWS), final.progress
        assert final.progress.scored_items == len(ROWS), final.progress
        # Nothing counted twice: usage, the first report and the board unchanged.
        assert {t: await usage(after, t) for t in usage_before} == usage_before
        assert (
            await exact_report(after, "drill-a", done.submission_id)
            == reports_before[done.submission_id]
        )
        assert await board(after, viewer) == board_before
        listed = await inflight.partner().list_submissions()
        assert [s.submission_id for s in listed.submissions] == [inflight.submission_id]
    finally:
        if after is not None:
            after.stop()
        fresh.stop()
    measured = {
        "documents": dumped.documents,
        "collections": len(manifest["collections"]),
        "dump_bytes": dumped.bytes,
        "dump_s": round(dumped.seconds, 3),
        "restore_s": round(restored.seconds, 3),
        "verify_s": round(verify_s, 3),
        "fresh_server_start_s": round(fresh.startup_s or 0, 3),
        # How far the submission in flight had got when the services stopped.
        "inflight_answered_scored": [seen.progress.answered_items, seen.progress.scored_items],
        "outbox_events_in_dump": sum(
            c["count"] for c in manifest["collections"] if c["collection"].startswith("outbox_")
        ),
    }
    print("restore drill:", json.dumps(measured))
