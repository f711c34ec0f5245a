"""Leak-tracing rules (pure): canaries, observed orders, chance."""

from __future__ import annotations

import math

from rotator.core.leaktrace import canaries, chance, fingerprint, observed_order
from rotator.core.options import parse_options, permutation_for, relabel

SECRET = b"test-secret"
QUESTION = "## 题目：首选的检查是\nA. 心电图\nB. 头颅CT\nC. 腹部超声\nD. 肺功能检查\nE. 血常规"


def test_canaries_are_deterministic_per_download_and_differ_between_downloads() -> None:
    a = canaries(SECRET, "hospital-a", "sub_1", ["MedExam", "MedSafety"], 3)
    assert a == canaries(SECRET, "hospital-a", "sub_1", ["MedExam", "MedSafety"], 3)
    b = canaries(SECRET, "hospital-b", "sub_2", ["MedExam", "MedSafety"], 3)
    assert not {c.fingerprint for c in a} & {c.fingerprint for c in b}
    assert canaries(b"other", "hospital-a", "sub_1", ["MedExam"], 3) != a
    for c in a:
        block = parse_options(c.question)
        assert block is not None and len(block.texts) == 4
        assert c.dataset in ("MedExam", "MedSafety") and c.item_id.startswith(c.dataset + "-")
    assert canaries(SECRET, "t", "s", [], 3) == []


def test_fingerprints_survive_white_space_and_width_changes() -> None:
    text = canaries(SECRET, "t", "s", ["MedExam"], 1)[0].question
    assert fingerprint(text) == fingerprint(text.replace("\n", "\r\n  "))
    assert fingerprint(text) == fingerprint(text.replace("A.", "Ａ."))
    assert fingerprint(text) != fingerprint(text.replace("患者", "病人"))


def test_observed_order_recovers_the_shown_permutation() -> None:
    block = parse_options(QUESTION)
    assert block is not None
    order = permutation_for(SECRET, "t", "item", 5)
    assert observed_order(block.texts, relabel(block, order)) == order
    assert observed_order(block.texts, QUESTION) == (0, 1, 2, 3, 4)
    assert observed_order(block.texts, QUESTION.replace("血常规", "尿常规")) is None
    assert observed_order(block.texts, "没有选项的问题") is None


def test_chance_is_the_product_of_one_over_n_factorial_minus_one() -> None:
    assert chance([]) == 1.0
    assert math.isclose(chance([5, 5]), 1 / 119**2)
    assert chance([2]) == 1.0  # two options: every download shows the only other order
