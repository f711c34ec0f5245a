"""Key points judged, not string-matched, through the stack: an API-mode self-test run of four
open-ended MedHC items (a paraphrase, a negation, a contradiction, keyword stuffing), judged by a
scripted judge on loopback that decides each key point as the prompt's rules ask. Each item's
report parts carry the judge's key-point recall as a component of the judge part (no metric
part: the metric scorer left the key points to the judge), merged with the judge's score."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from medbench.common.v1 import common_pb2
from medbench.submission.v1 import submission_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client.api import AdminClient, channel
from medbench_client.bank_files import import_item
from medbench_devstack.services import ServiceStack
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
from tests.e2e.fake_endpoint import FakeEndpoint, Script
from tests.e2e.fake_judge import fenced_answer, key_points
from tests.e2e.harness import eventually, partner_client, withheld_item_results

pytestmark = [pytest.mark.e2e]

POINTS = ["低盐饮食", "规律服药", "监测血压", "控制体重", "戒烟限酒"]
# Case markers without digits (a canary may alter numbers in a prompt) -> the model's answer,
# the key points a rule-following judge finds covered, its score (0-10).
CASES: dict[str, tuple[str, list[int], int]] = {
    "甲": ("少吃盐，按医嘱每天吃降压药，家里自己量血压，减肥，不抽烟少喝酒。", [1, 2, 3, 4, 5], 9),
    "乙": ("不需要低盐饮食，不必规律服药，不用监测血压，也无须控制体重或戒烟限酒。", [], 0),
    "丙": (
        "建议低盐饮食、规律服药、监测血压、控制体重、戒烟限酒。不过其实咸一点也无妨，"
        "血压正常了就可以停药，想抽烟喝酒也没关系。",
        [3, 4],
        1,
    ),
    "丁": ("低盐饮食 规律服药 监测血压 控制体重 戒烟限酒", [], 1),
}
ROWS = [
    {
        "item_id": f"kp-{n}",
        "dataset": "MedHC",
        "answer_format": "free_text",
        "question": f"病例{marker}：高血压患者日常生活中应注意什么？",
        "reference": ["低盐饮食，规律服药，监测血压，控制体重，戒烟限酒。"],
        "specialties": ["IM.CARD"],
        "key_points": POINTS,
    }
    for n, marker in enumerate(CASES)
]
BY_ANSWER = {answer: (covered, score) for answer, covered, score in CASES.values()}


def model_answer(question: str) -> str:
    # Anything else (the endpoint check before the run) gets a plain reply.
    found = (answer for marker, (answer, _, _) in CASES.items() if f"病例{marker}" in question)
    return next(found, "好的")


def judge(messages: list[dict[str, Any]]) -> str:
    prompt = next(m["content"] for m in messages if m["role"] == "user")
    system = next(m["content"] for m in messages if m["role"] == "system")
    # The judge is told the rules and given the item's key points, numbered.
    assert "否定不算覆盖" in system and "堆砌关键词不算覆盖" in system
    assert key_points(prompt) == POINTS
    covered, score = BY_ANSWER[fenced_answer(prompt)]
    verdict = {"score": score, "key_points_covered": covered, "rationale": "逐条判定要点"}
    return json.dumps(verdict, ensure_ascii=False)


@pytest.fixture(scope="module")
def judge_endpoint() -> Iterator[FakeEndpoint]:
    with FakeEndpoint(Script(answer=str, model="judge-kp", reply=judge)) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def stack(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory, judge_endpoint: FakeEndpoint
) -> Iterator[ServiceStack]:
    models = [{"model": "judge-kp", "base_url": judge_endpoint.base_url, "api_key": "secret-key"}]
    env = {
        "MEDBENCH_JUDGE__MODELS": json.dumps(models),
        "MEDBENCH_JUDGE__RETRY_BASE_DELAY_S": "0.01",
    }
    with running_stack(servers, tmp_path_factory, "keypoints", env) as services:
        yield services


async def test_an_items_report_parts_carry_the_judged_key_point_recall(
    stack: ServiceStack, judge_endpoint: FakeEndpoint
) -> None:
    admin = AdminClient(channel(stack.address("rotator"), stack.admin_key))
    done = await admin.import_items([import_item(r) for r in ROWS])
    assert (done.imported, len(done.rejected)) == (4, 0), done
    await admin.publish("kp-pool", board=taskpool_pb2.BOARD_API)
    with FakeEndpoint(Script(answer=model_answer)) as model:
        partner = partner_client(stack, "hospital-kp")
        created = await partner.create(
            "kp-run",
            "kp-model",
            mode=common_pb2.SUBMISSION_MODE_API,
            endpoint=submission_pb2.Endpoint(
                base_url=model.base_url,
                model="test-model",
                api_key="secret-key",
                max_concurrency=4,
                # Judged at once by the uncalibrated judge (an official run would be parked).
                self_test=True,
            ),
        )
        sid = created.submission.submission_id

        async def completed() -> bool:
            return (await partner.get(sid)).state == submission_pb2.SUBMISSION_STATE_COMPLETED

        await eventually(completed, 120, "the self-test run", interval_s=0.3)
        report = await partner.report(sid)

    items = {i.item_id: i for i in await withheld_item_results(stack, "hospital-kp", sid)}
    expected = {}
    for n, (_, covered, score) in enumerate(CASES.values()):
        item = items[f"kp-{n}"]
        # One part, the judge's: the metric scorer did not match the key points itself.
        [part] = item.parts
        assert (part.component, part.metric) == ("judge", "key_point_recall+judge")
        recall = len(covered) / len(POINTS)
        assert [(c.name, round(c.score, 6)) for c in part.components] == [
            ("judge", round(score / 10, 6)),
            ("key_point_recall", round(recall, 6)),
        ], item.item_id
        assert item.score == pytest.approx((score / 10 + recall) / 2)
        expected[item.item_id] = item.score
    # Paraphrase covered; negation, contradiction and stuffing not (lexically: 0, 1, 1, 1).
    assert [round(expected[f"kp-{n}"], 6) for n in range(4)] == [0.95, 0.0, 0.25, 0.05]
    [medhc] = [d for d in report.datasets if d.dataset == "MedHC"]
    # (Its score is the live view's, rounded to a step of 3 of its 4 items: not checked here.)
    assert (medhc.metric, medhc.items) == ("key_point_recall+judge", 4)
    # Each answer was judged once, in one call per item (key points in the same call).
    assert sum(judge_endpoint.script.calls.values()) == 4
