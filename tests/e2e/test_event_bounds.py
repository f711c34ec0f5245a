"""One partner can never take the platform down: the largest valid upload is scored end to end,
and a service restarted with a poison event at the head of its outbox serves at once, holds the
event in the quarantine (listed and handled through the gateway's QuarantineService) and lets
the rest flow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pymongo import AsyncMongoClient

from medbench.ops.v1 import quarantine_service_pb2 as q_pb2
from medbench.ops.v1 import quarantine_service_pb2_grpc as q_grpc
from medbench.submission.v1 import (
    submission_events_pb2,
    submission_pb2,
    submission_service_pb2,
)
from medbench_client.api import channel
from medbench_devstack.services import ServiceStack
from medbench_messaging import topics
from medbench_messaging.sizing import MAX_ANSWER_BYTES
from rotator.core.bank import MAX_PROMPT_BYTES
from rotator.core.synthetic import synthetic_answers, synthetic_items
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
from tests.e2e.harness import (
    Evaluation,
    admin_channel,
    eventually,
    load_pool,
    maintainer_cli,
    partner_key,
)
from tests.reference_scoring import score_in_process

pytestmark = [pytest.mark.e2e]

N_ITEMS = 340
ROWS = list(synthetic_items(N_ITEMS, seed=7))
# The gateway's limit of answer text per UploadAnswers message (8 MiB): 256 answers of 32 KiB.
PER_MESSAGE = 8 * 1024 * 1024 // MAX_ANSWER_BYTES


def padded(answer: str, size: int) -> str:
    """The answer followed by filler (no option letters) up to exactly size UTF-8 bytes."""
    filler = size - len(answer.encode()) - 1
    return answer + "\n" + "。" * (filler // 3) + " " * (filler % 3)


# The first 63 answers reproduce the crash (30,000 bytes each, 1.27 MB in one event before the
# size rule); the next 256 are the largest message the gateway admits.
_PLAIN = {a["item_id"]: a["answer"] for a in synthetic_answers(ROWS, 0.7, seed=8)}
ANSWERS = {
    row["item_id"]: padded(
        _PLAIN[row["item_id"]], 30_000 if n < 63 else MAX_ANSWER_BYTES if n < 63 + 256 else 40
    )
    for n, row in enumerate(ROWS)
}
QUESTIONS = {r["item_id"]: r["question"] for r in ROWS}


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    with running_stack(servers, tmp_path_factory, "bounds") as services:
        yield services


@pytest.fixture(scope="module")
async def pool(stack: ServiceStack) -> str:
    await load_pool(stack, ROWS, "bounds-pool-1")
    return "bounds-pool-1"


async def test_the_largest_valid_upload_is_scored_end_to_end(
    stack: ServiceStack, pool: str
) -> None:
    evaluation = Evaluation(stack, "big-uploader", "largest", ANSWERS, questions=QUESTIONS)
    await evaluation.create()
    prompts = await evaluation.prompts()
    pairs = [pair for _, batch, _ in evaluation.batches(prompts) for pair in batch]
    largest = [p for p in pairs if len(p[1].encode()) == MAX_ANSWER_BYTES]
    crash = [p for p in pairs if len(p[1].encode()) == 30_000]
    rest = [p for p in pairs if p not in largest and p not in crash]
    assert len(crash) == 63 and len(largest) == PER_MESSAGE
    assert sum(len(a.encode()) for _, a in largest) == 8 * 1024 * 1024
    assert all(len(a.encode()) == MAX_ANSWER_BYTES for _, a in largest)

    # One byte more than the message limit is refused whole, naming the limit.
    over = [*largest, (rest[0][0], "x")]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await evaluation.partner().upload(evaluation.submission_id, [("over", over, False)])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "8388608 bytes of answer text in one message" in (refused.value.details() or "")

    await evaluation.upload_batch(("crash", crash, False), timeout_s=120)
    await evaluation.upload_batch(("largest", largest, False), timeout_s=120)
    await evaluation.upload_batch(("rest", rest, False), timeout_s=120)
    report = await evaluation.wait_completed(timeout_s=240)

    expected = score_in_process(ROWS, ANSWERS)
    assert report.scored_items == N_ITEMS
    assert report.overall == pytest.approx(expected.overall, abs=1e-9)
    assert {d.dataset: (d.score, d.items) for d in report.datasets} == {
        d.dataset: (d.score, d.n_items) for d in expected.datasets
    }
    listed = await quarantine(stack).ListQuarantined(q_pb2.ListQuarantinedRequest())
    assert listed.held == 0, listed


async def test_items_with_the_largest_prompts_go_through_every_hop(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """40 items of 256 KiB prompts (10 MiB): two import messages, three pool chunks, three
    prompt stream messages, then scored to the in-process report."""
    with running_stack(servers, tmp_path_factory, "prompts") as stack:
        base = list(synthetic_items(40, seed=21))
        rows = []
        for row in base:
            head = f"病历{row['item_id']}\n"
            room = MAX_PROMPT_BYTES - len((head + "\n" + row["question"]).encode())
            rows.append({**row, "question": head + "长" * (room // 3) + "\n" + row["question"]})
        assert all(
            MAX_PROMPT_BYTES - 3 < len(r["question"].encode()) <= MAX_PROMPT_BYTES for r in rows
        )
        await load_pool(stack, rows, "bounds-pool-2")
        evaluation = await synthetic_evaluation(stack, "long-prompts", rows, seed=22)
        answers = evaluation.answers
        partner = evaluation.partner()
        messages = [
            m
            async for m in partner._stub.DownloadPrompts(  # noqa: SLF001 - the raw stream
                submission_service_pb2.DownloadPromptsRequest(
                    submission_id=evaluation.submission_id
                ),
                metadata=partner._metadata,  # noqa: SLF001
            )
        ]
        # 10 MiB of prompts in messages of at most 4 MiB of prompt text each.
        assert len(messages) >= 3 and all(m.ByteSize() < 5 * 1024 * 1024 for m in messages)
        prompts = [p for m in messages for p in m.prompts]
        assert {p.item_id for p in prompts} >= {r["item_id"] for r in rows}
        assert all(
            len(p.question.encode()) > MAX_PROMPT_BYTES - 3 for p in prompts if p.item_id in answers
        )
        for batch in evaluation.batches(prompts):
            await evaluation.upload_batch(batch)
        report = await evaluation.wait_completed(timeout_s=180)
        assert report.overall == pytest.approx(score_in_process(rows, answers).overall, abs=1e-9)
        assert report.scored_items == len(rows)


async def synthetic_evaluation(
    stack: ServiceStack, tenant: str, rows: list[dict[str, Any]], seed: int
) -> Evaluation:
    """A created evaluation of tenant answering rows with synthetic answers (half right)."""
    answers = {a["item_id"]: a["answer"] for a in synthetic_answers(rows, 0.5, seed=seed)}
    questions = {r["item_id"]: r["question"] for r in rows}
    evaluation = Evaluation(stack, tenant, f"run-{seed}", answers, questions=questions)
    await evaluation.create()
    return evaluation


def cli(stack: ServiceStack, *argv: str) -> str:
    """The maintainer CLI's output (it must succeed)."""
    done = maintainer_cli(stack, *argv)
    assert done.returncode == 0, done.stderr
    return done.stdout


def quarantine(stack: ServiceStack) -> q_grpc.QuarantineServiceStub:
    return q_grpc.QuarantineServiceStub(admin_channel(stack, "gateway"))


async def serving_within(stack: ServiceStack, name: str, timeout_s: float) -> float:
    """Seconds until the service answers SERVING (it was just started)."""
    started = time.monotonic()
    async with grpc.aio.insecure_channel(stack.address(name)) as chan:
        stub = health_pb2_grpc.HealthStub(chan)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic() - started
            except grpc.aio.AioRpcError:
                pass
            assert time.monotonic() - started < timeout_s, f"{name} not serving"
            await asyncio.sleep(0.05)


async def test_a_poison_event_at_the_head_of_an_outbox_is_held_and_the_rest_flows(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with running_stack(servers, tmp_path_factory, "poison") as stack:
        rows = list(synthetic_items(40, seed=11))
        await load_pool(stack, rows, "poison-pool-1")

        database = stack.env("gateway")["MEDBENCH_MONGO__DATABASE"]
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri)
        db = client[database]
        # A submission-created event no record can hold (an older release could store it).
        poison = submission_events_pb2.SubmissionCreated(
            event_id="poison",
            submission=submission_pb2.Submission(
                submission_id="sub_poison", model=submission_pb2.ModelInfo(name="x" * 1_100_000)
            ),
        ).SerializeToString()
        relaying = ("gateway", "rotator", "dispatcher", "aggregator")
        try:
            for name in relaying:
                stack.kill(name)
                stack.process(name).wait_exit(10)
                await db[f"outbox_{name}"].insert_one(
                    {
                        "_id": f"poison-{name}",
                        "topic": topics.SUBMISSION_CREATED.name,
                        "key": "sub_poison",
                        "payload": poison,
                        "created_at": datetime(2020, 1, 1, tzinfo=UTC),
                        "trace": [],
                    }
                )
            for name in relaying:
                stack.process(name).start()
            for name in relaying:
                # Serves at once: the poison does not hold the service back.
                assert await serving_within(stack, name, 60) < 60

            async def held() -> Any:
                listed = await quarantine(stack).ListQuarantined(
                    q_pb2.ListQuarantinedRequest(status="held")
                )
                return listed if listed.held == len(relaying) else None

            listed = await eventually(held, 30, "the four poison events held")
            assert {e.service for e in listed.events} == set(relaying)
            assert all(e.source == "outbox" and "EventTooLarge" in e.reason for e in listed.events)
            for name in relaying:
                assert await db[f"outbox_{name}"].count_documents({"_id": f"poison-{name}"}) == 0

            # The rest flows: a whole evaluation through the four restarted services.
            evaluation = await synthetic_evaluation(stack, "after-poison", rows, seed=3)
            answers = evaluation.answers
            for batch in evaluation.batches(await evaluation.prompts()):
                await evaluation.upload_batch(batch)
            report = await evaluation.wait_completed()
            assert report.overall == pytest.approx(score_in_process(rows, answers).overall)

            # The maintainer CLI lists them and retries one: sent back to its outbox, still too
            # large, it is held again (counted twice), and nothing else moves.
            listed_cli = cli(stack, "quarantine", "list", "--status", "held")
            assert listed_cli.startswith("4 held")
            assert all(e.entry_id in listed_cli for e in listed.events)
            retried = listed.events[1]
            assert "retried" in cli(stack, "quarantine", "retry", retried.entry_id)

            async def held_again() -> bool:
                found = await quarantine(stack).ListQuarantined(
                    q_pb2.ListQuarantinedRequest(status="held", service=retried.service)
                )
                return bool(found.events) and found.events[0].times == 2

            await eventually(held_again, 30, "the retried event held again")

            # A maintainer drops one (audited); a partner cannot see the quarantine at all.
            entry = listed.events[0].entry_id
            dropped = await quarantine(stack).DropQuarantined(
                q_pb2.QuarantinedEntryRequest(entry_id=entry)
            )
            assert dropped.status == "dropped" and dropped.resolved_by
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await quarantine(stack).DropQuarantined(
                    q_pb2.QuarantinedEntryRequest(entry_id=entry)
                )
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND
            audited = await db.audit_log.count_documents(
                {"method": {"$regex": "DropQuarantined"}, "target": f"entry_id={entry}"}
            )
            assert audited == 2  # the drop and the refused second drop
            partner = q_grpc.QuarantineServiceStub(
                channel(stack.address("gateway"), partner_key(stack, "after-poison"))
            )
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await partner.ListQuarantined(q_pb2.ListQuarantinedRequest())
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            await client.close()
