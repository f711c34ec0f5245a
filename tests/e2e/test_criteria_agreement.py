"""Agreement per criterion through the stack: physicians' ratings with scores per criterion are
imported, a scripted judge that scores every criterion judges them, and Calibrate/GetCalibration,
`medbench admin calibration report` and JudgeAnswer carry the judge's criteria and the agreement
per criterion (the overall score alone gates)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from medbench.judge.v1 import judge_service_pb2
from medbench_client.api import JudgeAdmin, channel
from medbench_devstack.services import ServiceStack
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
from tests.e2e.fake_endpoint import FakeEndpoint, Script
from tests.e2e.fake_judge import judge
from tests.e2e.test_admin_cli import admin

pytestmark = [pytest.mark.e2e]

QUESTION = "高血压患者日常生活中应注意什么？"
POINTS = ["低盐饮食", "规律服药", "监测血压"]
CRITERIA = ["医学准确性", "要点完整性", "安全性", "表达与针对性"]  # the generic rubric's
RATED = 40
WITH_CRITERIA = 30


@pytest.fixture(scope="module")
def fake_judge() -> Iterator[FakeEndpoint]:
    with FakeEndpoint(Script(answer=str, model="judge-c", reply=judge(criteria=True))) as fake:
        yield fake


@pytest.fixture(scope="module")
def stack(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory, fake_judge: FakeEndpoint
) -> Iterator[ServiceStack]:
    models = [{"model": "judge-c", "base_url": fake_judge.base_url, "api_key": "secret-key"}]
    env = {
        "MEDBENCH_JUDGE__MODELS": json.dumps(models),
        "MEDBENCH_JUDGE__MIN_RATINGS": str(RATED),
        "MEDBENCH_JUDGE__RETRY_BASE_DELAY_S": "0.01",
    }
    with running_stack(servers, tmp_path_factory, "criteria", env) as services:
        yield services


def rating(i: int) -> judge_service_pb2.PhysicianRating:
    """Answer i covers i % 4 key points; the physician scores it as the judge's rule does,
    and rates its criteria (the first 30 answers only): the first three as the overall score,
    the last reversed, so the judge agrees on three criteria and not on the fourth."""
    covered = i % 4
    score = round(10 * covered / 3)
    given = [score, score, score, 10 - score] if i < WITH_CRITERIA else []
    return judge_service_pb2.PhysicianRating(
        item_id=f"crit-{i}",
        dataset="MedHC",
        dimension="knowledge_qa",
        question=QUESTION,
        key_points=POINTS,
        answer=f"第{i}份回答：" + "，".join(POINTS[:covered]),
        score=score,
        rater_id="dr-qian",
        criteria=[
            judge_service_pb2.CriterionScore(name=n, score=s)
            for n, s in zip(CRITERIA, given, strict=False)
        ],
    )


async def test_the_calibration_reports_agreement_per_criterion(stack: ServiceStack) -> None:
    admin_api = JudgeAdmin(channel(stack.address("judge_scorer"), stack.admin_key))
    imported = await admin_api.import_ratings([rating(i) for i in range(RATED)])
    assert imported.imported == RATED, imported

    measured = await admin_api.calibrate("generic")
    assert (measured.n, measured.answers, measured.kappa) == (RATED, RATED, pytest.approx(1.0))
    assert measured.calibrated, "the overall score gates; a reversed criterion does not"
    stored = await admin_api.calibration("generic")
    assert stored.calibration_id == measured.calibration_id
    rows = [(c.criterion, c.n, c.answers) for c in stored.criteria]
    assert rows == [(name, WITH_CRITERIA, WITH_CRITERIA) for name in CRITERIA]
    by_name = {c.criterion: c for c in stored.criteria}
    for name in CRITERIA[:3]:
        assert by_name[name].quadratic.kappa == pytest.approx(1.0)
        assert by_name[name].quadratic.low == pytest.approx(1.0)
    reversed_ = by_name["表达与针对性"].quadratic
    # Reversed scores (0, 3, 7, 10 against 10, 7, 3, 0), not quite balanced: about -0.99.
    assert -1.0 <= reversed_.low <= reversed_.kappa < -0.95
    assert reversed_.kappa <= reversed_.high < 0

    # One judged answer shows the judge's own scores per criterion.
    answered = await admin_api.stub.JudgeAnswer(
        judge_service_pb2.JudgeAnswerRequest(
            dataset="MedHC",
            question=QUESTION,
            key_points=POINTS,
            answer="低盐饮食，规律服药。",
            self_test=True,
        )
    )
    assert [(c.name, c.score) for c in answered.criteria] == [(n, 7.0) for n in CRITERIA]
    assert [(c.name, c.score) for c in answered.verdicts[0].criteria] == [
        (n, 7.0) for n in CRITERIA
    ]


def test_the_admin_cli_prints_the_agreement_per_criterion(
    stack: ServiceStack, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = admin(stack, capsys, "calibration", "report", "generic")
    assert code == 0, err
    assert "per criterion" in out
    assert re.search(r"医学准确性\s+n\s+30\s+answers\s+30\s+quadratic 1\.000", out), out
    assert re.search(r"表达与针对性\s+n\s+30\s+answers\s+30\s+quadratic -0\.99\d", out), out
