"""A partial report in the partner's files and on screen: report.json carries the mark and what is
missing, report.md / report.html say it beside the overall score, the `report` command prints
it, and the leaderboard text shows a partial entry without a rank."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from medbench.common.v1 import common_pb2
from medbench.leaderboard.v1 import leaderboard_service_pb2 as lb
from medbench_client.partner_cli.results import board_lines, document, entry_dict
from medbench_client.render import ReportDocument, from_json, to_json, write_report
from medbench_client.render.html_page import to_html
from medbench_client.render.markdown import to_markdown
from tests.libs.client.test_render import make_doc
from tests.libs.client.test_report_metric_and_import_errors import SUBMISSION, report

MISSING_DIMENSIONS = ("MedAgentSafe", "MedCollabDim")
MISSING_DATASETS = ("MedCollab", "MedDefend", "MedShield")


def partial_doc() -> ReportDocument:
    return dataclasses.replace(
        make_doc(),
        partial=True,
        missing_dimensions=MISSING_DIMENSIONS,
        missing_datasets=MISSING_DATASETS,
    )


def test_report_json_carries_the_mark_and_round_trips() -> None:
    doc = partial_doc()
    raw = json.loads(to_json(doc))
    assert raw["partial"] is True
    assert raw["missing_dimensions"] == list(MISSING_DIMENSIONS)
    assert raw["missing_datasets"] == list(MISSING_DATASETS)
    assert from_json(to_json(doc)) == doc
    complete = json.loads(to_json(make_doc()))
    assert (complete["partial"], complete["missing_datasets"]) == (False, [])


@pytest.mark.parametrize(
    "change",
    [
        {"partial": True},  # partial without a missing dataset
        {"missing_datasets": ("MedCollab",)},  # missing datasets but not partial
        {"partial": True, "missing_datasets": ("MedHC",)},  # MedHC has scores here
        {"partial": True, "missing_datasets": ("X",), "missing_dimensions": ("MedKQA",)},
        {"partial": True, "missing_datasets": ("X", "X")},
        {"partial": True, "missing_datasets": "MedCollab"},
        {"partial": "yes", "missing_datasets": ("X",)},
    ],
)
def test_an_inconsistent_mark_is_refused(change: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        dataclasses.replace(make_doc(), **change)  # type: ignore[arg-type]


def test_markdown_and_html_say_it_beside_the_overall_score() -> None:
    doc = partial_doc()
    md = to_markdown(doc)
    html = to_html(doc, {})
    for text in (md, html):
        assert "PARTIAL REPORT (5 of 7 dimensions)" in text
        assert "MedAgentSafe, MedCollabDim" in text
        assert "MedCollab, MedDefend, MedShield" in text
        assert "not counted as zeros" in text
    assert md.index("PARTIAL REPORT") < md.index("## Dimensions")
    assert html.index('id="partial"') < html.index("<h2>Dimensions</h2>")
    assert "PARTIAL" not in to_markdown(make_doc()) + to_html(make_doc(), {})


def test_a_partial_report_with_every_dimension_counts_its_missing_datasets() -> None:
    doc = dataclasses.replace(make_doc(), partial=True, missing_datasets=("MedSummary",))
    assert "PARTIAL REPORT (all 5 dimensions, 1 datasets missing)" in to_markdown(doc)


def test_the_written_files_carry_the_mark(tmp_path: Path) -> None:
    paths = write_report(partial_doc(), tmp_path)
    assert json.loads(paths["report.json"].read_text())["partial"] is True
    assert "PARTIAL REPORT" in paths["report.md"].read_text()
    assert "PARTIAL REPORT" in paths["report.html"].read_text()


def test_the_report_proto_becomes_a_partial_document() -> None:
    made = report(metric="choice_single")
    made.partial = True
    made.missing_dimensions.extend(["reasoning"])
    made.missing_datasets.extend(["DDx-advanced", "MedTreat"])
    doc = document(SUBMISSION, made)
    assert doc.partial and doc.missing_dimensions == ("reasoning",)
    assert doc.missing_datasets == ("DDx-advanced", "MedTreat")
    assert not document(SUBMISSION, report(metric="choice_single")).partial


def test_the_leaderboard_text_shows_a_partial_entry_unranked_and_marked() -> None:
    def entry(sid: str, rank: int, overall: float, partial: bool = False) -> lb.LeaderboardEntry:
        e = lb.LeaderboardEntry(
            submission_id=sid, rank=rank, group=rank, model_name=sid, overall=overall,
            overall_low=overall - 1, overall_high=overall + 1, track=common_pb2.TRACK_AGENT,
            dimensions=[lb.EntryDimension(dimension=f"d{i}", score=overall) for i in range(4)],
        )  # fmt: skip
        if partial:
            e.partial = True
            e.missing_dimensions.extend(["d4", "d5"])
            e.missing_datasets.extend(["X", "Y", "Z"])
        return e

    entries = [entry("complete", 1, 70.0), entry("partial", 0, 90.0, partial=True)]
    lines = board_lines("Leaderboard", entries, 2)
    header, *rows = (line.split() for line in lines[1:] if "---" not in line)
    assert header[0] == "rank" and header[-1] == "partial"
    complete, partial = (r for r in rows if r[1] in ("complete", "partial"))
    assert complete[0] == "1" and partial[0] == "-"
    assert " ".join(partial).endswith("4 of 6 dimensions")
    assert entry_dict(entries[1])["partial"] is True
    assert entry_dict(entries[1])["missing_datasets"] == ["X", "Y", "Z"]
    # A board with no partial entry has no partial column.
    assert "partial" not in board_lines("Leaderboard", entries[:1], 1)[1]
