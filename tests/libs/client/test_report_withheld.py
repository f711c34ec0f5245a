"""A live pool's report in the partner's files: aggregates only. The `report` command takes the
gateway's FAILED_PRECONDITION on GetItemResults as "withheld" (not an error), writes no items.csv
and no item rows, and says why on screen, in report.json, report.md and report.html; once the
pool is disclosed the same command writes items.csv."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from medbench.report.v1 import report_pb2
from medbench.submission.v1 import submission_service_pb2, submission_service_pb2_grpc
from medbench_client import partner_cli
from medbench_client.partner_cli.errors import exit_code_for, rpc_error_message
from medbench_client.render import from_json, to_csv, to_json, write_report
from medbench_client.render.html_page import to_html
from medbench_client.render.markdown import to_markdown
from tests.libs.client.test_render import make_doc
from tests.libs.client.test_report_metric_and_import_errors import SUBMISSION, report

KEY = "mbk_0123456789abcdef_" + "A" * 43
WHY = (
    "per-item results of submission sub-1 are withheld: its pool pool-1 is a live hidden pool, "
    "and per-item scores would reveal its answer keys. They are released when the maintainers "
    "disclose the pool"
)


def read_text(path: str) -> str:
    return Path(path).read_text(encoding="utf-8-sig")


def withheld_doc() -> Any:
    return dataclasses.replace(make_doc(), items=(), items_withheld=WHY)


def test_a_withheld_document_has_no_items_csv_and_says_why_everywhere(tmp_path: Path) -> None:
    doc = withheld_doc()
    assert set(to_csv(doc)) == {"datasets.csv"}
    raw = json.loads(to_json(doc))
    assert (raw["items"], raw["items_withheld"]) == ([], WHY)
    assert from_json(to_json(doc)) == doc
    for page in (to_markdown(doc), to_html(doc, {})):
        assert "Per-item results are withheld" in page and "items.csv" not in page
    files = write_report(doc, tmp_path)
    assert "items.csv" not in files and not (tmp_path / "items.csv").exists()
    # A document with items still writes them, and reads back without the new key too.
    shown = make_doc()
    assert "items.csv" in to_csv(shown) and "items.csv" in to_markdown(shown)
    older = json.loads(to_json(shown))
    del older["items_withheld"]
    assert from_json(json.dumps(older)) == shown


def test_withheld_items_and_item_rows_never_come_together() -> None:
    with pytest.raises(ValueError, match="withheld has no items"):
        dataclasses.replace(make_doc(), items_withheld=WHY)


class Gateway(submission_service_pb2_grpc.SubmissionServiceServicer):
    """GetSubmission, GetReport and GetItemResults of one completed submission; item results
    refused with `refusal` while set."""

    def __init__(self, refusal: grpc.StatusCode | None) -> None:
        self.refusal = refusal

    async def GetSubmission(self, request: Any, context: Any) -> Any:
        return submission_service_pb2.GetSubmissionResponse(submission=SUBMISSION)

    async def GetReport(self, request: Any, context: Any) -> Any:
        return submission_service_pb2.GetReportResponse(report=report(metric="choice_single"))

    async def GetItemResults(self, request: Any, context: Any) -> AsyncIterator[Any]:
        if self.refusal is not None:
            await context.abort(self.refusal, WHY)
        yield submission_service_pb2.GetItemResultsResponse(
            items=[report_pb2.ItemResult(item_id="MedExam-1-p1", dataset="MedExam", score=1.0)]
        )


async def run_report(
    refusal: grpc.StatusCode | None, out: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any] | None, str]:
    server = grpc.aio.server()
    submission_service_pb2_grpc.add_SubmissionServiceServicer_to_server(Gateway(refusal), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        argv = ["--gateway", f"127.0.0.1:{port}", "--key", KEY, "report", "sub-1"]
        args = partner_cli.build_parser().parse_args([*argv, "--out", str(out), "--json"])
        try:
            code, err = await partner_cli.run(args), ""
        except grpc.aio.AioRpcError as exc:  # as main() reports it
            code, err = exit_code_for(exc.code()), rpc_error_message(exc)
    finally:
        await server.stop(None)
    out = capsys.readouterr().out
    return code, json.loads(out) if out else None, err


async def test_the_report_command_writes_aggregates_only_for_a_live_pool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, shown, err = await run_report(grpc.StatusCode.FAILED_PRECONDITION, tmp_path, capsys)
    assert code == 0, err
    assert shown is not None and shown["items_withheld"] == WHY
    assert "items.csv" not in shown["files"] and not (tmp_path / "items.csv").exists()
    assert {"report.json", "datasets.csv", "report.md", "report.html"} <= set(shown["files"])
    doc = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert doc["items"] == [] and doc["datasets"][0]["code"] == "MedExam"


async def test_the_report_command_writes_items_csv_once_the_pool_is_disclosed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, shown, err = await run_report(None, tmp_path, capsys)
    assert code == 0, err
    assert shown is not None and shown["items_withheld"] == ""
    rows = list(csv.DictReader(io.StringIO(read_text(shown["files"]["items.csv"]))))
    assert [(r["item_id"], r["score"]) for r in rows] == [("MedExam-1-p1", "1.0000")]


async def test_any_other_refusal_of_the_item_results_is_still_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, shown, err = await run_report(grpc.StatusCode.UNAVAILABLE, tmp_path, capsys)
    assert code == 5 and shown is None and "UNAVAILABLE" in err
    assert not (tmp_path / "report.json").exists()
