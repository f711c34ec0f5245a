"""Tests for the closed-label metrics: MedHG departments, single labels, MedQC label sets."""

from __future__ import annotations

import json
import random
import re
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metric_scorer.core.labels import (
    METRICS,
    NO_PROBLEM,
    department_key,
    parse_departments,
    parse_label,
    parse_label_set,
)
from metric_scorer.core.types import Counts, ItemKey
from tests.shared_data import shared_path

# Small inputs exercise every edge; more examples only cost time.
_FEW = settings(max_examples=50, deadline=None)


def _key(metric: str, *reference: str) -> ItemKey:
    return ItemKey(item_id="item-1", dataset="test", metric=metric, reference=reference)


DEPARTMENT_PARSE_CASES: list[tuple[str, str, list[str]]] = [
    ("requested_format", "血液科、淋巴瘤科", ["血液科", "淋巴瘤科"]),
    ("full_stop_at_end", "血液科、淋巴瘤科。", ["血液科", "淋巴瘤科"]),
    (
        "mixed_separators",
        "血液科，淋巴瘤科;放射诊断科 核医学科",
        ["血液科", "淋巴瘤科", "放射诊断科", "核医学科"],
    ),
    ("ascii_commas_and_spaces", "消化内科, 胃外科", ["消化内科", "胃外科"]),
    (
        "cue_line_then_reason",
        "建议就诊科室：精神科、心理咨询\n理由：拔毛癖属于冲动控制障碍",
        ["精神科", "心理咨询"],
    ),
    (
        "markdown_cue_and_numbered_lines",
        "**推荐科室**：\n1. 血液科\n2. 淋巴瘤科（首选）\n\n以上建议仅供参考。",
        ["血液科", "淋巴瘤科"],
    ),
    (
        "prose_first_then_list",
        "根据您的描述，考虑淋巴瘤可能。\n\n血液科、淋巴瘤科",
        ["血液科", "淋巴瘤科"],
    ),
    ("closing_remark_after_list", "血液科、淋巴瘤科。\n祝您早日康复！", ["血液科", "淋巴瘤科"]),
    ("several_cues", "首选科室：血液科\n备选科室：淋巴瘤科", ["血液科", "淋巴瘤科"]),
    ("full_width_letters", "成人ＡＤＨＤ心理咨询、精神科", ["成人ADHD心理咨询", "精神科"]),
    (
        "names_without_department_endings_kept_on_a_list_line",
        "性心理健康、精神科",
        ["性心理健康", "精神科"],
    ),
    ("duplicates_collapse", "血液科、血液科、淋巴瘤科", ["血液科", "淋巴瘤科"]),
    ("empty", "", []),
]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [c[1:] for c in DEPARTMENT_PARSE_CASES],
    ids=[c[0] for c in DEPARTMENT_PARSE_CASES],
)
def test_parse_departments(answer: str, expected: list[str]) -> None:
    assert list(parse_departments(answer).values()) == expected


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("心内科", "心血管内科", False),
        ("急诊科", "急诊医学科", False),
        ("内科", "内", False),
        ("血液科", "血液", True),
        ("心理咨询", "心理咨询科", True),
        ("小儿神经外科 ", "小儿神经外科", True),
        ("成人ＡＤＨＤ心理咨询", "成人adhd心理咨询", True),
    ],
)
def test_department_key_merges_only_safe_variants(a: str, b: str, same: bool) -> None:
    assert (department_key(a) == department_key(b)) is same


DEPARTMENT_SCORE_CASES: list[tuple[str, str, tuple[str, ...], float, Counts]] = [
    ("exact_set", "淋巴瘤科、血液科", ("血液科", "淋巴瘤科"), 1.0, Counts(2, 0, 0)),
    ("missing_one", "血液科", ("血液科", "淋巴瘤科"), 0.0, Counts(1, 0, 1)),
    # The 2024 substring rule credited this; v4 Accuracy does not.
    ("one_extra", "血液科、淋巴瘤科、肿瘤科", ("血液科", "淋巴瘤科"), 0.0, Counts(2, 1, 0)),
    ("similar_but_different_name", "心内科", ("心血管内科",), 0.0, Counts(0, 1, 1)),
    ("suffix_variant", "心理咨询科、精神科", ("心理咨询", "精神科"), 1.0, Counts(2, 0, 0)),
    (
        "reference_as_one_joined_string",
        "血液科、淋巴瘤科",
        ("血液科、淋巴瘤科",),
        1.0,
        Counts(2, 0, 0),
    ),
    ("no_answer", "", ("血液科",), 0.0, Counts(0, 0, 1)),
    (
        "drafts_before_think_end_ignored",
        "<think>\n血液科、肿瘤科\n</think>\n血液科",
        ("血液科",),
        1.0,
        Counts(1, 0, 0),
    ),
]


@pytest.mark.parametrize(
    ("answer", "reference", "score", "counts"),
    [c[1:] for c in DEPARTMENT_SCORE_CASES],
    ids=[c[0] for c in DEPARTMENT_SCORE_CASES],
)
def test_department_set_accuracy(
    answer: str, reference: tuple[str, ...], score: float, counts: Counts
) -> None:
    result = METRICS["department_set_accuracy"](answer, _key("department_set_accuracy", *reference))
    assert (result.score, result.counts) == (score, counts)


def test_department_set_accuracy_reports_the_parsed_names() -> None:
    result = METRICS["department_set_accuracy"]("淋巴瘤科、血液科", _key("x", "血液科"))
    assert result.parsed == "淋巴瘤科|血液科"


@cache
def _pool(track: str, name: str) -> list[str]:
    path = shared_path("medbench-data", "medbench-v4-testpool", track, f"{name}.jsonl")
    return [json.loads(line)["question"] for line in path.read_text("utf-8").splitlines()]


def _department_lists() -> list[list[str]]:
    lists = []
    for question in _pool("llm", "MedHG"):
        match = re.search(r"假定医院有以下科室：(.*?)。", question)
        assert match, question[:200]
        lists.append([n.strip() for n in match.group(1).split("、")])
    return lists


def test_no_two_departments_of_a_v4_list_share_a_key() -> None:
    lists = _department_lists()
    assert len(lists) == 30
    for names in lists:
        assert len({department_key(n) for n in names}) == len(names)


def test_every_v4_department_round_trips_through_the_requested_format() -> None:
    for names in _department_lists():
        gold = tuple(names[::3])
        answer = "、".join(reversed(gold))
        result = METRICS["department_set_accuracy"](answer, _key("x", *gold))
        assert result.score == 1.0, answer
        wrong = METRICS["department_set_accuracy"](answer + "、" + names[1], _key("x", *gold))
        assert wrong.score == 0.0


_DEPARTMENTS = st.sampled_from(
    ["血液科", "淋巴瘤科", "精神科", "心理咨询", "性心理健康", "心内科", "心血管内科", "营养科"]
)


@_FEW
@given(st.lists(_DEPARTMENTS, min_size=1), st.lists(_DEPARTMENTS, min_size=1), st.randoms())
def test_department_scores_ignore_order_duplicates_and_separators(
    answer_names: list[str], gold: list[str], rng: random.Random
) -> None:
    metric = METRICS["department_set_accuracy"]
    key = _key("department_set_accuracy", *gold)
    shuffled = answer_names + answer_names[:1]
    rng.shuffle(shuffled)
    first = metric("、".join(answer_names), key)
    second = metric(rng.choice(["、", "，", ",", "\n"]).join(shuffled), key)
    assert (first.score, first.counts) == (second.score, second.counts)
    assert first.score in (0.0, 1.0)
    assert first.score == (1.0 if set(answer_names) == set(gold) else 0.0)
    assert metric("、".join(gold), key).score == 1.0


LABELS = ("治愈", "好转", "未愈", "死亡")

LABEL_CASES: list[tuple[str, str, tuple[str, ...], str | None]] = [
    ("bare_label", "好转", LABELS, "好转"),
    (
        "json_value_beats_later_mentions",
        '{"预测结局": "未愈", "理由": "化疗后肿瘤仍进展，短期内有死亡可能。"}',
        LABELS,
        "未愈",
    ),
    ("fenced_json", '```json\n{"预测结局": "治愈", "理由": "术后恢复良好"}\n```', LABELS, "治愈"),
    ("cue_beats_a_later_mention", "结局：**治愈**\n理由：术后未见复发，不会死亡", LABELS, "治愈"),
    ("last_cue_wins", "初步判断为好转；复核后最终答案为治愈。病情未愈的可能较小", LABELS, "治愈"),
    ("last_mention_without_cue", "患者可能治愈，但考虑并发症，我倾向于好转", LABELS, "好转"),
    ("full_width_and_spaces", "预测结局： 好 转", LABELS, "好转"),
    ("none_mentioned", "无法判断", LABELS, None),
    ("longest_label_at_a_position", "诊断：重症肺炎", ("肺炎", "重症肺炎", "肺结核"), "重症肺炎"),
    (
        "case_folded_latin_labels",
        "意图：Medication_Query",
        ("medication_query", "booking"),
        "medication_query",
    ),
]


@pytest.mark.parametrize(
    ("answer", "labels", "expected"), [c[1:] for c in LABEL_CASES], ids=[c[0] for c in LABEL_CASES]
)
def test_parse_label(answer: str, labels: tuple[str, ...], expected: str | None) -> None:
    assert parse_label(answer, labels) == expected


@pytest.mark.parametrize(
    ("answer", "reference", "score", "parsed"),
    [
        ("预测结局：好转", ("好转", "治愈", "未愈", "死亡"), 1.0, "好转"),
        ("预测结局：治愈", ("好转", "治愈", "未愈", "死亡"), 0.0, "治愈"),
        # The gold may be repeated among the candidates.
        ("治愈", ("治愈", "治愈", "好转"), 1.0, "治愈"),
        # Only the gold given: the closed set is that one label.
        ("答案：肝癌", ("肝癌",), 1.0, "肝癌"),
        ("", ("好转", "治愈"), 0.0, ""),
        (
            "<think>结局：治愈？不，应为未愈</think>\n预测结局：好转",
            ("好转", "未愈", "治愈"),
            1.0,
            "好转",
        ),
    ],
)
def test_label_accuracy(answer: str, reference: tuple[str, ...], score: float, parsed: str) -> None:
    result = METRICS["label_accuracy"](answer, _key("label_accuracy", *reference))
    assert (result.score, result.parsed, result.counts) == (score, parsed, None)


def test_label_accuracy_needs_a_gold_label() -> None:
    with pytest.raises(ValueError, match="gold label"):
        METRICS["label_accuracy"]("好转", _key("label_accuracy"))


def test_the_outcome_prompts_own_example_answer_reads_as_its_stated_outcome() -> None:
    question = _pool("llm", "MedOutcome")[0]
    example = question.split('"answer":', 1)[1].split("\n\n", 1)[0]
    # Its reasons mention 死亡 last: a last-mention rule alone would read 死亡.
    assert "死亡" in example
    assert parse_label(example, LABELS) == "未愈"


@_FEW
@given(st.sampled_from(LABELS), st.sampled_from(LABELS), st.booleans())
def test_label_accuracy_is_one_iff_the_committed_label_is_the_gold(
    said: str, gold: str, as_json: bool
) -> None:
    answer = json.dumps({"预测结局": said}, ensure_ascii=False) if as_json else f"结局：{said}"
    reference = (gold, *LABELS)
    score = METRICS["label_accuracy"](answer, _key("label_accuracy", *reference)).score
    assert score == (1.0 if said == gold else 0.0)


# A few QC problem names of our own choosing; the full list is read from the pool below.
QC_LABELS = ["体位不正", "偏中心", "吸气不足", "无左右标识", "体内植入物"]

LABEL_SET_CASES: list[tuple[str, str, set[str]]] = [
    ("pipe_separated", "体位不正|偏中心", {"体位不正", "偏中心"}),
    ("no_problem", "无问题", set()),
    ("no_problem_with_full_stop", "无问题。", set()),
    ("quoted_like_the_prompt", "'体位不正'|'肩胛骨位于肺野内'", {"体位不正", "肩胛骨位于肺野内"}),
    (
        "chinese_separators_after_cue",
        "存在的问题：吸气不足、锁骨显示不对称",
        {"吸气不足", "锁骨显示不对称"},
    ),
    ("full_width_pipe_and_spaces", "体位不正 ｜ 偏中心", {"体位不正", "偏中心"}),
    ("one_per_line", "肋膈角未包全\n肺尖未包全", {"肋膈角未包全", "肺尖未包全"}),
    ("no_problem_beside_labels_is_dropped", "无问题|体位不正", {"体位不正"}),
]


@pytest.mark.parametrize(
    ("answer", "expected"), [c[1:] for c in LABEL_SET_CASES], ids=[c[0] for c in LABEL_SET_CASES]
)
def test_parse_label_set(answer: str, expected: set[str]) -> None:
    assert parse_label_set(answer) == expected


@pytest.mark.parametrize(
    ("answer", "reference", "score", "parsed", "counts"),
    [
        ("偏中心|体位不正", ("体位不正", "偏中心"), 1.0, "体位不正|偏中心", Counts(2, 0, 0)),
        ("体位不正", ("体位不正", "偏中心"), 0.0, "体位不正", Counts(1, 0, 1)),
        ("无问题", (NO_PROBLEM,), 1.0, NO_PROBLEM, Counts(0, 0, 0)),
        ("无问题", (), 1.0, NO_PROBLEM, Counts(0, 0, 0)),
        ("体位不正", (NO_PROBLEM,), 0.0, "体位不正", Counts(0, 1, 0)),
        ("无问题", ("体位不正|偏中心",), 0.0, NO_PROBLEM, Counts(0, 0, 2)),
        ("<think>体位不正|偏中心</think>\n无问题", (NO_PROBLEM,), 1.0, NO_PROBLEM, Counts(0, 0, 0)),
    ],
)
def test_label_set_accuracy(
    answer: str, reference: tuple[str, ...], score: float, parsed: str, counts: Counts
) -> None:
    result = METRICS["label_set_accuracy"](answer, _key("label_set_accuracy", *reference))
    assert (result.score, result.parsed, result.counts) == (score, parsed, counts)


def test_every_label_of_the_qc_prompt_round_trips_through_the_requested_format() -> None:
    question = _pool("vlm", "MedQC")[0]
    listed = question.rsplit("问题类型：", 1)[1].rstrip("。").split("、")
    assert len(listed) == 11
    assert parse_label_set("|".join(listed)) == set(listed)
    for label in listed:
        result = METRICS["label_set_accuracy"](f"{label}|{listed[0]}", _key("x", listed[0], label))
        assert result.score == 1.0, label


@_FEW
@given(st.lists(st.sampled_from(QC_LABELS)), st.lists(st.sampled_from(QC_LABELS)), st.randoms())
def test_label_set_scores_ignore_order_and_duplicates_and_stay_in_unit_interval(
    answer_labels: list[str], gold: list[str], rng: random.Random
) -> None:
    metric = METRICS["label_set_accuracy"]
    key = _key("label_set_accuracy", *gold)
    answer = "|".join(answer_labels) or NO_PROBLEM
    shuffled = answer_labels * 2
    rng.shuffle(shuffled)
    first, second = metric(answer, key), metric("|".join(shuffled) or NO_PROBLEM, key)
    assert (first.score, first.counts) == (second.score, second.counts)
    assert first.score == (1.0 if set(answer_labels) == set(gold) else 0.0)
    assert metric("|".join(gold) or NO_PROBLEM, key).score == 1.0
