"""Tests for option parsing, re-lettering and per-tenant option orders."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from itertools import permutations
from pathlib import Path
from typing import Any

import pytest

from rotator.core.options import (
    LETTERS,
    OptionBlock,
    letter_map,
    parse_options,
    permutation_for,
    relabel,
    render,
)
from tests.shared_data import shared_path

SAMPLE_BANK = (
    Path(__file__).resolve().parents[3] / "services/rotator/src/rotator/sample_bank/items.jsonl"
)
CHOICE_FILES = {
    # file stem: lines per question id (option-order permutations shipped)
    "MedExam": 5,
    "MedSafety": 5,
    "MedEthics": 5,
    "MedRxCheck_SCQ": 5,
    "MedRxCheck_MSQ": 1,
    "DDx-advanced": 1,
}
SECRET = b"test-secret"

PARSED = [
    pytest.param(
        "题目：下列哪项属于大细胞性贫血 A. 缺铁性贫血\nB. 巨幼细胞贫血\nC. 地中海贫血\n"
        "D. 慢性病贫血",
        ("缺铁性贫血", "巨幼细胞贫血", "地中海贫血", "慢性病贫血"),
        "题目：下列哪项属于大细胞性贫血 ",
        "",
        id="first-option-on-the-stem-line",
    ),
    pytest.param(
        "## 示例：题目：正常成人安静时心率为\nA. 40～50次/分\nB. 60～100次/分\nC. 110～130次/分\n\n"
        "答：<B>\n\n## 题目：成人正常呼吸频率为\nA. 6～10次/分\nB. 12～20次/分\nC. 24～30次/分\n"
        "D. 32～40次/分\n",
        ("6～10次/分", "12～20次/分", "24～30次/分", "32～40次/分"),
        "## 示例：题目：正常成人安静时心率为\nA. 40～50次/分\nB. 60～100次/分\nC. 110～130次/分\n\n"
        "答：<B>\n\n## 题目：成人正常呼吸频率为\n",
        "\n",
        id="worked-example-before-the-real-options",
    ),
    pytest.param(
        "下列属于脂溶性维生素的是\nA．维生素A\nB．维生素C\nC．维生素B1\n",
        ("维生素A", "维生素C", "维生素B1"),
        "下列属于脂溶性维生素的是\n",
        "\n",
        id="full-width-dots",
    ),
    pytest.param(
        "问题：\nA、收缩压\nB、舒张压",
        ("收缩压", "舒张压"),
        "问题：\n",
        "",
        id="ideographic-commas",
    ),
    pytest.param("A: 阴性\nB: 阳性", ("阴性", "阳性"), "", "", id="colons"),
    pytest.param("A：阴性\nB：阳性", ("阴性", "阳性"), "", "", id="full-width-colons"),
    pytest.param(
        "首选药物是\n(A) 青霉素\n(B) 头孢曲松\n(C) 阿奇霉素\n",
        ("青霉素", "头孢曲松", "阿奇霉素"),
        "首选药物是\n(",
        "\n",
        id="parenthesised",
    ),
    pytest.param(
        "首选药物是（A）青霉素（B）头孢曲松",
        ("青霉素", "头孢曲松"),
        "首选药物是（",
        "",
        id="full-width-parentheses-on-one-line",
    ),
    pytest.param(
        "结果为\nA) 阴性\nB) 弱阳性\nC) 强阳性",
        ("阴性", "弱阳性", "强阳性"),
        "结果为\n",
        "",
        id="closing-brackets",
    ),
    pytest.param(
        "首选的检查是\nA. 头颅CT\nB. 腹部B超\nC. A型超声\nD. CT血管成像",
        ("头颅CT", "腹部B超", "A型超声", "CT血管成像"),
        "首选的检查是\n",
        "",
        id="letters-inside-option-texts",
    ),
    pytest.param(
        "红细胞与抗A血清凝集、与抗B血清不凝集，血型为\nA. A型血\nB. B型血\nC. AB型血\nD. O型血\n",
        ("A型血", "B型血", "AB型血", "O型血"),
        "红细胞与抗A血清凝集、与抗B血清不凝集，血型为\n",
        "\n",
        id="blood-groups-in-option-texts",
    ),
    pytest.param(
        "可用于贫血治疗的是()\nA.维生素CB.维生素B12C.叶酸D.铁剂\n",
        ("维生素C", "维生素B12", "叶酸", "铁剂"),
        "可用于贫血治疗的是()\n",
        "\n",
        id="all-options-on-one-line",
    ),
    pytest.param(
        "鉴别诊断包括\nA. 肺炎\nB. 肺结核C. 肺癌\nD. 肺栓塞",
        ("肺炎", "肺结核", "肺癌", "肺栓塞"),
        "鉴别诊断包括\n",
        "",
        id="one-option-run-on-in-a-line-list",
    ),
    pytest.param(
        "下列说法正确的是\nA. 甲型(A)与乙型(B)可同时感染\nB. 乙型不经血传播\nC. 均无疫苗",
        ("甲型(A)与乙型(B)可同时感染", "乙型不经血传播", "均无疫苗"),
        "下列说法正确的是\n",
        "",
        id="bracketed-letters-inside-an-option-text",
    ),
    pytest.param(
        "请选择：\nA. 维生素B. 缺乏\nB. 叶酸缺乏",
        ("维生素B. 缺乏", "叶酸缺乏"),
        "请选择：\n",
        "",
        id="next-letter-inside-a-text-before-its-line",
    ),
]

UNPARSABLE = [
    pytest.param("请简述高血压的非药物治疗措施。", id="free-text"),
    pytest.param("下列唯一的选项是\nA. 仅此一项\n", id="only-one-option"),
    pytest.param("请选择\nA. 甲\nC. 丙\nD. 丁", id="gap-after-A"),
    pytest.param("请选择\nB. 乙\nC. 丙", id="run-not-starting-at-A"),
    pytest.param("只需输出字母。示例输出：A\n答案：A, C, E", id="answer-examples-only"),
]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _sample_bank_choice_items() -> list[dict[str, Any]]:
    return [i for i in _read_jsonl(SAMPLE_BANK) if i["answer_format"].startswith("choice")]


def _pool_lines(stem: str) -> list[dict[str, Any]]:
    return _read_jsonl(shared_path("medbench-data", "medbench-v4-testpool", "llm", f"{stem}.jsonl"))


def _parsed(question: str) -> OptionBlock:
    block = parse_options(question)
    assert block is not None, question[-300:]
    return block


def _assert_relabel_round_trip(block: OptionBlock, order: tuple[int, ...]) -> None:
    reparsed = _parsed(relabel(block, order))
    assert reparsed.texts == tuple(block.texts[i] for i in order)
    assert (reparsed.prefix, reparsed.separators, reparsed.suffix, reparsed.letters) == (
        block.prefix,
        block.separators,
        block.suffix,
        block.letters,
    )
    shown = letter_map(order)
    for original, text in zip(block.letters, block.texts, strict=True):
        assert reparsed.texts[LETTERS.index(shown[original])] == text


@pytest.mark.parametrize(("question", "texts", "prefix", "suffix"), PARSED)
def test_parse_finds_the_questions_own_options(
    question: str, texts: tuple[str, ...], prefix: str, suffix: str
) -> None:
    block = _parsed(question)
    assert block.texts == texts
    assert block.letters == tuple(LETTERS[: len(texts)])
    assert (block.prefix, block.suffix) == (prefix, suffix)
    assert render(block) == question


@pytest.mark.parametrize("question", UNPARSABLE)
def test_questions_without_a_run_of_two_options_do_not_parse(question: str) -> None:
    assert parse_options(question) is None


@pytest.mark.parametrize(("question", "texts", "prefix", "suffix"), PARSED)
def test_relabel_moves_only_the_texts(
    question: str, texts: tuple[str, ...], prefix: str, suffix: str
) -> None:
    block = _parsed(question)
    _assert_relabel_round_trip(block, tuple(reversed(range(len(texts)))))


def test_relabel_keeps_letters_and_layout_in_place() -> None:
    block = _parsed("题目：首选 A. 甲\nB. 乙\nC. 丙\n")
    assert relabel(block, (2, 0, 1)) == "题目：首选 A. 丙\nB. 甲\nC. 乙\n"
    assert letter_map((2, 0, 1)) == {"C": "A", "A": "B", "B": "C"}


@pytest.mark.parametrize("order", [(0, 1), (0, 0, 1), (0, 1, 3), (1, 2, 3)])
def test_relabel_and_letter_map_reject_orders_that_are_not_permutations(
    order: tuple[int, ...],
) -> None:
    block = _parsed("A. 甲\nB. 乙\nC. 丙")
    with pytest.raises(ValueError, match="permutation"):
        relabel(block, order)
    if sorted(order) != list(range(len(order))):
        with pytest.raises(ValueError, match="permutation"):
            letter_map(order)


def test_option_block_rejects_inconsistent_parts() -> None:
    with pytest.raises(ValueError, match="2 options need 2 texts and 3 separators"):
        OptionBlock("", ("A", "B"), ("x", "y"), (". ",), "")
    with pytest.raises(ValueError, match="letters must be A, B, C"):
        OptionBlock("", ("A", "C"), ("x", "y"), (". ", "\n", ". "), "")


def test_every_sample_bank_choice_item_parses_and_renders_back_identically() -> None:
    items = _sample_bank_choice_items()
    assert items
    for item in items:
        block = _parsed(item["question"])
        assert render(block) == item["question"], item["item_id"]
        assert set(item["reference"]) <= set(block.letters), item["item_id"]


def test_sample_bank_items_survive_relabelling() -> None:
    for item in _sample_bank_choice_items():
        block = _parsed(item["question"])
        order = permutation_for(SECRET, "tenant-a", item["item_id"], len(block.texts))
        _assert_relabel_round_trip(block, order)


@pytest.mark.parametrize("stem", sorted(CHOICE_FILES))
def test_every_shared_pool_choice_line_parses_and_renders_back(stem: str) -> None:
    lines = _pool_lines(stem)
    failures = [n for n, line in enumerate(lines, 1) if parse_options(line["question"]) is None]
    assert not failures, f"{stem}: lines that did not parse: {failures}"
    for n, line in enumerate(lines, 1):
        block = _parsed(line["question"])
        assert len(block.texts) >= 2, (stem, n)
        assert render(block) == line["question"], (stem, n)


@pytest.mark.parametrize("stem", sorted(CHOICE_FILES))
def test_shared_pool_permutation_groups_share_option_count_and_texts(stem: str) -> None:
    groups: defaultdict[int, list[OptionBlock]] = defaultdict(list)
    for line in _pool_lines(stem):
        groups[line["other"]["id"]].append(_parsed(line["question"]))
    assert {len(blocks) for blocks in groups.values()} == {CHOICE_FILES[stem]}
    for group_id, blocks in groups.items():
        where = f"{stem} id {group_id}"
        assert len({len(b.texts) for b in blocks}) == 1, where
        assert len({tuple(sorted(b.texts)) for b in blocks}) == 1, where
        assert len({(b.prefix, b.suffix) for b in blocks}) == 1, where


@pytest.mark.parametrize("stem", sorted(CHOICE_FILES))
def test_shared_pool_lines_survive_relabelling(stem: str) -> None:
    for n, line in enumerate(_pool_lines(stem), 1):
        block = _parsed(line["question"])
        _assert_relabel_round_trip(
            block, permutation_for(SECRET, "tenant-a", f"{stem}-{n}", len(block.texts))
        )


def test_permutation_for_is_deterministic() -> None:
    first = permutation_for(SECRET, "tenant-a", "MedExam-1-p1", 5)
    assert first == permutation_for(SECRET, "tenant-a", "MedExam-1-p1", 5)
    assert sorted(first) == list(range(5))


@pytest.mark.parametrize("n", range(13))
def test_permutation_for_gives_a_permutation_that_is_never_the_identity(n: int) -> None:
    for k in range(300 if n <= 6 else 50):
        order = permutation_for(SECRET, "tenant-a", f"item-{k}", n)
        assert sorted(order) == list(range(n))
        assert n < 2 or order != tuple(range(n)), (n, k)


def test_two_options_always_swap() -> None:
    assert {permutation_for(SECRET, t, "item", 2) for t in ("a", "b", "c")} == {(1, 0)}


def test_different_tenants_almost_always_get_different_orders() -> None:
    items = [f"item-{k}" for k in range(1000)]
    differ = sum(
        permutation_for(SECRET, "tenant-a", i, 5) != permutation_for(SECRET, "tenant-b", i, 5)
        for i in items
    )
    # Non-identity orders of five options are 119, so two tenants agree on ~1 item in 119.
    assert differ >= 950, differ


def test_orders_depend_on_the_secret_and_on_field_boundaries() -> None:
    items = [f"item-{k}" for k in range(200)]
    same_secret = [permutation_for(SECRET, "tenant-a", i, 5) for i in items]
    other_secret = [permutation_for(b"other-secret", "tenant-a", i, 5) for i in items]
    assert sum(a != b for a, b in zip(same_secret, other_secret, strict=True)) >= 180
    split_differently = [permutation_for(SECRET, "tenant-ai", "tem-" + i[5:], 5) for i in items]
    assert sum(a != b for a, b in zip(same_secret, split_differently, strict=True)) >= 180


def test_orders_are_spread_evenly_over_the_non_identity_permutations() -> None:
    counts = Counter(permutation_for(SECRET, "tenant-a", f"item-{k}", 3) for k in range(3000))
    assert set(counts) == set(permutations(range(3))) - {(0, 1, 2)}
    assert all(500 <= c <= 700 for c in counts.values()), counts


@pytest.mark.parametrize(
    ("secret", "n", "message"),
    [(b"", 5, "secret must not be empty"), (SECRET, -1, "n must be"), (SECRET, 27, "n must be")],
)
def test_permutation_for_rejects_bad_arguments(secret: bytes, n: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        permutation_for(secret, "tenant-a", "item", n)


def test_fewer_than_two_options_keep_their_order() -> None:
    assert permutation_for(SECRET, "tenant-a", "item", 0) == ()
    assert permutation_for(SECRET, "tenant-a", "item", 1) == (0,)
