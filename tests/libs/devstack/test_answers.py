"""Canned answers moved to the option order a download shows, and where the demo finds them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medbench_devstack.answers import translate
from medbench_devstack.demo import SAMPLE_BANK, sample_bank

QUESTION = "题目：下列哪项正确\nA. 甲\nB. 乙\nC. 丙\nD. 丁"
# Shown order: the options the bank lists as C, A, D, B.
SHOWN = "题目：下列哪项正确\nA. 丙\nB. 甲\nC. 丁\nD. 乙"


@pytest.mark.parametrize(
    ("answer", "moved"),
    [
        ("<A>", "<B>"),
        ("<B, D>", "<D, C>"),
        # Letters run together are written sorted in the shown order.
        ("BD", "CD"),
        ("答案：Ｃ", "答案：Ａ"),
        # A letter inside a word stays a letter inside a word.
        ("CT示A级", "AT示B级"),
    ],
)
def test_an_answer_follows_its_option_texts_to_their_shown_letters(answer: str, moved: str) -> None:
    assert translate(answer, QUESTION, SHOWN) == moved


def test_a_worked_examples_options_are_not_taken_for_the_questions_own() -> None:
    example = "例：A. 对 B. 错\n答案：A\n\n"
    assert translate("<A>", example + QUESTION, example + SHOWN) == "<B>"


def test_inline_bracketed_options_are_followed_too() -> None:
    canonical = "题目（A）一（B）二（C）三"
    shown = "题目（A）三（B）一（C）二"
    assert translate("<A>", canonical, shown) == "<B>"


@pytest.mark.parametrize(
    "shown",
    [
        QUESTION,  # the same order
        "请简述诊断思路。",  # no options
        SHOWN.replace("题目", "问题"),  # differs other than by the order: nothing is guessed
        "题目：下列哪项正确\nA. 丙\nB. 甲\nC. 丁\nD. 戊",  # other option texts
    ],
)
def test_an_answer_is_left_as_written_unless_the_download_only_reordered_options(
    shown: str,
) -> None:
    assert translate("<A>", QUESTION, shown) == "<A>"


def test_the_sample_bank_is_found_in_the_workspace_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    bank = sample_bank()
    assert bank.as_posix().endswith(SAMPLE_BANK.as_posix())
    assert (bank / "items.jsonl").is_file() and (bank / "baseline_answers.jsonl").is_file()
    assert os.path.samefile(bank, Path(__file__).resolve().parents[3] / SAMPLE_BANK)
