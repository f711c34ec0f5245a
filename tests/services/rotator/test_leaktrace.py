"""Leak-tracing rules (pure): fingerprints, observed orders, chance, weighing the evidence."""

from __future__ import annotations

import math

from rotator.core.canaries import ORDER, Canary
from rotator.core.leaktrace import (
    CanaryHit,
    LeakEvidence,
    Variant,
    chance,
    fingerprint,
    make_variant,
    observed_order,
)
from rotator.core.options import parse_options, permutation_for, relabel

SECRET = b"test-secret"
QUESTION = "## 题目：首选的检查是\nA. 心电图\nB. 头颅CT\nC. 腹部超声\nD. 肺功能检查\nE. 血常规"


def test_fingerprints_survive_white_space_and_width_changes() -> None:
    assert fingerprint(QUESTION) == fingerprint(QUESTION.replace("\n", "\r\n  "))
    assert fingerprint(QUESTION) == fingerprint(QUESTION.replace("A.", "Ａ."))
    assert fingerprint(QUESTION) != fingerprint(QUESTION.replace("首选", "次选"))


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


def canary(item_id: str, order: tuple[int, ...]) -> Canary:
    return Canary(item_id, 0, "MedExam", ORDER, "fp-" + item_id, 1 / 119, ("A",), order)


def test_a_variant_shows_its_canaries_orders_in_place_of_the_plain_ones() -> None:
    made = make_variant(
        SECRET, "sub", "t", "pool", [("a", 5), ("b", 5), ("c", 1)], [canary("b", (4, 3, 2, 1, 0))]
    )
    orders = dict(made.orders)
    assert orders == {"a": permutation_for(SECRET, "t", "a", 5), "b": (4, 3, 2, 1, 0)}
    assert [c.item_id for c in made.canaries] == ["b"] and made.legacy == ()


def test_canary_hits_and_matched_orders_weigh_together_and_a_canary_counts_once() -> None:
    variant = Variant("sub-a", "t", "pool", (("a", (1, 0, 2, 3, 4)), ("b", (4, 3, 2, 1, 0))))
    evidence = LeakEvidence({"a": (1, 0, 2, 3, 4), "b": (4, 3, 2, 1, 0)})
    evidence.add_canary_hit(CanaryHit("t", "sub-a", "pool", "b", 1 / 119, "fp-b"))
    evidence.add_canary_hit(CanaryHit("t", "sub-a", "pool", "b", 1 / 119, "fp-b"))  # same line
    evidence.add_variant(variant)
    [suspect] = evidence.ranked()
    assert (suspect.canary_hits, suspect.checked_items, suspect.matched_items) == (1, 2, 2)
    assert math.isclose(suspect.chance, 1 / 119**2), "b once, as a canary; a as an order"
    # An older download's fictitious canary existed in that download only.
    older = LeakEvidence({})
    older.add_canary_hit(CanaryHit("u", "sub-old", "pool", "canary-1"))
    assert [(s.submission_id, s.canary_hits, s.chance) for s in older.ranked()] == [
        ("sub-old", 1, 0.0)
    ]
