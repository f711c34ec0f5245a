"""A disclosed pool takes no more answers, on the real stack: once maintainers disclose a pool
(its keys are public), a submission still open on it is refused its next upload with
FAILED_PRECONDITION naming the disclosure's date and ends FAILED with the reason, while a
submission answered in full before the disclosure is still published."""

from __future__ import annotations

import grpc
import pytest

from medbench.submission.v1 import submission_pb2
from medbench_client.api import AdminClient
from medbench_client.bank_files import import_item
from medbench_devstack.services import ServiceStack
from tests.e2e.harness import Evaluation, admin_channel, eventually, lift_caps
from tests.e2e.test_disclosure import QUESTIONS, RIGHT, ROWS, refused, rotate

pytestmark = [pytest.mark.e2e]

TENANT = "disclosed-pool-hospital"
LIVE = "llm-upload-a"


async def test_an_open_submission_on_a_disclosed_pool_takes_no_more_answers(
    stack: ServiceStack,
) -> None:
    imported = await AdminClient(admin_channel(stack, "rotator")).import_items(
        [import_item(r) for r in ROWS]
    )
    assert imported.imported == len(ROWS) and not imported.rejected
    assert (await rotate(stack, "a", "MedExam", groups=2)).pool.pool_id == LIVE
    await lift_caps(stack, TENANT)

    # One run answered in full on the live pool, one left open after its first batch.
    done = Evaluation(stack, TENANT, "run-done", RIGHT, questions=QUESTIONS, batch_size=4)
    await done.create()
    for batch in done.batches(await done.prompts()):
        await done.upload_batch(batch)
    await done.wait_completed()
    open_run = Evaluation(stack, TENANT, "run-open", RIGHT, questions=QUESTIONS, batch_size=4)
    sid = await open_run.create()
    first, *rest = open_run.batches(await open_run.prompts())
    assert rest
    await open_run.upload_batch(first)

    # The board rotates on; the maintainers disclose the pool.
    await rotate(stack, "b", "MedEthics", groups=2)
    disclosed = await AdminClient(admin_channel(stack, "rotator")).disclose(LIVE)
    day = disclosed.pool.disclosed_at.ToDatetime().strftime("%Y-%m-%d")

    # The gateway learns it within its disclosure cache (5 s): the done run's item results
    # are released by the same answer.
    await eventually(
        lambda: done.partner().item_results(done.submission_id), 15, "the pool's disclosure"
    )

    # The open run's next upload is refused, and the run ends FAILED with the reason.
    refusal = await refused(open_run.partner().upload(sid, [(rest[0][0], rest[0][1], True)]))
    assert refusal.code() == grpc.StatusCode.FAILED_PRECONDITION
    message = refusal.details() or ""
    assert f"submission {sid} cannot be completed: its pool {LIVE} was disclosed on {day}" in (
        message
    )
    shown = await open_run.partner().get(sid)
    assert shown.state == submission_pb2.SUBMISSION_STATE_FAILED
    assert f"pool {LIVE} was disclosed on {day}" in shown.state_reason
    assert shown.progress.answered_items == len(first[1])  # its first batch is kept
    retried = await refused(open_run.partner().upload(sid, [(rest[0][0], rest[0][1], True)]))
    assert retried.code() == grpc.StatusCode.FAILED_PRECONDITION

    # The run answered in full before the disclosure is published.
    assert await done.partner().publish(done.submission_id)
