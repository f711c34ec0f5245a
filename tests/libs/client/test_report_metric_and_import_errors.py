"""What the README promises in the report files (each dataset's metric in datasets.csv, the
per-permutation accuracy in report.json), and import errors told once, not once per line."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from medbench.common.v1 import common_pb2
from medbench.report.v1 import report_pb2
from medbench.submission.v1 import submission_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client.cli import grouped_rejections, unknown_datasets
from medbench_client.importers import ImportRow
from medbench_client.partner_cli.results import document
from medbench_client.render.csv_files import to_csv
from medbench_client.render.document import from_json, to_json


def report(**dataset: object) -> report_pb2.Report:
    made = report_pb2.Report(
        submission_id="sub-1",
        tenant_id="t",
        overall=50.0,
        overall_low=40.0,
        overall_high=60.0,
        dimensions=[report_pb2.DimensionScore(dimension="knowledge", score=50.0, datasets=1)],
        datasets=[
            report_pb2.DatasetScore(
                dataset="MedExam",
                dimension="knowledge",
                score=50.0,
                items=4,
                units=2,
                rule="all_permutations",
                low=40.0,
                high=60.0,
                **dataset,  # type: ignore[arg-type]
            )
        ],
    )
    made.lineage.pool_id = "pool-1"
    made.created_at.FromDatetime(datetime(2026, 12, 6, tzinfo=UTC))
    return made


SUBMISSION = submission_pb2.Submission(
    submission_id="sub-1",
    model=submission_pb2.ModelInfo(name="m"),
    track=common_pb2.TRACK_LLM,
)


def test_datasets_csv_names_the_metric_and_report_json_the_per_permutation_accuracy() -> None:
    doc = document(SUBMISSION, report(metric="choice_single", item_mean=75.0))
    [row] = csv.DictReader(io.StringIO(to_csv(doc)["datasets.csv"]))
    assert (row["metric"], row["rule"], row["item_mean"]) == (
        "choice_single",
        "all_permutations",
        "75.0",
    )
    [dataset] = json.loads(to_json(doc))["datasets"]
    assert (dataset["metric"], dataset["item_mean"], dataset["score"]) == (
        "choice_single",
        75.0,
        50.0,
    )
    assert from_json(to_json(doc)) == doc


def test_a_report_built_before_the_metric_was_recorded_says_n_a() -> None:
    doc = document(SUBMISSION, report())
    [row] = csv.DictReader(io.StringIO(to_csv(doc)["datasets.csv"]))
    assert row["metric"] == "n/a"


def row(line: int, dataset: str, source: str = "") -> ImportRow:
    return ImportRow("bank.jsonl", line, f"x{line}", source, dataset, "", "q", "", ())


def test_an_unknown_dataset_is_refused_once_with_the_known_ones_and_not_sent() -> None:
    rows = [row(n, "MedExma") for n in range(1, 31)] + [row(31, "MedExam"), row(32, "", "S_V4")]
    kept, lines = unknown_datasets(rows, ["MedExam", "MedHC"])
    assert [r.line for r in kept] == [31, 32]
    assert lines == [
        "unknown dataset 'MedExma' in 30 lines (bank.jsonl:1, bank.jsonl:2, bank.jsonl:3 and 27 "
        "more), not sent; known datasets: MedExam, MedHC"
    ]


def test_server_rejections_for_one_cause_are_printed_once() -> None:
    rejected = [
        taskpool_pb2.ImportRejection(
            ref=f"f:{n}",
            item_id=f"x{n}",
            field="task.source",
            reason=f"item x{n}: no dataset for pool source 'Foo_V4' (normalised 'Foo')",
        )
        for n in range(1, 6)
    ] + [
        taskpool_pb2.ImportRejection(ref="f:9", item_id="x9", field="key", reason="item x9: empty")
    ]
    assert grouped_rejections(rejected) == [
        "  5 lines (f:1, f:2, f:3 and 2 more): task.source: no dataset for pool source 'Foo_V4' "
        "(normalised 'Foo')",
        "  f:9: key: empty",
    ]
