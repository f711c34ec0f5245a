"""kill -9 of any one service in the middle of an evaluation, then a restart: the evaluation
completes with exactly the report of an uninterrupted run."""

from __future__ import annotations

import pytest

from medbench.submission.v1 import submission_pb2
from medbench_devstack.services import ServiceStack
from rotator.core.synthetic import synthetic_answers, synthetic_items
from tests.e2e.harness import (
    Evaluation,
    comparable,
    lift_caps,
    load_pool,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

N_ITEMS = 2000
SERVICES = ["gateway", "rotator", "dispatcher", "metric_scorer", "judge_scorer", "aggregator"]


@pytest.fixture(scope="module")
async def answers(stack: ServiceStack) -> dict[str, str]:
    rows = list(synthetic_items(N_ITEMS, seed=11))
    await load_pool(stack, rows, "kill-pool")
    await lift_caps(stack, "hospital-k")  # seven runs on one pool
    return {a["item_id"]: a["answer"] for a in synthetic_answers(rows, 0.6, seed=5)}


@pytest.fixture(scope="module")
async def uninterrupted(stack: ServiceStack, answers: dict[str, str]) -> dict[str, object]:
    evaluation = Evaluation(stack, "hospital-k", "uninterrupted", answers)
    await evaluation.create()
    for batch in evaluation.batches(await evaluation.prompts()):
        await evaluation.upload_batch(batch)
    return comparable(await evaluation.wait_completed())


@pytest.mark.parametrize("victim", SERVICES)
async def test_kill_9_mid_evaluation_then_restart_gives_the_same_report(
    stack: ServiceStack, answers: dict[str, str], uninterrupted: dict[str, object], victim: str
) -> None:
    evaluation = Evaluation(stack, "hospital-k", f"killed-{victim}", answers)
    # Partners see no scoring progress while answers are awaited; the platform's staff do.
    rest = await evaluation.half_uploaded()
    stack.kill(victim)
    if victim != "gateway":
        # The platform keeps accepting answers while a back-end service is down.
        for batch in rest[: len(rest) // 2]:
            await evaluation.upload_batch(batch)
        rest = rest[len(rest) // 2 :]
        sub = await evaluation.partner().get(evaluation.submission_id)
        assert sub.state == submission_pb2.SUBMISSION_STATE_AWAITING_ANSWERS
    stack.restart(victim, timeout_s=60)
    for batch in rest:
        await evaluation.upload_batch(batch)
    report = await evaluation.wait_completed(timeout_s=120)
    assert comparable(report) == uninterrupted
