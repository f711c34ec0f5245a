"""Tests for rendering a submission's report to JSON, CSV, PNG, Markdown and HTML."""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json
import math
import re
import struct
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest

from medbench_client import render
from medbench_client.render import (
    RADAR_SIZE_PX,
    DatasetRow,
    DimensionRow,
    ItemResult,
    ReportDocument,
    bars_size_px,
    charts,
    dataset_bars,
    fmt_interval,
    fmt_score,
    from_json,
    radar_chart,
    to_csv,
    to_html,
    to_json,
    to_markdown,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

DIMENSIONS = {
    "MedKQA": "医学知识问答",
    "MedLU": "医学语言理解",
    "MedLG": "医学语言生成",
    "MedCR": "复杂医学推理",
    "MedSE": "医疗安全和伦理",
}
# code, Chinese name, dimension, score, half-width of the interval, items, units, rule, metric
DATASETS = [
    ("CMB-Exam", "中国医学考试", "MedKQA", 78.25, 2.1, 400, 100, "all_permutations", "accuracy"),
    ("MedHC", "医学人文常识", "MedKQA", 81.4, 3.0, 120, 120, "mean", "accuracy"),
    ("CMeIE", "中文医学信息抽取", "MedLU", 55.04, 4.2, 90, 90, "mean", "micro_f1"),
    ("DBMHG", "病历结构化", "MedLU", 62.96, 3.7, 80, 80, "mean", "micro_f1"),
    ("IMCS-V2-MRG", "医疗报告生成", "MedLG", 40.55, 5.1, 60, 60, "mean", "rouge_l"),
    ("MedDG", "医疗对话生成", "MedLG", 47.45, 4.4, 60, 60, "mean", "judge_rubric"),
    ("MedHG", "健康宣教生成", "MedLG", 51.0, 4.0, 50, 50, "mean", "judge_rubric"),
    ("CMB-Clin", "临床病例诊断", "MedCR", 66.66, 5.5, 74, 74, "mean", "judge_rubric"),
    ("DDx-basic", "鉴别诊断, 基础", "MedCR", 58.3, 6.0, 50, 50, "mean", "accuracy"),
    ("MedTreat", None, "MedCR", 60.0, 0.0, 40, 40, "mean", "accuracy"),
    ("MedSafety", "医疗安全", "MedSE", 88.05, 2.5, 100, 100, "mean", "accuracy"),
    ("MedEthics", "医学伦理", "MedSE", 91.35, 1.9, 100, 100, "mean", "accuracy"),
]
ANSWERS = ["A", "B, D", "诊断：2型糖尿病", 'He said "yes"', "=1+1", "", "多行\n回答", "C"]


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def make_doc(model: str = "华佗-GPT 7B, v2", dataset_name: str | None = None) -> ReportDocument:
    datasets = tuple(
        DatasetRow(
            code=code,
            dimension=dimension,
            score=score,
            low=score - half,
            high=score + half,
            n_items=n_items,
            n_units=n_units,
            rule=rule,
            metric=metric,
            name=dataset_name if (dataset_name and code == "MedHC") else name,
        )
        for code, name, dimension, score, half, n_items, n_units, rule, metric in DATASETS
    )
    dimensions = []
    for code, name in DIMENSIONS.items():
        mine = [d for d in datasets if d.dimension == code]
        dimensions.append(
            DimensionRow(
                code=code,
                name=name,
                score=_mean([d.score for d in mine]),
                low=_mean([d.low for d in mine]),
                high=_mean([d.high for d in mine]),
                n_datasets=len(mine),
            )
        )
    items = tuple(
        ItemResult(
            item_id=f"item-{i:03d}",
            dataset=DATASETS[i % len(DATASETS)][0],
            score=(i % 4) / 3 if i % 4 != 3 else 1.0,
            parsed_answer=ANSWERS[i % len(ANSWERS)],
        )
        for i in range(30)
    )
    overall = _mean([d.score for d in dimensions])
    return ReportDocument(
        submission_id="sub-20250101-0007",
        model=model,
        track="LLM",
        board="public",
        pool_id="pool-2025q1-r3",
        created_at=datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        overall=overall,
        overall_low=overall - 2.25,
        overall_high=overall + 2.35,
        equated=overall + 1.04,
        dimensions=tuple(dimensions),
        datasets=datasets,
        items=items,
        lineage={
            "pool_version": "pool-2025q1-r3@v7",
            "item_versions_digest": "sha256:3f2a9c",
            "prompt_hash": "sha256:77be01",
            "endpoint_model": "https://api.example.cn/v1 | huatuo-7b-v2",
            "judge_models": "qwen-max-2025-01,deepseek-v3",
            "rubric_versions": "MedDG@3,MedHG@2,CMB-Clin@5",
            "calibration_ids": "cal-2025q1",
            "scorer_version": "metric-scorer 0.4.1+g1a2b3c",
            "aggregator_version": "aggregator 0.3.0+g9d8e7f",
            "item_scores_digest": "sha256:c0ffee",
        },
    )


@pytest.fixture(scope="module")
def doc() -> ReportDocument:
    return make_doc()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, doc: ReportDocument) -> dict[str, Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "Glyph ... missing from font" fails the test
        return write_report(doc, tmp_path_factory.mktemp("report") / "out")


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _distinct_colours(path: Path) -> int:
    from matplotlib.image import imread

    pixels = imread(path)
    return len({tuple(p) for p in pixels.reshape(-1, pixels.shape[-1])[::7].tolist()})


# --------------------------------------------------------------------------- model


def test_types_have_no_field_for_reference_answers() -> None:
    assert [f.name for f in dataclasses.fields(ItemResult)] == [
        "item_id",
        "dataset",
        "score",
        "parsed_answer",
    ]
    forbidden = ("reference", "gold", "expected", "correct", "truth", "target", "label", "key")
    for kind in (ReportDocument, DimensionRow, DatasetRow, ItemResult):
        for f in dataclasses.fields(kind):
            assert not any(word in f.name for word in forbidden), (kind.__name__, f.name)


@pytest.mark.parametrize(
    "change",
    [
        {"overall": math.nan},
        {"overall_low": 90.0, "overall_high": 10.0},
        {"equated": math.inf},
        {"created_at": datetime(2025, 1, 1)},
        {"datasets": ()},
    ],
)
def test_invalid_documents_are_refused(doc: ReportDocument, change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(doc, **change)


def test_items_and_datasets_must_reference_known_codes(doc: ReportDocument) -> None:
    stray = ItemResult("x-1", "NoSuchSet", 1.0, "A")
    with pytest.raises(ValueError, match="unknown dataset"):
        dataclasses.replace(doc, items=(*doc.items, stray))
    with pytest.raises(ValueError, match="twice"):
        dataclasses.replace(doc, items=(*doc.items, doc.items[0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ItemResult("x-2", "MedHC", 1.5, "A")


# --------------------------------------------------------------------------- JSON


def test_json_round_trip_is_exact_and_stable(doc: ReportDocument) -> None:
    text = to_json(doc)
    back = from_json(text)
    assert back == doc
    assert back.created_at == doc.created_at and back.created_at.utcoffset() is not None
    assert to_json(back) == text
    assert "医学知识问答" in text  # UTF-8, not \u escapes
    assert "NaN" not in text and "Infinity" not in text
    keys = list(json.loads(text))
    assert keys == sorted(keys)


def test_from_json_rejects_foreign_or_broken_documents(doc: ReportDocument) -> None:
    payload = json.loads(to_json(doc))
    for broken in (
        {**payload, "schema": "other"},
        {**payload, "reference_answers": {}},
        {k: v for k, v in payload.items() if k != "overall"},
        {**payload, "items": [{**payload["items"][0], "reference_answer": "B"}]},
    ):
        with pytest.raises(ValueError):
            from_json(json.dumps(broken))
    with pytest.raises(ValueError):
        from_json(to_json(doc).replace('"overall": ', '"overall": NaN, "x": ', 1))


# --------------------------------------------------------------------------- CSV


def test_csv_parses_back_with_displayed_numbers(doc: ReportDocument) -> None:
    files = to_csv(doc)
    assert set(files) == {"datasets.csv", "items.csv"}
    rows = list(csv.DictReader(io.StringIO(files["datasets.csv"], newline="")))
    assert [row["dataset"] for row in rows] == [d.code for d in doc.datasets]
    for row, dataset in zip(rows, doc.datasets, strict=True):
        assert float(row["score"]) == round(dataset.score, 1)
        assert row["score"] == fmt_score(dataset.score)
        assert (row["low"], row["high"]) == (fmt_score(dataset.low), fmt_score(dataset.high))
        assert int(row["n_items"]) == dataset.n_items and int(row["n_units"]) == dataset.n_units
        assert (row["name"], row["rule"], row["metric"]) == (
            dataset.name or "",
            dataset.rule,
            dataset.metric,
        )
    assert "鉴别诊断, 基础" in {row["name"] for row in rows}  # a comma inside a Chinese name

    items = list(csv.DictReader(io.StringIO(files["items.csv"], newline="")))
    assert len(items) == 30
    for row, item in zip(items, doc.items, strict=True):
        assert row["item_id"] == item.item_id and row["dataset"] == item.dataset
        assert float(row["score"]) == pytest.approx(item.score, abs=5e-5)
        expected = "'" + item.parsed_answer if item.parsed_answer.startswith("=") else None
        assert row["parsed_answer"] == (expected or item.parsed_answer)
    answers = {row["parsed_answer"] for row in items}
    assert {'He said "yes"', "B, D", "多行\n回答", "'=1+1"} <= answers  # quoted; formula inert


# --------------------------------------------------------------------------- charts


def test_charts_are_png_of_fixed_size_and_not_blank(
    written: dict[str, Path], doc: ReportDocument
) -> None:
    radar = written["radar.png"].read_bytes()
    bars = written["datasets.png"].read_bytes()
    assert _png_size(radar) == RADAR_SIZE_PX
    assert _png_size(bars) == bars_size_px(len(doc.datasets))
    assert _distinct_colours(written["radar.png"]) > 10
    assert _distinct_colours(written["datasets.png"]) > 10


def test_charts_are_deterministic_and_survive_hostile_names(tmp_path: Path) -> None:
    hostile = make_doc(model="$x$ <script>alert(1)</script>", dataset_name="$\\frac{a$ 名")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = radar_chart(hostile, tmp_path / "a.png").read_bytes()
        second = radar_chart(hostile, tmp_path / "b.png").read_bytes()
        dataset_bars(hostile, tmp_path / "c.png")
    assert first == second
    assert _png_size((tmp_path / "c.png").read_bytes()) == bars_size_px(12)


def test_charts_fall_back_to_codes_without_a_cjk_font(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, doc: ReportDocument
) -> None:
    monkeypatch.setattr(charts, "cjk_font_path", lambda: None)
    font = charts._chart_font()
    assert font.pick("医学知识问答 (MedKQA)", "MedKQA") == "MedKQA"
    assert font.pick("名", "名") == "?"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        radar_chart(doc, tmp_path / "r.png")
        dataset_bars(doc, tmp_path / "d.png")


def test_last_resort_font_does_not_count_as_cjk() -> None:
    path = render.cjk_font_path()
    assert path is None or "lastresort" not in Path(path).name.lower()


# --------------------------------------------------------------------------- Markdown and HTML


def _expected_numbers(doc: ReportDocument) -> list[str]:
    return [
        fmt_score(doc.overall),
        fmt_interval(doc.overall_low, doc.overall_high),
        fmt_score(doc.equated or 0.0),
        *(fmt_score(d.score) for d in doc.datasets),
        *(fmt_interval(d.low, d.high) for d in doc.datasets),
        *(fmt_score(d.score) for d in doc.dimensions),
        *(fmt_interval(d.low, d.high) for d in doc.dimensions),
    ]


def test_markdown_shows_every_score_interval_chart_and_lineage(doc: ReportDocument) -> None:
    text = to_markdown(doc, "charts")
    for number in _expected_numbers(doc):
        assert number in text
    assert "](charts/radar.png)" in text and "](charts/datasets.png)" in text
    assert "## How to read this" in text and "## Lineage" in text
    assert "`sha256:c0ffee`" in text
    # A "|" inside a value is escaped, so the table keeps its columns.
    lineage_row = next(line for line in text.splitlines() if "endpoint" in line)
    assert len(re.findall(r"(?<!\\)\|", lineage_row)) == 3
    assert "](radar.png)" in to_markdown(doc, ".")


def test_html_is_self_contained_and_shows_every_number(
    written: dict[str, Path], doc: ReportDocument
) -> None:
    page = written["report.html"].read_text(encoding="utf-8")
    for number in _expected_numbers(doc):
        assert number in page
    assert page.count("<caption>") == 3
    assert '<th scope="col">Score</th>' in page and '<th scope="row">MedHC</th>' in page
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)"', page)
    assert len(images) == 2
    assert base64.b64decode(images[0][0]) == written["radar.png"].read_bytes()
    assert all(alt.strip() for _, alt in images)
    assert not re.search(r"""(src|href)=(?!["']?data:)""", page)
    assert "<link" not in page and "<script" not in page


def test_hostile_names_come_out_inert(doc: ReportDocument) -> None:
    evil = make_doc(
        model='<script>alert("m")</script>',
        dataset_name='"><img src=x onerror=alert(1)>',
    )
    page = to_html(evil, {"radar": PNG_SIGNATURE})
    assert "<script" not in page.lower() and "<img src=x" not in page
    assert "&lt;script&gt;alert(&quot;m&quot;)&lt;/script&gt;" in page
    markdown = to_markdown(evil, ".")
    assert "<script" not in markdown and "<img src=x" not in markdown
    assert "&lt;script&gt;" in markdown


# --------------------------------------------------------------------------- files


def test_write_report_writes_every_file(written: dict[str, Path], doc: ReportDocument) -> None:
    assert set(written) == {
        "report.json",
        "datasets.csv",
        "items.csv",
        "radar.png",
        "datasets.png",
        "report.md",
        "report.html",
    }
    for name, path in written.items():
        assert path.name == name and path.stat().st_size > 0
    assert from_json(written["report.json"].read_text(encoding="utf-8")) == doc
    with written["datasets.csv"].open(encoding="utf-8-sig", newline="") as handle:
        assert next(csv.reader(handle))[0] == "dataset"  # BOM for spreadsheets, stripped here
    assert written["report.md"].read_text(encoding="utf-8") == to_markdown(doc, ".")
