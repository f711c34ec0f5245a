"""Tests for the synthetic item and answer generators."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from itertools import islice
from typing import Any

import pytest

from metric_scorer.core.choice import score_choice
from rotator.core.registry import load_registry
from rotator.core.synthetic import SYNTHETIC_DATASETS, synthetic_answers, synthetic_items
from rotator.registry import DEFAULT_REGISTRY_PATH

OPTION_LINE = re.compile(r"^([A-J])\. (.+)$", re.MULTILINE)
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


def _options(item: dict[str, Any]) -> dict[str, str]:
    return dict(OPTION_LINE.findall(item["question"]))


def test_same_seed_gives_the_same_items_and_answers() -> None:
    first = list(synthetic_items(500, seed=3))
    assert first == list(synthetic_items(500, seed=3))
    assert first != list(synthetic_items(500, seed=4))
    assert list(synthetic_answers(first, 0.7, seed=1)) == list(synthetic_answers(first, 0.7, 1))


@pytest.mark.parametrize("n", [0, 1, 4, 5, 6, 999])
def test_exactly_n_items_are_generated(n: int) -> None:
    assert sum(1 for _ in synthetic_items(n, seed=11)) == n


def test_items_have_the_bank_shape_and_valid_references() -> None:
    registry = load_registry(DEFAULT_REGISTRY_PATH)
    items = list(synthetic_items(3000, seed=5))
    assert len({item["item_id"] for item in items}) == len(items)
    assert {(item["dataset"], item["answer_format"]) for item in items} == SYNTHETIC_DATASETS
    for item in items:
        assert set(item) == FIELDS
        assert item["licence"] == "Apache-2.0"
        assert item["answer_format"] in registry.dataset(item["dataset"]).answer_formats
        options = _options(item)
        assert list(options) == list("ABCDEFGHIJ"[: len(options)])
        assert item["reference"] == sorted(set(item["reference"]))
        assert set(item["reference"]) <= set(options)
        if item["answer_format"] == "choice_single":
            assert len(item["reference"]) == 1
        else:
            assert 2 <= len(item["reference"]) < len(options)
        assert len(item["question"]) < 200


def test_shuffled_datasets_come_in_complete_groups_of_five() -> None:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in synthetic_items(2003, seed=9):
        groups[item["group_id"]].append(item)
    for group_id, members in groups.items():
        if members[0]["answer_format"] == "choice_multi":
            assert len(members) == 1
            continue
        assert len(members) == 5, group_id
        assert [m["item_id"] for m in members] == [f"{group_id}-p{p}" for p in range(1, 6)]
        correct = {_options(m)[m["reference"][0]] for m in members}
        assert len(correct) == 1, group_id
        assert len({frozenset(_options(m).values()) for m in members}) == 1


def test_generation_is_lazy_and_cheap_for_large_banks() -> None:
    assert len(list(islice(synthetic_items(10**9, seed=1), 10))) == 10
    assert sum(1 for _ in synthetic_items(20_000, seed=2)) == 20_000


@pytest.mark.parametrize("accuracy", [0.0, 0.35, 0.8, 1.0])
def test_answers_score_at_roughly_the_requested_accuracy(accuracy: float) -> None:
    items = list(synthetic_items(4000, seed=21))
    answers = list(synthetic_answers(items, accuracy, seed=8))
    assert [a["item_id"] for a in answers] == [item["item_id"] for item in items]
    correct = sum(
        score_choice(
            answer["answer"],
            frozenset(item["reference"]),
            multi=item["answer_format"] == "choice_multi",
        ).correct
        for item, answer in zip(items, answers, strict=True)
    )
    assert correct / len(items) == pytest.approx(accuracy, abs=0.03)


def test_answers_use_the_format_each_dataset_asks_for() -> None:
    items = list(synthetic_items(400, seed=4))
    styles: Counter[str] = Counter()
    for item, answer in zip(items, synthetic_answers(items, 1.0, seed=0), strict=True):
        text = answer["answer"]
        if item["dataset"] == "MedRxCheck" and item["answer_format"] == "choice_multi":
            assert re.fullmatch(r"[A-J]{2,}", text)
            styles["run"] += 1
        elif item["dataset"] in {"MedSafety", "MedRxCheck"}:
            assert re.fullmatch(r"[A-J]", text)
            styles["bare"] += 1
        else:
            assert re.fullmatch(r"<[A-J](, [A-J])*>", text)
            styles["angle"] += 1
    assert set(styles) == {"run", "bare", "angle"}


def test_accuracy_outside_the_unit_interval_is_refused() -> None:
    with pytest.raises(ValueError):
        list(synthetic_answers([], 1.5, seed=0))
