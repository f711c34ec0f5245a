"""Decoding settings per board, the offline token estimate and prompt fitting."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.core.policy import (
    ELISION_MARKER,
    MARKER_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    OFFICIAL,
    DecodingSettings,
    InvalidDecodingSettings,
    PromptDoesNotFit,
    cut_middle,
    estimate_tokens,
    fit_messages,
    settings_for,
)
from medbench_runtime.errors import InvalidArgument

_FEW = settings(max_examples=60, deadline=None)

CASE = (
    "患者，男，58岁，因“反复胸闷、气促3年，加重伴双下肢水肿1周”入院。既往高血压病史10年，"
    "规律服用氨氯地平5mg qd。查体：BP 150/95 mmHg，HR 108次/分，双肺底可闻及湿啰音。"
)
QUESTION = "请问该患者最可能的诊断是什么？请给出诊断依据。"
ENGLISH = (
    "A 58-year-old man presents with progressive dyspnoea and bilateral ankle oedema over one "
    "week, on a background of hypertension treated with amlodipine 5 mg daily. "
)


def cost(messages: list[tuple[str, str]]) -> int:
    return sum(estimate_tokens(text) + MESSAGE_OVERHEAD_TOKENS for _, text in messages)


# --- settings ---------------------------------------------------------------------------------


def test_official_settings_are_the_boards_fixed_ones() -> None:
    assert (OFFICIAL.temperature, OFFICIAL.max_tokens, OFFICIAL.context_window) == (0.7, 512, 2048)
    assert OFFICIAL.top_p is None
    assert OFFICIAL.prompt_budget == 1536


def test_official_board_ignores_declared_settings() -> None:
    declared = DecodingSettings(0.0, 4096, 32768, top_p=0.9)
    assert settings_for("api", declared) is OFFICIAL
    assert settings_for("api", None) is OFFICIAL


def test_self_test_board_honours_valid_declared_settings() -> None:
    declared = DecodingSettings(0.0, 4096, 32768, top_p=0.9)
    assert settings_for("self_test", declared) == declared
    assert settings_for("self_test", DecodingSettings(2.0, 32768, 32769)).max_tokens == 32768


def test_self_test_board_without_declared_settings_uses_official() -> None:
    assert settings_for("self_test", None) is OFFICIAL


@pytest.mark.parametrize(
    ("declared", "field"),
    [
        (DecodingSettings(-0.1, 512, 2048), "temperature"),
        (DecodingSettings(2.01, 512, 2048), "temperature"),
        (DecodingSettings(math.nan, 512, 2048), "temperature"),
        (DecodingSettings(0.7, 0, 2048), "max_tokens"),
        (DecodingSettings(0.7, 32769, 65536), "max_tokens"),
        (DecodingSettings(0.7, 512, 512), "context_window"),
        (DecodingSettings(0.7, 512, 100), "context_window"),
        (DecodingSettings(0.7, 512, 2048, top_p=0.0), "top_p"),
        (DecodingSettings(0.7, 512, 2048, top_p=1.5), "top_p"),
    ],
)
def test_out_of_range_declared_settings_are_rejected_naming_the_field(
    declared: DecodingSettings, field: str
) -> None:
    with pytest.raises(ValueError, match=field) as err:
        settings_for("self_test", declared)
    assert isinstance(err.value, InvalidDecodingSettings)
    assert isinstance(err.value, InvalidArgument)


def test_unknown_board_is_an_error() -> None:
    with pytest.raises(ValueError, match="leaderboard"):
        settings_for("leaderboard", None)


# --- estimate_tokens --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("abcd", 1),
        ("abcde", 2),
        ("COVID19", 2),
        ("胸痛", 2),
        ("，。", 2),
        ("   ", 1),
        ("a b", 3),
        ("ab, cd", 3),
        ("5mg", 1),
        ("血压150/95", 2 + 1 + 1 + 1),
        ("μg", 2),
        ("\u3000\u3000", 1),
        (ELISION_MARKER, 13),
    ],
)
def test_estimate_follows_the_documented_rule(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_chinese_counts_at_least_one_token_per_character() -> None:
    hanzi = sum(1 for ch in CASE if "\u4e00" <= ch <= "\u9fff")
    assert estimate_tokens(CASE) >= hanzi


def test_english_counts_about_a_quarter_of_its_characters_or_more() -> None:
    assert len(ENGLISH) / 4 <= estimate_tokens(ENGLISH) <= len(ENGLISH) / 2


MIXED = st.text(
    alphabet=st.sampled_from(list("abcXYZ019 \n\t.,;:!?-()'\"患者胸痛诊断，。：；（）…μ°\u3000😀")),
    max_size=80,
)


@_FEW
@given(MIXED, MIXED)
def test_estimate_is_monotone_and_subadditive(a: str, b: str) -> None:
    assert estimate_tokens(a) <= estimate_tokens(a + b) <= estimate_tokens(a) + estimate_tokens(b)
    assert estimate_tokens(a[::-1]) == estimate_tokens(a)


# --- cut_middle -------------------------------------------------------------------------------


@_FEW
@given(MIXED.map(lambda s: s * 20), st.integers(0, 400))
def test_cut_middle_keeps_a_head_and_a_tail_within_the_limit(text: str, limit: int) -> None:
    cut = cut_middle(text, limit)
    assert estimate_tokens(cut) <= limit
    if estimate_tokens(text) <= limit:
        assert cut == text
    elif limit > MARKER_TOKENS:
        head, tail = cut.split(ELISION_MARKER)
        assert text.startswith(head) and text.endswith(tail)
        assert len(head) + len(tail) < len(text)
        assert estimate_tokens(cut) == limit
    else:
        assert text.endswith(cut)


def test_cut_middle_gives_the_head_two_thirds_and_the_tail_one_third() -> None:
    cut = cut_middle("病" * 1000, 313)
    head, tail = cut.split(ELISION_MARKER)
    assert (len(head), len(tail)) == (200, 100)


# --- fit_messages -----------------------------------------------------------------------------


def test_messages_that_fit_come_back_unchanged() -> None:
    messages = [("system", "你是一名全科医生。"), ("user", CASE + QUESTION)]
    assert fit_messages(messages, OFFICIAL) == (messages, False)


def test_a_long_chinese_case_is_cut_in_the_middle_keeping_the_question() -> None:
    messages = [("system", "你是一名全科医生。"), ("user", CASE * 40 + QUESTION)]
    fitted, changed = fit_messages(messages, OFFICIAL)
    assert changed
    assert fitted[0] == messages[0]
    role, text = fitted[1]
    assert role == "user"
    assert ELISION_MARKER in text
    assert text.startswith(CASE[:100]) and text.endswith(QUESTION)
    assert cost(fitted) == OFFICIAL.prompt_budget


def test_a_long_english_case_is_cut_in_the_middle_within_budget() -> None:
    question = "What is the most likely diagnosis? Answer with one option."
    messages = [("user", ENGLISH * 200 + question)]
    fitted, changed = fit_messages(messages, OFFICIAL)
    assert changed
    assert cost(fitted) <= OFFICIAL.prompt_budget
    assert fitted[0][1].startswith(ENGLISH[:200]) and fitted[0][1].endswith(question)


def consultation(turns: int) -> list[tuple[str, str]]:
    """A simulated doctor-patient dialogue: the model plays the doctor."""
    messages = [("system", "你是一名门诊医生，请逐步问诊。")]
    for turn in range(turns):
        messages.append(("user", f"第{turn}轮：" + CASE))
        messages.append(("assistant", f"第{turn}轮回复：请问您胸闷时是否伴有出汗、心悸？" * 3))
    messages.append(("user", "医生，我现在该做哪些检查？" + QUESTION))
    return messages


def test_a_long_dialogue_drops_its_oldest_turns_whole() -> None:
    messages = consultation(12)
    fitted, changed = fit_messages(messages, OFFICIAL)
    assert changed
    assert cost(fitted) <= OFFICIAL.prompt_budget
    assert fitted[0] == messages[0]
    assert fitted[-1] == messages[-1]
    assert not any(ELISION_MARKER in text for _, text in fitted)
    kept = fitted[1:]
    assert kept == messages[len(messages) - len(kept) :], "a suffix of whole turns survives"
    assert kept[0][0] == "user"
    assert len(kept) < len(messages) - 1


def test_dialogue_cut_drops_only_as_many_turns_as_needed() -> None:
    messages = consultation(12)
    fitted, _ = fit_messages(messages, OFFICIAL)
    one_more_turn = messages[:1] + messages[len(messages) - len(fitted) - 1 :]
    assert cost(one_more_turn) > OFFICIAL.prompt_budget


def test_agent_steps_after_the_last_user_message_stay_with_it() -> None:
    messages = [
        ("system", "你是临床决策助手，可调用检验查询工具。"),
        ("user", "旧问题：" + CASE * 20),
        ("assistant", "旧回答"),
        ("user", "请评估该患者的心衰风险。" + CASE),
        ("assistant", "调用工具 lab_query(BNP)"),
        ("tool", "BNP 1250 pg/mL; NT-proBNP 4300 pg/mL"),
    ]
    fitted, changed = fit_messages(messages, OFFICIAL)
    assert changed
    assert fitted == [messages[0], *messages[3:]]


def test_a_huge_system_message_is_cut_and_the_last_user_message_keeps_its_share() -> None:
    record = "既往病历：" + CASE * 60
    question = "最后的问题：" + CASE * 10 + QUESTION
    messages = [("system", record), ("user", question)]
    fitted, changed = fit_messages(messages, OFFICIAL)
    assert changed
    assert [role for role, _ in fitted] == ["system", "user"]
    assert cost(fitted) == OFFICIAL.prompt_budget
    (_, system), (_, user) = fitted
    assert ELISION_MARKER in system
    assert estimate_tokens(user) >= OFFICIAL.prompt_budget // 4
    assert user.endswith(QUESTION)


def test_many_kept_messages_still_leave_the_last_user_message_a_quarter() -> None:
    messages = [("system", CASE * 5) for _ in range(6)] + [("user", CASE * 30 + QUESTION)]
    fitted, _ = fit_messages(messages, OFFICIAL)
    assert cost(fitted) <= OFFICIAL.prompt_budget
    assert estimate_tokens(fitted[-1][1]) >= OFFICIAL.prompt_budget // 4


def test_a_budget_too_small_for_the_kept_messages_is_an_error() -> None:
    tiny = DecodingSettings(0.7, 100, 110)
    with pytest.raises(PromptDoesNotFit, match="10 tokens"):
        fit_messages([("system", "s"), ("user", "u")], tiny)


def test_fitting_is_deterministic() -> None:
    messages = consultation(30)
    assert fit_messages(messages, OFFICIAL) == fit_messages(list(messages), OFFICIAL)


# --- properties -------------------------------------------------------------------------------

LONG_TEXT = st.builds(lambda piece, times: piece * times, MIXED, st.integers(1, 60))
ROLES = st.sampled_from(["system", "user", "assistant", "tool"])
MESSAGES = st.lists(st.tuples(ROLES, LONG_TEXT), max_size=10)
DIALOGUES = st.builds(
    lambda system, turns, last: system + [m for pair in turns for m in pair] + [("user", last)],
    st.lists(st.tuples(st.just("system"), LONG_TEXT), max_size=1),
    st.lists(
        st.tuples(
            st.tuples(st.just("user"), LONG_TEXT), st.tuples(st.just("assistant"), LONG_TEXT)
        ),
        max_size=8,
    ),
    LONG_TEXT,
)
SETTINGS = st.builds(
    lambda max_tokens, budget: DecodingSettings(0.7, max_tokens, max_tokens + budget),
    st.integers(1, 600),
    st.integers(1, 2500),
)


def must_keep(messages: list[tuple[str, str]]) -> int:
    """System messages plus the last turn: what fit_messages never drops."""
    roles = [role for role, _ in messages]
    last_user = max((i for i, role in enumerate(roles) if role == "user"), default=0)
    return sum(
        1
        for i, role in enumerate(roles)
        if role == "system" or (i >= last_user and role != "system")
    )


def check_fit(messages: list[tuple[str, str]], decoding: DecodingSettings) -> None:
    budget = decoding.prompt_budget
    try:
        fitted, changed = fit_messages(messages, decoding)
    except PromptDoesNotFit:
        assert MESSAGE_OVERHEAD_TOKENS * must_keep(messages) > budget
        return
    assert cost(fitted) <= budget
    assert changed == (fitted != messages)
    assert fit_messages(fitted, decoding) == (fitted, False), "fitting a fitted prompt is a no-op"

    roles = [role for role, _ in messages]
    fitted_roles = [role for role, _ in fitted]
    assert fitted_roles.count("system") == roles.count("system")
    it = iter(roles)
    assert all(role in it for role in fitted_roles), "kept messages keep their order"

    if "user" in roles:
        original = next(text for role, text in reversed(messages) if role == "user")
        kept = next(text for role, text in reversed(fitted) if role == "user")
        if kept != original:
            if ELISION_MARKER in kept and not original.endswith(kept):
                head, tail = kept.split(ELISION_MARKER)
                assert original.startswith(head) and original.endswith(tail)
            else:
                assert original.endswith(kept)
        room = budget - MESSAGE_OVERHEAD_TOKENS * len(fitted)
        if room >= budget // 4:
            assert estimate_tokens(kept) >= min(estimate_tokens(original), budget // 4)


@settings(max_examples=150, deadline=None)
@given(DIALOGUES, SETTINGS)
def test_dialogues_always_fit_and_keep_the_last_user_message(
    messages: list[tuple[str, str]], decoding: DecodingSettings
) -> None:
    check_fit(messages, decoding)


@settings(max_examples=150, deadline=None)
@given(MESSAGES, SETTINGS)
def test_any_messages_fit_or_are_reported_impossible(
    messages: list[tuple[str, str]], decoding: DecodingSettings
) -> None:
    check_fit(messages, decoding)
