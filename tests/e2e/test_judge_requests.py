"""Combined metrics through the stack: objective components are scored, judge components are
requested from the judge scorer, which (with no judge model configured) refuses loudly. With no
judge, key points are the metric scorer's labelled lexical fallback, as in the chart (with one,
the judge decides them: test_judge_key_points.py)."""

from __future__ import annotations

import grpc
import pytest

from medbench.judge.v1 import judge_service_pb2
from medbench.scoring.v1 import scoring_events_pb2
from medbench_client.api import JudgeAdmin, channel
from medbench_devstack.services import ServiceStack
from medbench_messaging import topics
from tests.e2e.harness import Evaluation, eventually, load_pool, read_topic

pytestmark = [pytest.mark.e2e]

ROWS = [
    {
        "item_id": "MedHC-kp-1",
        "dataset": "MedHC",
        "answer_format": "free_text",
        "question": "高血压患者日常生活中应注意什么？",
        "specialties": ["IM.CARD"],
        "key_points": ["低盐饮食", "规律服药", "监测血压"],
    },
    {
        "item_id": "MedExam-kp-1",
        "dataset": "MedExam",
        "answer_format": "choice_single",
        "question": "题目：成人正常体温 A. 35℃ B. 36.5℃ C. 39℃",
        "reference": ["B"],
        "specialties": ["IM.CARD"],
    },
]


async def test_free_text_items_are_key_point_scored_and_sent_to_the_judge(
    stack: ServiceStack,
) -> None:
    # No judge configured: the local stack tells the metric scorer so (as the chart does).
    assert stack.env("metric_scorer")["MEDBENCH_KEY_POINT_RECALL"] == "lexical"
    await load_pool(stack, ROWS, "judge-pool")
    evaluation = Evaluation(
        stack,
        "hospital-j",
        "judge-run",
        {"MedHC-kp-1": "建议低盐饮食，并且规律服药。", "MedExam-kp-1": "<B>"},
        questions={r["item_id"]: r["question"] for r in ROWS},
    )
    await evaluation.create()
    for batch in evaluation.batches(await evaluation.prompts()):
        await evaluation.upload_batch(batch)
    env = stack.env("gateway")
    prefix, bootstrap = (
        env["MEDBENCH_KAFKA__TOPIC_PREFIX"],
        env["MEDBENCH_KAFKA__BOOTSTRAP_SERVERS"],
    )

    async def judge_requests() -> list[object]:
        return read_topic(bootstrap, topics.JUDGE_REQUESTED.full_name(prefix))

    requested = await eventually(judge_requests, 60, "a judge request")
    request = scoring_events_pb2.JudgeRequested.FromString(requested[0].value)
    assert [t.item_id for t in request.tasks] == ["MedHC-kp-1"]
    assert request.tasks[0].answer == "建议低盐饮食，并且规律服药。"
    # No judge decides MedHC's key points: the metric scorer matches them (a part of its own,
    # labelled lexical), the judge is asked for its score only.
    assert not request.tasks[0].key_point_recall
    assert request.tasks[0].metric == "key_point_recall_lexical+judge"
    assert request.context.expected_scores == 3

    async def choice_scored() -> list[object]:
        return read_topic(bootstrap, topics.ITEM_SCORED.full_name(prefix))

    scored = [
        scoring_events_pb2.ItemsScored.FromString(r.value)
        for r in await eventually(choice_scored, 60, "the choice item's score")
    ]
    by_item = {s.item_id: s for batch in scored for s in batch.scores}
    assert by_item["MedExam-kp-1"].score == 1.0
    # Two of MedHC's three key points are in the answer, found by the labelled matcher.
    lexical = [(c.name, round(c.score, 4)) for c in by_item["MedHC-kp-1"].components]
    assert lexical == [("key_point_recall_lexical", round(2 / 3, 4))], by_item["MedHC-kp-1"]

    async def dead_lettered() -> list[object]:
        return read_topic(bootstrap, topics.JUDGE_REQUESTED.dead_letter_name(prefix))

    dead = await eventually(dead_lettered, 60, "the judge request in the dead-letter topic")
    assert b"no judge model is configured" in dict(dead[0].headers)["dlq-reason"]
    sub = await evaluation.partner().get(evaluation.submission_id)
    # Both items have a score record (the MedExam item: this download's canary, options
    # reordered for the tenant, scored like the other); MedHC's judge part is outstanding.
    assert sub.progress.scored_items == 2 and sub.progress.expected_items == 2
    assert sub.state != 6, "not COMPLETED while a judge component is outstanding"


async def test_the_judge_service_is_served_without_a_judge_and_names_the_missing_setting(
    stack: ServiceStack,
) -> None:
    admin = JudgeAdmin(channel(stack.address("judge_scorer"), stack.admin_key))
    # Physicians' side works with no judge: ratings are imported, the review queue is read.
    rating = judge_service_pb2.PhysicianRating(
        item_id="cal-1", dataset="MedHC", question="问题", answer="回答", score=7, rater_id="dr-1"
    )
    assert (await admin.import_ratings([rating])).imported == 1
    assert await admin.reviews() == []
    # What needs a judge model says which setting is missing (not "Method not found").
    request = judge_service_pb2.JudgeAnswerRequest(
        dataset="MedHC", question="问题", answer="回答", self_test=True
    )
    for call in (admin.stub.JudgeAnswer(request), admin.calibrate("generic")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "MEDBENCH_JUDGE__MODELS" in (err.value.details() or "")
