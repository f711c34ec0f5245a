"""Tests for multiple-choice answer extraction and scoring."""

from __future__ import annotations

import itertools
import random

import pytest

from metric_scorer.core.choice import ChoiceScore, parse_choice, score_choice

# (case id, model answer, multi, expected parsed letters "A,C" or "")
PARSE_CASES: list[tuple[str, str, bool, str]] = [
    ("angle_single", "<D>", False, "D"),
    ("english_answer_is_parenthesised", "The answer is (B).", False, "B"),
    ("english_answer_colon", "Answer: C", False, "C"),
    ("english_final_answer_multi", "Final answer: A, C", True, "A,C"),
    ("english_pronoun_is_not_option_i", "I think (C) is correct", False, "C"),
    ("english_article_is_not_option_a", "A patient like this needs D", False, "D"),
    ("english_option_word_keeps_letter", "option A is correct", False, "A"),
    ("markdown_bold_letter", "**B**", False, "B"),
    ("celsius_is_not_option_c", "B. 36.5℃", False, "B"),
    ("celsius_in_chinese_prose", "体温38℃，选B", False, "B"),
    ("angle_with_prefix", "答案：<C>", False, "C"),
    ("angle_after_answer_cue", "答：<B>", False, "B"),
    ("angle_with_spaces_inside", "< D >", False, "D"),
    ("full_width_angle_and_letter", "＜Ｄ＞", False, "D"),
    ("full_width_angle_ascii_letter", "＜D＞", False, "D"),
    ("lenticular_brackets", "【D】", False, "D"),
    ("angle_restating_option_text", "<D. 单一病种>", False, "D"),
    ("echoed_example_then_own_answer", "## 任务示例\n答：<E>\n\n本题答案：<C>", False, "C"),
    ("chinese_explanation_around_angle", "根据患者表现，考虑急性心肌梗死，答案为<A>。", False, "A"),
    ("explanation_after_angle_mentions_acronyms", "<E>\n肌红蛋白早于CK-MB和cTnI升高。", False, "E"),
    ("angle_multi_comma_space", "<A, C, E>", True, "A,C,E"),
    ("angle_multi_comma", "<A,C,E>", True, "A,C,E"),
    ("angle_multi_run_together", "<ACE>", True, "A,C,E"),
    ("angle_multi_dunhao", "<A、C、E>", True, "A,C,E"),
    ("angle_multi_full_width_comma", "<A，C，E>", True, "A,C,E"),
    ("angle_multi_unordered", "<G, A, C, B>", True, "A,B,C,G"),
    ("adjacent_wrappers_form_one_answer", "<A>、<C>", True, "A,C"),
    ("bare_letter", "D", False, "D"),
    ("bare_letter_with_full_stop", "C。", False, "C"),
    ("bare_letter_with_prefix", "答案：B", False, "B"),
    ("bare_run_together_msq", "ABC", True, "A,B,C"),
    ("bare_run_with_prefix", "答案：ACD", True, "A,C,D"),
    ("bare_dunhao", "A、C、E", True, "A,C,E"),
    ("bare_full_width_commas", "B，D，G", True, "B,D,G"),
    ("bare_spaces", "A C E", True, "A,C,E"),
    ("bare_and", "A和C", True, "A,C"),
    ("single_answered_with_two_letters", "C、E", False, "C,E"),
    ("single_answered_with_two_letters_in_angle", "<A, B>", False, "A,B"),
    ("single_answered_run_together", "AB", False, "A,B"),
    ("cue_then_option_text", "本题答案：C. 多病共存", False, "C"),
    ("cue_after_reasoning", "A项错误，B项描述不全，故选C。", False, "C"),
    ("cue_xuan_with_explanation", "选D。被刺伤后应先挤出血液再冲洗。", False, "D"),
    ("cue_skips_acronym_after_xuanze", "选择CT检查后，答案为E", False, "E"),
    ("cue_multi_with_dunhao", "正确答案是B、D和F，其余不符合。", True, "B,D,F"),
    ("cue_answer_ends_at_line_break", "答案是A\n\nB项描述不准确。", False, "A"),
    ("cue_followed_by_reason", "答案是D因为其余选项均不符合", False, "D"),
    ("label_brackets_then_letter", "【答案】D", False, "D"),
    ("parenthesised_letter", "应当选择的是（C）", False, "C"),
    ("run_together_then_explanation", "AD。阿托伐他汀可在每天任意固定时间服用。", True, "A,D"),
    (
        "acronyms_are_not_options",
        "患者CT及CTA提示夹层，NYHA分级III级，行TACE后HIV阴性，选B",
        False,
        "B",
    ),
    (
        "terms_glued_to_cjk_are_not_options",
        "B超示A级，维生素C缺乏，C反应蛋白升高，答案是D。",
        False,
        "D",
    ),
    ("isotope_is_not_an_option", "I131治疗后复查，(A)", False, "A"),
    ("hyphenated_terms_are_not_options", "HER-2阳性，A/G比值倒置，CD4+降低；B", False, "B"),
    ("option_references_in_text", "A项正确，C项也正确", True, "A,C"),
    ("acronym_not_alphabetical_in_multi", "并发 DIC ，答 BD", True, "B,D"),
    ("only_acronym", "CT", False, ""),
    ("empty_answer", "", False, ""),
    ("whitespace_answer", "   \n", True, ""),
    ("lowercase_angle_is_not_an_option", "<d>", False, ""),
    ("lowercase_multi_is_not_an_option", "<a, b>", True, ""),
    ("lowercase_bare_is_not_an_option", "答案：c", False, ""),
    ("letter_outside_valid_set", "<K>", False, ""),
    ("refusal_without_letter", "抱歉，我无法回答这个问题。", False, ""),
]


@pytest.mark.parametrize(
    ("text", "multi", "expected"),
    [case[1:] for case in PARSE_CASES],
    ids=[case[0] for case in PARSE_CASES],
)
def test_parse_choice_reads_the_answer_a_reader_would(
    text: str, multi: bool, expected: str
) -> None:
    assert parse_choice(text, multi=multi) == frozenset(expected.split(",")) - {""}


def test_parse_choice_table_has_at_least_forty_distinct_cases() -> None:
    assert len({case[0] for case in PARSE_CASES}) == len(PARSE_CASES) >= 40


def test_valid_letters_limit_which_capitals_count_as_options() -> None:
    assert parse_choice("F", multi=False, valid_letters="ABCDE") == frozenset()
    assert parse_choice("<F>", multi=False, valid_letters="ABCDEF") == frozenset("F")


@pytest.mark.parametrize(
    ("text", "reference", "multi", "expected"),
    [
        ("<C>", "C", False, ChoiceScore(correct=True, parsed="C")),
        ("<B>", "C", False, ChoiceScore(correct=False, parsed="B")),
        ("C、E", "C", False, ChoiceScore(correct=False, parsed="C,E")),
        ("", "C", False, ChoiceScore(correct=False, parsed="")),
        ("<c>", "C", False, ChoiceScore(correct=False, parsed="")),
        ("<E, C, A>", "ACE", True, ChoiceScore(correct=True, parsed="A,C,E")),
        ("<A, C>", "ACE", True, ChoiceScore(correct=False, parsed="A,C")),
        ("<A, C, E, F>", "ACE", True, ChoiceScore(correct=False, parsed="A,C,E,F")),
        ("BCD", "BCD", True, ChoiceScore(correct=True, parsed="B,C,D")),
    ],
)
def test_score_choice_is_correct_only_for_the_exact_letter_set(
    text: str, reference: str, multi: bool, expected: ChoiceScore
) -> None:
    assert score_choice(text, frozenset(reference), multi=multi) == expected


def test_any_order_or_repetition_of_the_right_letters_in_angles_scores_correct() -> None:
    rng = random.Random(20240601)
    for _ in range(300):
        reference = frozenset(rng.sample("ABCDEFGHIJ", rng.randint(1, 5)))
        letters = list(reference) + rng.choices(sorted(reference), k=rng.randint(0, 3))
        rng.shuffle(letters)
        separator = rng.choice([", ", ",", "、", " ", "", "，"])
        text = f"答案：<{separator.join(letters)}>"
        outcome = score_choice(text, reference, multi=len(reference) > 1)
        assert outcome.correct, text
        assert outcome.parsed == ",".join(sorted(reference))


def test_every_permutation_of_a_multi_answer_scores_correct() -> None:
    reference = frozenset("ACEH")
    for order in itertools.permutations(sorted(reference)):
        assert score_choice(f"<{', '.join(order)}>", reference, multi=True).correct


@pytest.mark.parametrize(
    ("reference", "multi"),
    [
        (frozenset(), False),
        (frozenset({"AB"}), True),
        (frozenset("K"), False),
        (frozenset("AB"), False),
    ],
    ids=["empty", "not_a_letter", "outside_valid_letters", "two_letters_for_single"],
)
def test_score_choice_rejects_malformed_references(reference: frozenset[str], multi: bool) -> None:
    with pytest.raises(ValueError):
        score_choice("<A>", reference, multi=multi)


def test_items_with_more_than_ten_options_score_by_their_own_letters() -> None:
    """Real DDx-advanced items have 12 options (A-L): a key beyond J is a key, and an extra
    wrong letter beyond J is a wrong letter, not noise."""
    from metric_scorer.core.choice import METRICS, option_letters
    from metric_scorer.core.types import ItemKey

    assert option_letters(12, ("C",)) == "ABCDEFGHIJKL"
    assert option_letters(0, ("C",)) == "ABCDEFGHIJ"
    assert option_letters(0, ("L",)) == "ABCDEFGHIJKL"
    multi = METRICS["choice_multi"]
    key = ItemKey("DDx-1", "DDx-advanced", "choice_multi", ("C", "L"), options=12)
    assert multi("<C, L>", key).score == 1.0
    assert multi("<L, C>", key).score == 1.0
    only_c = ItemKey("DDx-2", "DDx-advanced", "choice_multi", ("C",), options=12)
    assert multi("<C, L>", only_c).score == 0.0
    assert multi("<C, L>", only_c).parsed == "C,L"
    assert (
        METRICS["choice_single"](
            "<K>", ItemKey("x", "D", "choice_single", ("K",), options=11)
        ).score
        == 1.0
    )
