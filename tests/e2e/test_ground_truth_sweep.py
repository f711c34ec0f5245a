"""Ground truth never leaves the scorers: items whose references carry unique marker strings go
through both modes end to end; no partner-visible RPC response, no Kafka message and no log line
of any service carries a marker."""

from __future__ import annotations

import uuid
from typing import Any

import bson
import pytest
from kafka import KafkaConsumer
from pymongo import AsyncMongoClient

from medbench.common.v1 import common_pb2
from medbench.identity.v1 import identity_service_pb2
from medbench.identity.v1 import identity_service_pb2_grpc as identity_grpc
from medbench.leaderboard.v1 import leaderboard_service_pb2 as lb
from medbench.leaderboard.v1 import leaderboard_service_pb2_grpc
from medbench.submission.v1 import submission_pb2, submission_service_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client.api import AdminClient, channel
from medbench_client.bank_files import import_item
from medbench_devstack.services import ServiceStack
from tests.conftest import Servers
from tests.e2e.fake_endpoint import FakeEndpoint, Script
from tests.e2e.harness import (
    eventually,
    partner_client,
    partner_key,
    read_topic,
    withheld_item_results,
)

pytestmark = [pytest.mark.e2e]

RUN = uuid.uuid4().hex[:12]
ITEMS = 12
MARKERS = [f"MKR{RUN}x{i:03d}" for i in range(ITEMS)]
COMPLETED = submission_pb2.SUBMISSION_STATE_COMPLETED


def rows() -> list[dict[str, Any]]:
    return [
        {
            "item_id": f"sweep-{RUN}-{i}",
            "dataset": "MedClass",
            "track": "multimodal",
            "question": f"第{i}号病例最可能的诊断是？只回答“正常”或“肺炎”。",
            # The reference is the label the scorer compares with; the marker makes it unique.
            "reference": [MARKERS[i]],
        }
        for i in range(ITEMS)
    ]


def hits(blob: bytes) -> list[str]:
    return [m for m in MARKERS if m.encode() in blob] + (
        [f"MKR{RUN}"] if f"MKR{RUN}".encode() in blob else []
    )


async def test_no_marker_reaches_a_partner_a_message_or_a_log(
    stack: ServiceStack, servers: Servers
) -> None:
    admin = AdminClient(channel(stack.address("rotator"), stack.admin_key))
    await admin.import_items([import_item(r) for r in rows()])
    await admin.publish(f"sweep-up-{RUN}", track=common_pb2.TRACK_MULTIMODAL)
    await admin.publish(
        f"sweep-api-{RUN}", track=common_pb2.TRACK_MULTIMODAL, board=taskpool_pb2.BOARD_API
    )
    seen: list[tuple[str, bytes]] = []

    def keep(what: str, message: Any) -> Any:
        seen.append((what, message.SerializeToString()))
        return message

    partner = partner_client(stack, "sweep-t")
    # Upload mode.
    created = keep(
        "create", await partner.create("sweep-up", "m", track=common_pb2.TRACK_MULTIMODAL)
    )
    up = created.submission.submission_id
    prompts = await partner.prompts(up)
    for p in prompts:
        keep("prompt", p)
    keep(
        "upload",
        await partner.upload(up, [("all", [(p.item_id, "正常") for p in prompts], True)]),
    )
    async for change in partner.watch(up):
        keep("watch", change)
    # API mode, against a model that answers every question.
    with FakeEndpoint(Script(answer=lambda question: "肺炎")) as fake:
        created = keep(
            "create-api",
            await partner.create(
                "sweep-api",
                "m",
                track=common_pb2.TRACK_MULTIMODAL,
                mode=common_pb2.SUBMISSION_MODE_API,
                endpoint=submission_pb2.Endpoint(
                    base_url=fake.base_url,
                    model="test-model",
                    api_key="secret-key",
                    max_concurrency=4,
                ),
            ),
        )
        api = created.submission.submission_id

        async def done() -> bool:
            return keep("get", await partner.get(api)).state == COMPLETED

        await eventually(done, 120, "the API-mode run to complete")
    for sid in (up, api):
        assert (await partner.get(sid)).state == COMPLETED
        keep("report", await partner.report(sid))
        # Withheld while the pools are live; kept as their owner gets them once disclosed.
        for item in await withheld_item_results(stack, "sweep-t", sid):
            keep("item", item)
        publish = submission_service_pb2.PublishSubmissionRequest(submission_id=sid, published=True)
        keep("publish", await partner._stub.PublishSubmission(publish))  # noqa: SLF001
    key = partner_key(stack, "sweep-t")
    board = leaderboard_service_pb2_grpc.LeaderboardServiceStub(
        channel(stack.address("gateway"), key)
    )
    for board_kind in (taskpool_pb2.BOARD_UPLOAD, taskpool_pb2.BOARD_API):
        keep(
            "leaderboard",
            await board.ListLeaderboard(
                lb.ListLeaderboardRequest(track=common_pb2.TRACK_MULTIMODAL, board=board_kind)
            ),
        )
    keep(
        "usage",
        await identity_grpc.IdentityServiceStub(channel(stack.address("gateway"), key)).GetUsage(
            identity_service_pb2.GetUsageRequest()
        ),
    )
    # The scorers did read the references: the upload run scored 0, the API run too (neither
    # answer is a marker), and every item was scored.
    assert len(prompts) >= ITEMS
    assert [what for what, blob in seen if hits(blob)] == []

    # Every Kafka message of this stack, internal topics included.
    env = stack.env("gateway")
    prefix, bootstrap = (
        env["MEDBENCH_KAFKA__TOPIC_PREFIX"],
        env["MEDBENCH_KAFKA__BOOTSTRAP_SERVERS"],
    )
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        names = sorted(t for t in consumer.topics() if t.startswith(prefix))
    finally:
        consumer.close()
    assert len(names) >= 5
    leaked = []
    messages = 0
    for name in names:
        for record in read_topic(bootstrap, name):
            messages += 1
            blob = (record.value or b"") + b"".join(v for _, v in record.headers or [])
            if hits(blob):
                leaked.append(name)
    assert messages > 0 and leaked == []
    # The markers are in the system (the sealed database holds them), so the search can hit.
    client: AsyncMongoClient = AsyncMongoClient(servers.mongo_uri)
    try:
        sealed = client[env["MEDBENCH_MONGO__DATABASE"] + "_sealed"]
        found: set[str] = set()
        for name in await sealed.list_collection_names():
            async for doc in sealed[name].find({}):
                found.update(hits(bson.encode(doc)))
        assert set(MARKERS) <= found
    finally:
        await client.close()
    # Every log line of every service.
    for service in stack.names:
        text = stack.log_path(service).read_bytes()
        assert hits(text) == [], service
