"""What judging a submission cost, as maintainers read it: `python -m medbench_client
judging-cost` and `medbench admin judging-cost` (JudgeService.GetJudgingCost), against a scripted
judge scorer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from medbench.judge.v1 import judge_service_pb2 as js
from medbench.judge.v1 import judge_service_pb2_grpc
from medbench_client import cli
from medbench_client.admin_cli.main import main as admin

KEY = "mbk_maintainer"


def row(dataset: str, model: str, items: int, calls: int, hits: int, gpu: float) -> Any:
    return js.JudgingCostRow(
        dataset=dataset, judge_model=model, items=items, calls=calls, cache_hits=hits,
        prompt_tokens=1500 * calls, completion_tokens=40 * calls, gpu_seconds=gpu,
        structured_verdicts=items - hits, failures=0,
    )  # fmt: skip


# MedHC judged by a panel of two (one cache hit), MedTerm by one judge; then the totals.
COST = js.JudgingCost(
    submission_id="sub_1",
    rows=[
        row("MedHC", "qwen", 4, 3, 1, 12.0),
        row("MedHC", "qwen-vl", 4, 4, 0, 20.0),
        row("MedTerm", "qwen", 2, 2, 0, 6.0),
        row("MedHC", "", 4, 7, 1, 32.0),
        row("MedTerm", "", 2, 2, 0, 6.0),
        row("", "", 6, 9, 1, 38.0),
    ],
)


def test_the_cost_table_per_dataset_and_judge_with_per_item_figures() -> None:
    lines = cli.judging_cost_text(COST).splitlines()
    assert lines[0].startswith("Judging cost of sub_1 (tokens as the judge servers reported")
    cells = [line.split() for line in lines[1:]]
    assert cells[0][:3] == ["dataset", "judge", "model"]
    body = {(c[0], c[1] if c[1] != "(all" else "(all judges)"): c for c in cells[1:]}
    # A dataset with one judge has no second row over its judges.
    assert set(body) == {
        ("MedHC", "qwen"), ("MedHC", "qwen-vl"), ("MedTerm", "qwen"),
        ("MedHC", "(all judges)"), ("(submission)", "(all judges)"),
    }  # fmt: skip
    total = body["(submission)", "(all judges)"][3:]
    # items, calls, cache hits, prompt, completion, tokens/item, GPU-s, GPU-s/item, ...
    assert total == ["6", "9", "1", "13,500", "360", "2,310", "38.0", "6.33", "5", "0"]
    assert body["MedHC", "qwen"][2:5] == ["4", "3", "1"]


class ScriptedJudge(judge_service_pb2_grpc.JudgeServiceServicer):
    def GetJudgingCost(self, request: Any, context: grpc.ServicerContext) -> Any:
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {KEY}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown API key")
        if request.submission_id != "sub_1":
            context.abort(grpc.StatusCode.NOT_FOUND, f"no judgments of {request.submission_id}")
        return COST


@pytest.fixture(scope="module")
def judge_address() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(2))
    judge_service_pb2_grpc.add_JudgeServiceServicer_to_server(ScriptedJudge(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def test_both_clis_print_it(judge_address: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--judge-scorer", judge_address, "--key", KEY, "judging-cost", "sub_1"]) == 0
    assert capsys.readouterr().out.strip() == cli.judging_cost_text(COST)
    # (A gateway address is part of every admin profile; it is not called here.)
    flags = ["--gateway", "127.0.0.1:1", "--judge-scorer", judge_address, "--key", KEY]
    assert admin([*flags, "judging-cost", "sub_1"]) == 0
    assert capsys.readouterr().out.strip() == cli.judging_cost_text(COST)
    assert admin([*flags, "judging-cost", "sub_1", "--json"]) == 0
    [cost] = json.loads(capsys.readouterr().out)["costs"]
    assert cost["submission_id"] == "sub_1" and len(cost["rows"]) == 6
    # A submission nothing of which was judged: the service's answer, and a failing exit.
    assert admin([*flags, "judging-cost", "sub_2"]) == 1
    assert "NOT_FOUND: no judgments of sub_2" in capsys.readouterr().err
