"""Tests for the shipped sample task bank and its baseline answers, scored end to end."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

import rotator
from aggregator.core.report import ScoredItem, build_report
from medbench.report.v1 import report_pb2
from medbench_devstack.report_table import report_table
from metric_scorer.core.metrics import ItemKey, score_item
from rotator.core.registry import Registry, load_registry
from rotator.registry import DEFAULT_REGISTRY_PATH

BANK = Path(rotator.__file__).resolve().parent / "sample_bank"
OPTION_LINE = re.compile(r"^([A-J])\. (.+)$", re.MULTILINE)
PERMUTED = {"MedExam", "MedSafety", "MedEthics"}
FIELDS = {
    "item_id",
    "dataset",
    "group_id",
    "question",
    "answer_format",
    "reference",
    "specialties",
    "provenance",
    "licence",
}
# The baseline answers written wrong on purpose (see sample_bank/SOURCE.md).
WRONG_ANSWERS = {
    "MedExam-2-p3",  # one shuffled copy answered with a distractor
    "MedSafety-2-p2",  # empty answer
    "MedSafety-3-p3",  # two letters for a single-answer question
    "MedEthics-2-p2",
    "MedEthics-2-p3",
    "MedEthics-2-p4",
    "MedEthics-2-p5",  # "配偶签字"
    "DDx-advanced-2",  # missed one of three diagnoses
    "DDx-advanced-5",  # lowercase letters are not options
    "MedRxCheck-1",  # one letter too many
    "MedRxCheck-2",  # one letter missing
}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def items() -> list[dict[str, Any]]:
    return _read_jsonl(BANK / "items.jsonl")


@pytest.fixture(scope="module")
def answers() -> dict[str, str]:
    return {row["item_id"]: row["answer"] for row in _read_jsonl(BANK / "baseline_answers.jsonl")}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(DEFAULT_REGISTRY_PATH)


def _options(question: str) -> dict[str, str]:
    return dict(OPTION_LINE.findall(question))


def _stem(question: str) -> str:
    return OPTION_LINE.sub("", question).strip()


def test_bank_has_the_promised_items_per_dataset(items: list[dict[str, Any]]) -> None:
    assert Counter(item["dataset"] for item in items) == {
        "MedExam": 20,
        "MedSafety": 15,
        "MedEthics": 15,
        "DDx-advanced": 6,
        "MedRxCheck": 4,
    }
    assert len({item["item_id"] for item in items}) == len(items)


def test_items_have_the_bank_shape_and_licence(items: list[dict[str, Any]]) -> None:
    for item in items:
        assert set(item) == FIELDS, item["item_id"]
        assert item["licence"] == "Apache-2.0"
        assert item["provenance"] == "original item written for the MedBench platform sample bank"
        assert item["specialties"] and all(isinstance(s, str) for s in item["specialties"])


def test_ids_follow_the_dataset_question_permutation_scheme(items: list[dict[str, Any]]) -> None:
    for item in items:
        dataset = re.escape(item["dataset"])
        if item["dataset"] in PERMUTED:
            match = re.fullmatch(rf"({dataset}-\d+)-p[1-5]", item["item_id"])
            assert match and item["group_id"] == match.group(1), item["item_id"]
        else:
            assert re.fullmatch(rf"{dataset}-\d+", item["item_id"])
            assert item["group_id"] == item["item_id"]


def test_every_item_fits_a_registry_dataset_and_format(
    items: list[dict[str, Any]], registry: Registry
) -> None:
    for item in items:
        dataset = registry.dataset(item["dataset"])
        assert item["answer_format"] in dataset.answer_formats, item["item_id"]
        assert dataset.track == "llm"


def test_references_name_existing_options(items: list[dict[str, Any]]) -> None:
    for item in items:
        options = _options(item["question"])
        assert list(options) == list("ABCDEFGHIJ"[: len(options)]), item["item_id"]
        assert set(item["reference"]) <= set(options), item["item_id"]
        if item["answer_format"] == "choice_single":
            assert len(item["reference"]) == 1 and len(options) == 5
        if item["dataset"] == "DDx-advanced":
            assert 6 <= len(options) <= 10 and 2 <= len(item["reference"]) <= 4
        if item["dataset"] == "MedRxCheck":
            assert len(item["reference"]) >= 2 and "示例输出" in item["question"]


def test_prompts_state_the_required_answer_format(items: list[dict[str, Any]]) -> None:
    for item in items:
        if item["dataset"] in {"MedExam", "MedEthics", "DDx-advanced"}:
            assert "<>" in item["question"], item["item_id"]
        if item["dataset"] == "DDx-advanced":
            assert "<A, C, E>" in item["question"]


def test_permuted_groups_reletter_the_same_options(items: list[dict[str, Any]]) -> None:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        if item["dataset"] in PERMUTED:
            groups[item["group_id"]].append(item)
    assert len(groups) == 4 + 3 + 3
    for group_id, members in groups.items():
        assert len(members) == 5, group_id
        layouts = [_options(m["question"]) for m in members]
        assert len({_stem(m["question"]) for m in members}) == 1, group_id
        assert len({frozenset(layout.values()) for layout in layouts}) == 1, group_id
        assert len({tuple(layout.values()) for layout in layouts}) == 5, group_id
        correct_texts = {
            layout[m["reference"][0]] for m, layout in zip(members, layouts, strict=True)
        }
        assert len(correct_texts) == 1, group_id
        assert len({m["reference"][0] for m in members}) == 5, group_id


def test_baseline_has_one_answer_per_item(
    items: list[dict[str, Any]], answers: dict[str, str]
) -> None:
    rows = _read_jsonl(BANK / "baseline_answers.jsonl")
    assert [row["item_id"] for row in rows] == [item["item_id"] for item in items]
    assert set(answers) == {item["item_id"] for item in items}


def test_baseline_scores_through_scorer_and_aggregator_as_written(
    items: list[dict[str, Any]], answers: dict[str, str], registry: Registry
) -> None:
    scored = []
    for item in items:
        dataset = registry.dataset(item["dataset"])
        metric = dataset.part_for_format(item["answer_format"]).metric
        key = ItemKey(item["item_id"], item["dataset"], metric, tuple(item["reference"]))
        result = score_item(answers[item["item_id"]], key)
        scored.append(
            ScoredItem(
                item["item_id"], item["dataset"], dataset.dimension, item["group_id"], result.score
            )
        )
    assert {s.item_id for s in scored if s.score == 0.0} == WRONG_ANSWERS
    assert all(s.score in (0.0, 1.0) for s in scored)

    report = build_report(scored, registry.rules())

    # By hand: MedExam 3 of 4 questions right in all 5 shuffles; MedSafety 1 of 3;
    # MedEthics 2 of 3; DDx-advanced 4 of 6 items; MedRxCheck 2 of 4 items.
    assert [(d.dataset, d.dimension, d.n_items, d.n_units) for d in report.datasets] == [
        ("DDx-advanced", "complex_reasoning", 6, 6),
        ("MedEthics", "safety_ethics", 15, 3),
        ("MedExam", "knowledge_qa", 20, 4),
        ("MedRxCheck", "language_understanding", 4, 4),
        ("MedSafety", "safety_ethics", 15, 3),
    ]
    assert [d.score for d in report.datasets] == pytest.approx(
        [400 / 6, 200 / 3, 75.0, 50.0, 100 / 3]
    )
    assert [(d.dimension, d.n_datasets) for d in report.dimensions] == [
        ("complex_reasoning", 1),
        ("knowledge_qa", 1),
        ("language_understanding", 1),
        ("safety_ethics", 2),
    ]
    assert [d.score for d in report.dimensions] == pytest.approx([200 / 3, 75.0, 50.0, 50.0])
    assert report.overall == pytest.approx((200 / 3 + 75.0 + 50.0 + 50.0) / 4)  # 60.4167
    # The line `make run` prints for it.
    shown = report_pb2.Report(
        overall=report.overall,
        datasets=[
            report_pb2.DatasetScore(
                dataset=d.dataset, dimension=d.dimension, score=d.score, items=d.n_items
            )
            for d in report.datasets
        ],
    )
    assert report_table(shown, {}).splitlines()[-1].startswith("overall  60.4  (95% interval")
