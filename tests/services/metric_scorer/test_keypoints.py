"""Tests for key-point recall."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metric_scorer.core.keypoints import (
    METRICS,
    KeyPointResult,
    key_point_recall,
    normalise,
)
from metric_scorer.core.types import ItemKey, ItemResult

ANSWER = (
    "诊断：急性ST段抬高型心肌梗死（下壁）。\n"
    "依据：胸痛持续2小时，心电图II、III、aVF导联ST段抬高，肌钙蛋白升高。\n"
    "处理：立即行急诊PCI，术前给予阿司匹林300mg嚼服及替格瑞洛180mg负荷。"
)

RECALL_CASES: list[tuple[str, str, list[str], tuple[bool, ...]]] = [
    ("verbatim", ANSWER, ["急诊PCI", "阿司匹林"], (True, True)),
    (
        "punctuation_width_case_and_spaces_ignored",
        ANSWER,
        ["ST 段抬高，", "ＩＩ、ＩＩＩ、ａＶＦ导联", "急诊pci"],
        (True, True, True),
    ),
    ("one_character_off_in_a_long_point", ANSWER, ["急性ST段抬高型心肌梗塞"], (True,)),
    ("one_character_off_in_a_short_point", ANSWER, ["心肌梗塞"], (False,)),
    ("absent_point", ANSWER, ["主动脉夹层", "肌钙蛋白升高"], (False, True)),
    ("short_answer_does_not_cover_a_longer_point", "胸痛", ["胸痛伴大汗"], (False,)),
    ("empty_answer", "", ["胸痛"], (False,)),
    ("answer_equals_point", "胸痛", ["胸痛"], (True,)),
]

# Small inputs exercise every edge; more examples only cost time.
_FEW = settings(max_examples=50, deadline=None)


@pytest.mark.parametrize(
    ("answer", "key_points", "matched"),
    [c[1:] for c in RECALL_CASES],
    ids=[c[0] for c in RECALL_CASES],
)
def test_key_point_recall(answer: str, key_points: list[str], matched: tuple[bool, ...]) -> None:
    result = key_point_recall(answer, key_points)
    assert result == KeyPointResult(recall=sum(matched) / len(matched), matched=matched)


def test_normalise_folds_width_case_punctuation_and_white_space() -> None:
    assert normalise("ＣＴ 平扫，\t增强（必要时）!") == "ct平扫增强必要时"


def test_invisible_characters_and_decomposed_letters_do_not_hide_a_key_point() -> None:
    assert normalise("低\u200b盐\u200d饮\u00ad食\ufeff") == "低盐饮食"
    nfd = unicodedata.normalize("NFD", "考虑梅尼埃病（Ménière病），建议低\u200b盐饮食。")
    assert key_point_recall(nfd, ["梅尼埃病（Ménière病）", "低盐饮食"]).recall == 1.0


def test_threshold_is_configurable() -> None:
    point = ["心肌梗塞"]
    assert key_point_recall(ANSWER, point, threshold=0.85).matched == (False,)
    assert key_point_recall(ANSWER, point, threshold=0.7).matched == (True,)
    # At 1.0 only an exact occurrence counts.
    assert key_point_recall(ANSWER, ["急性ST段抬高型心肌梗塞"], threshold=1.0).matched == (False,)
    assert key_point_recall(ANSWER, ["急性ST段抬高型心肌梗死"], threshold=1.0).matched == (True,)


@pytest.mark.parametrize(
    ("key_points", "threshold", "message"),
    [
        ([], 0.85, "no key points"),
        (["胸痛", "，。 "], 0.85, "without any text"),
        (["胸痛"], 0.0, "threshold"),
        (["胸痛"], 1.5, "threshold"),
    ],
    ids=["no_key_points", "punctuation_only_point", "zero_threshold", "threshold_above_one"],
)
def test_key_point_recall_rejects_unscorable_input(
    key_points: list[str], threshold: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        key_point_recall(ANSWER, key_points, threshold)


def test_key_point_recall_component_scores_the_keys_key_points() -> None:
    key = ItemKey(
        item_id="MedDiag-7",
        dataset="MedDiag",
        metric="key_point_recall",
        reference=(),
        key_points=("急性心肌梗死", "急诊PCI", "主动脉夹层"),
    )
    result = METRICS["key_point_recall"](ANSWER, key)
    # "急性心肌梗死" is spelled out with "ST段抬高型" in between: the best 6-character window
    # differs by more than 15 %, so it is not covered at the default threshold.
    assert result == ItemResult("MedDiag-7", "key_point_recall", 1 / 3, "1/3")


def test_key_points_named_only_while_thinking_are_not_covered() -> None:
    key = ItemKey(
        "i", "MedHC", "key_point_recall", reference=(), key_points=("急诊PCI", "主动脉夹层")
    )
    answer = "<think>需排除主动脉夹层</think>\n建议立即行急诊PCI。"
    assert METRICS["key_point_recall"](answer, key).score == 0.5


_TEXT = st.text(
    alphabet=st.sampled_from(list("发热咳嗽胸痛肺炎心肌梗死阿司匹林CTpci，。、 ")), max_size=20
)
_POINTS = st.lists(_TEXT.filter(lambda t: normalise(t) != ""), min_size=1, max_size=5)


@_FEW
@given(_POINTS)
def test_an_answer_holding_every_key_point_has_recall_one(points: list[str]) -> None:
    assert key_point_recall("；".join(points), points).recall == 1.0


@_FEW
@given(_TEXT, _POINTS, st.floats(min_value=0.05, max_value=1.0))
def test_recall_is_bounded_and_matches_the_flags(
    answer: str, points: list[str], threshold: float
) -> None:
    result = key_point_recall(answer, points, threshold)
    assert 0.0 <= result.recall <= 1.0
    assert len(result.matched) == len(points)
    assert result.recall == sum(result.matched) / len(points)


@_FEW
@given(_TEXT, _POINTS, st.floats(0.05, 1.0), st.floats(0.05, 1.0))
def test_a_lower_threshold_never_lowers_recall(
    answer: str, points: list[str], a: float, b: float
) -> None:
    low, high = sorted((a, b))
    assert (
        key_point_recall(answer, points, low).recall
        >= key_point_recall(answer, points, high).recall
    )


@_FEW
@given(_TEXT, _POINTS, st.randoms())
def test_key_point_order_only_permutes_the_flags(
    answer: str, points: list[str], rng: object
) -> None:
    order = list(range(len(points)))
    rng.shuffle(order)
    original = key_point_recall(answer, points)
    shuffled = key_point_recall(answer, [points[i] for i in order])
    assert shuffled.matched == tuple(original.matched[i] for i in order)
    assert shuffled.recall == pytest.approx(original.recall)
