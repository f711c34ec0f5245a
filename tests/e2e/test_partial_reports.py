"""A partial report through the stack: an agent pool whose other dimensions have no keyed items
(their items are in the bank without keys, so no pool holds them). The rotator records the
track's datasets with the pool, the metric scorer passes them on, the aggregator marks the
report partial and names what it misses, the board lists the entry unranked and marked, and the
partner CLI and the website show the mark."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from medbench_site.__main__ import build
from medbench_site.render import board_page, submission_page
from medbench_site.snapshot import Board

from medbench.common.v1 import common_pb2
from medbench.leaderboard.v1 import leaderboard_service_pb2 as lb
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client.api import AdminClient
from medbench_client.bank_files import import_item
from medbench_devstack.services import ServiceStack
from tests.e2e.harness import Evaluation, admin_channel, partner_key
from tests.e2e.test_leaderboard import board, publish, run_medbench

pytestmark = [pytest.mark.e2e]

INTENTS = ("病情咨询", "用药咨询", "预约挂号", "费用争议投诉")
DIALOGUES = {
    "预约挂号": "患者：我想挂明天上午心内科的号。",
    "用药咨询": "患者：这个降压药饭前吃还是饭后吃？",
    "费用争议投诉": "患者：账单比医生说的多了三百元，我要投诉。",
    "病情咨询": "患者：最近总是胸闷，是怎么回事？",
}
KEYED = [
    {
        "item_id": f"intent-{n}",
        "dataset": "MedIntentID",
        "track": "agent",
        "answer_format": "label",
        "question": (
            "## 任务类型：医疗场景感知与交互--意图识别\n预定义的意图识别："
            + "、".join(INTENTS)
            + f"\n请问下面属于哪个意图标签？\n历史对话：{dialogue}"
        ),
        # The gold label first, then the other candidates: the closed label set.
        "reference": [label, *(i for i in INTENTS if i != label)],
        "specialties": ["IM.CARD"],
    }
    for n, (label, dialogue) in enumerate(DIALOGUES.items())
]
# In the bank, but without keys: never pooled. Two more dimensions of the track, unscored.
UNKEYED = [
    {"item_id": "cot-1", "dataset": "MedCOT", "track": "agent", "answer_format": "free_text",
     "question": "请给出完整的诊断推理链。", "specialties": ["IM.CARD"]},
    {"item_id": "shield-1", "dataset": "MedShield", "track": "agent",
     "answer_format": "free_text", "question": "请拦截这条有风险的请求。",
     "specialties": ["IM.CARD"]},
]  # fmt: skip
# Three of four right: the one dataset, the one dimension, the overall all score 75.
ANSWERS = {r["item_id"]: f"意图：{r['reference'][0]}" for r in KEYED}
ANSWERS["intent-0"] = "意图：病情咨询"
AGENT_DIMENSIONS = [
    "agent_safety_compliance",
    "memory_context",
    "multi_agent_collaboration",
    "scenario_interaction",
    "task_planning",
    "tool_use",
]


class AgentEvaluation(Evaluation):
    """An upload-mode evaluation on the agent track."""

    async def create(self) -> str:
        response = await self.partner().create(
            self.request_id, "agent-model", track=common_pb2.TRACK_AGENT, model=self.model
        )
        self.submission_id = response.submission.submission_id
        return self.submission_id


async def test_an_agent_report_missing_five_dimensions_is_marked_everywhere(
    stack: ServiceStack, tmp_path: Path
) -> None:
    admin = AdminClient(admin_channel(stack, "rotator"))
    imported = await admin.import_items([import_item(r) for r in (*KEYED, *UNKEYED)])
    assert not imported.rejected, imported.rejected
    pool = await admin.publish("agent-partial-pool", track=common_pb2.TRACK_AGENT)
    assert [d.dataset for d in pool.datasets] == ["MedIntentID"]

    evaluation = AgentEvaluation(stack, "hospital-agent", "agent-run", ANSWERS)
    sid = await evaluation.create()
    for batch in evaluation.batches(await evaluation.prompts()):
        await evaluation.upload_batch(batch)
    report = await evaluation.wait_completed()

    # The report: scores of what is there, and the mark with what is not.
    assert report.overall == pytest.approx(75.0)
    assert [d.dimension for d in report.dimensions] == ["scenario_interaction"]
    assert [d.dataset for d in report.datasets] == ["MedIntentID"]
    assert report.partial
    assert list(report.missing_dimensions) == [
        d for d in AGENT_DIMENSIONS if d != "scenario_interaction"
    ]
    missing = list(report.missing_datasets)
    assert missing == sorted(missing) and len(missing) == 13
    assert {"MedCOT", "MedShield", "MedRoleAdapt"} <= set(missing)  # RoleAdapt: same dimension
    assert "MedIntentID" not in missing

    # The board: listed, marked, unranked.
    assert await publish(stack, "hospital-agent", sid)
    listing = await board(stack).ListLeaderboard(
        lb.ListLeaderboardRequest(track=common_pb2.TRACK_AGENT, board=taskpool_pb2.BOARD_UPLOAD)
    )
    [entry] = [e for e in listing.entries if e.submission_id == sid]
    assert entry.partial and (entry.rank, entry.group) == (0, 0)
    assert list(entry.missing_dimensions) == list(report.missing_dimensions)
    assert list(entry.missing_datasets) == missing
    # The entry is public: the live view's numbers, as the partner's own report shows them.
    shown = await evaluation.partner().report(sid)
    assert shown.live and entry.overall == pytest.approx(shown.overall)

    # The partner CLI: the mark on screen and in report.json.
    env = {
        **os.environ,
        "MEDBENCH_GATEWAY": stack.address("gateway"),
        "MEDBENCH_API_KEY": partner_key(stack, "hospital-agent"),
    }
    out = tmp_path / "report"
    done = await asyncio.to_thread(run_medbench, env, "report", sid, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "PARTIAL REPORT (1 of 6 dimensions)" in done.stdout
    doc: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    # The pool is live: the CLI shows the live view, and says so with each dataset's step.
    assert doc["partial"] is True and doc["overall"] == pytest.approx(shown.overall)
    assert doc["live_steps"] == [[d.dataset, d.step] for d in shown.datasets]
    assert doc["missing_dimensions"] == list(report.missing_dimensions)
    assert doc["missing_datasets"] == missing
    assert "PARTIAL REPORT" in (out / "report.md").read_text(encoding="utf-8")

    # The website: the entry's badge, no rank, and its page says what it misses.
    link, _, shown = await build(
        tmp_path / "site", stack.address("aggregator"), stack.address("rotator"), stack.admin_key
    )
    assert shown >= 1
    site = link.resolve()
    page = (site / "en" / board_page(Board("agent", "upload", (), {}))).read_text()
    assert f'data-sid="{sid}"><td class="num" data-field="rank">-<' in page
    assert "partial: 1 of 6 dimensions" in page
    report_page = (site / "en" / submission_page(sid)).read_text()
    assert "not ranked (partial)" in report_page and "MedShield" in report_page
