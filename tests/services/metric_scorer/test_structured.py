"""Tests for JSON extraction from model text and field-by-field scoring (SMDoc, MedInsureCalc)."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metric_scorer.core.structured import (
    METRICS,
    canonical_json,
    extract_json,
    field_accuracy_metric,
    field_correct,
    field_scores,
    is_object,
    parse_number,
)
from metric_scorer.core.types import ItemKey
from tests.shared_data import shared_path

INSURE_TEMPLATE = (
    '{"总费用": 0,"纳入报销范围金额": 0,"医保报销金额": 0,"乙类项目自负金额": 0,'
    '"完全自费金额": 0,"个人支付总金额": 0,"结算后起付线剩余": 0}'
)
# Our own worked settlement for a stay shaped like the pool's (5 days x 95 bed, 3300 class-B
# surgery with 15% co-pay, 230 class-A drug, 180 deductible left, 75% reimbursed).
INSURE_GOLD = {
    "总费用": 4005,
    "纳入报销范围金额": 3510,
    "医保报销金额": 2497.5,
    "乙类项目自负金额": 495,
    "完全自费金额": 0,
    "个人支付总金额": 1507.5,
    "结算后起付线剩余": 0,
}
INSURE_ANSWER = json.dumps(INSURE_GOLD, ensure_ascii=False)

SMDOC_GOLD = {
    "主诉": "腰背部不适伴右下肢麻木1年，加重伴腰痛1月。",
    "体温(℃)": "37",
    "脉搏(次/分)": "80",
    "血压(mmHg)": "120/80",
    "腰背部有无压痛": "有",
    "右下肢直腿抬高试验(度)": "40",
    "右下肢肌力(级)": "IV级",
    "过敏史": "未知",
}

# (case id, model answer, expected value)
EXTRACT_CASES: list[tuple[str, str, Any]] = [
    ("bare_object", '{"主诉": "腰痛1月"}', {"主诉": "腰痛1月"}),
    ("json_fence", '```json\n{"主诉": "腰痛1月"}\n```', {"主诉": "腰痛1月"}),
    (
        "fence_hugging_content_like_medocr_prompt",
        '```json{"影像描述": "肝内见类圆形低密度影", "影像诊断": "肝囊肿"}```',
        {"影像描述": "肝内见类圆形低密度影", "影像诊断": "肝囊肿"},
    ),
    ("bare_fence", '```\n{"总费用": 12}\n```', {"总费用": 12}),
    ("prose_around", '结算结果如下：{"总费用": 12}。以上供参考。', {"总费用": 12}),
    (
        "echoed_template_then_answer_takes_last",
        f"按照要求的格式{INSURE_TEMPLATE}，计算如下：床位费95×5=475元……\n{INSURE_ANSWER}",
        INSURE_GOLD,
    ),
    (
        "template_fence_then_answer_fence_takes_last_fence",
        f"格式：```json\n{INSURE_TEMPLATE}\n```\n结果：```json\n{INSURE_ANSWER}\n```",
        INSURE_GOLD,
    ),
    (
        "fence_wins_over_later_bare_value",
        '```json\n{"总费用": 12}\n```\n注：计算依据见文件[1]。',
        {"总费用": 12},
    ),
    (
        "brackets_inside_strings",
        '{"现病史": "患者诉{腰痛]加重", "辅助检查": "MRI[8.16]"}',
        {"现病史": "患者诉{腰痛]加重", "辅助检查": "MRI[8.16]"},
    ),
    (
        "escaped_quote_inside_string",
        '{"现病史": "外院MRI提示\\"L4/5腰椎间盘突出\\""}',
        {"现病史": '外院MRI提示"L4/5腰椎间盘突出"'},
    ),
    (
        "full_width_quotes_in_ascii_string_are_content",
        '{"现病史": "外院MRI提示“L4/5腰椎间盘突出”"}',
        {"现病史": "外院MRI提示“L4/5腰椎间盘突出”"},
    ),
    (
        "full_width_delimiters_colons_commas",
        "{“主诉”：“反复右上腹痛10年”，“体温(℃)”：“37.0”}",
        {"主诉": "反复右上腹痛10年", "体温(℃)": "37.0"},
    ),
    (
        "full_width_comma_inside_string_kept",
        "{“主诉”：“腰痛，伴右下肢麻木”}",
        {"主诉": "腰痛，伴右下肢麻木"},
    ),
    (
        "full_width_colon_between_ascii_strings",
        '{"总费用"：4005，"完全自费金额"：0}',
        {"总费用": 4005, "完全自费金额": 0},
    ),
    (
        "trailing_comma_object",
        '{"总费用": 4005, "完全自费金额": 0,\n}',
        {"总费用": 4005, "完全自费金额": 0},
    ),
    (
        "trailing_comma_array",
        '[{"类别": ["肝癌"], "边界框": [420, 380, 510, 460],},]',
        [{"类别": ["肝癌"], "边界框": [420, 380, 510, 460]}],
    ),
    ("raw_line_break_inside_string", '{"现病史": "第一行\n第二行"}', {"现病史": "第一行\n第二行"}),
    (
        "think_drafts_are_ignored",
        '<think>先试算 {"总费用": 1}</think>\n{"总费用": 4005}',
        {"总费用": 4005},
    ),
    ("think_only_draft_has_json", '<think>{"总费用": 1}</think>无法计算。', None),
    ("no_json", "患者主诉腰痛1月，无法以JSON输出。", None),
    ("truncated_by_max_tokens", '{"主诉": "腰痛1月", "现病史": "患者1年前无明显', None),
    ("nested_full_width_quotes_are_ambiguous", "{“现病史”：“外院提示“腰突””}", None),
    ("python_dict_is_not_json", "{'主诉': '腰痛'}", None),
    (
        "broken_outer_value_keeps_inner_complete_value",
        '{"结果": {"总费用": 4005}, "说明": 未计算}',
        {"总费用": 4005},
    ),
    ("many_unclosed_brackets_stay_linear", "{" * 20000 + '{"总费用": 1}', {"总费用": 1}),
    ("mismatched_closer_ends_a_span", '{"a": [1, {"b": 2]}, "c": {"d": 3}}', {"d": 3}),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in EXTRACT_CASES], ids=[c[0] for c in EXTRACT_CASES]
)
def test_extract_json(text: str, expected: Any) -> None:
    assert extract_json(text) == expected


def test_accept_skips_values_of_the_wrong_shape() -> None:
    text = '{"总费用": 4005}\n注：见政策文件[1]'
    assert extract_json(text) == [1]
    assert extract_json(text, accept=is_object) == {"总费用": 4005}


def test_medocr_prompt_echoed_in_fence_then_answered_in_fence() -> None:
    text = (
        '输出格式为：```json{"影像描述": "", "影像诊断": ""}```\n'
        '```json\n{"影像描述": "双肺纹理清晰", "影像诊断": "双肺未见明显异常"}\n```'
    )
    assert extract_json(text, accept=is_object) == {
        "影像描述": "双肺纹理清晰",
        "影像诊断": "双肺未见明显异常",
    }


# "</think>" and "```" are read as markers wherever they stand (a model's answer does not
# quote them), so generated strings leave them out.
def _json_texts(max_size: int) -> st.SearchStrategy[str]:
    return st.text(max_size=max_size).filter(lambda t: "</think>" not in t and "```" not in t)


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**9), 10**9), _json_texts(20))
json_objects = st.dictionaries(
    _json_texts(8),
    st.recursive(
        json_scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_json_texts(5), inner),
        max_leaves=6,
    ),
    max_size=5,
)


@given(obj=json_objects, prose=st.sampled_from(["", "答：", "结果如下：\n", "根据病历，"]))
def test_any_object_round_trips_through_prose(obj: dict[str, Any], prose: str) -> None:
    for ascii_only in (True, False):
        text = f"{prose}{json.dumps(obj, ensure_ascii=ascii_only)}。"
        assert extract_json(text) == obj


@given(obj=json_objects)
def test_any_object_round_trips_through_a_fence(obj: dict[str, Any]) -> None:
    text = f"```json\n{json.dumps(obj, ensure_ascii=False, indent=2)}\n```"
    assert extract_json(text) == obj


# (case id, value, expected (number, unit) or None)
NUMBER_CASES: list[tuple[str, Any, tuple[float, str] | None]] = [
    ("int", 4005, (4005.0, "")),
    ("float", 2497.5, (2497.5, "")),
    ("numeric_string", "2497.50", (2497.5, "")),
    ("thousands_separators", "1,234.50", (1234.5, "")),
    ("yuan_suffix", "1234.5元", (1234.5, "元")),
    ("yen_prefix_full_width", "￥1,234.5", (1234.5, "元")),
    ("full_width_digits", "４００５", (4005.0, "")),
    ("spaces", " 4005 元 ", (4005.0, "元")),
    ("negative", "-12.3", (-12.3, "")),
    ("celsius", "37℃", (37.0, "°C")),
    ("rate", "80次/分", (80.0, "次/分")),
    ("blood_pressure_is_text", "120/80mmHg", None),
    ("range_is_text", "2-3月/次", None),
    ("bad_grouping_is_text", "1,23", None),
    ("roman_is_text", "IV级", None),
    ("unknown_is_text", "未知", None),
    ("bool_is_not_a_number", True, None),
    ("null_is_not_a_number", None, None),
    ("currency_with_other_unit", "¥12天", None),
    ("huge_integer", 10**400, None),
    ("infinite_float", float("inf"), None),
]


@pytest.mark.parametrize(
    ("value", "expected"), [c[1:] for c in NUMBER_CASES], ids=[c[0] for c in NUMBER_CASES]
)
def test_parse_number(value: Any, expected: tuple[float, str] | None) -> None:
    assert parse_number(value) == expected


# (case id, answer value, reference value, correct)
FIELD_CASES: list[tuple[str, Any, Any, bool]] = [
    ("same_text", "腰痛1月", "腰痛1月", True),
    ("white_space_ignored", " 腰痛 1月\n", "腰痛1月", True),
    ("full_width_folded", "Ｌ４/５腰椎间盘突出", "L4/5腰椎间盘突出", True),
    ("punctuation_differs", "腰痛1月。", "腰痛1月", False),
    ("unknown_matches_unknown", "未知", "未知", True),
    ("unknown_is_not_null", None, "未知", False),
    ("number_as_string", "37.0", "37", True),
    ("number_with_unit_in_answer", "37℃", "37", True),
    ("unit_in_reference_absent_in_answer", "80", "80次/分", True),
    ("different_units", "3周", "3天", False),
    ("money_string_with_separators", "1,507.50", 1507.5, True),
    ("money_with_yuan", "2497.5元", 2497.5, True),
    ("within_tolerance", 2497.505, 2497.5, True),
    ("exactly_one_fen_off", 2497.51, 2497.5, True),
    ("outside_tolerance", 2497.52, 2497.5, False),
    ("text_for_number", "约2497元", 2497, False),
    ("expression_for_number", "95*5=475", 475, False),
    ("list_for_text", ["肝癌"], "肝癌", False),
    ("same_list", ["T12骨折", "L4/5突出"], ["T12骨折", "L4/5突出"], True),
]


@pytest.mark.parametrize(
    ("answer", "reference", "correct"),
    [c[1:] for c in FIELD_CASES],
    ids=[c[0] for c in FIELD_CASES],
)
def test_field_correct(answer: Any, reference: Any, correct: bool) -> None:
    assert field_correct(answer, reference) is correct


def test_tolerance_is_configurable() -> None:
    assert not field_correct(2500, 2497.5)
    assert field_correct(2500, 2497.5, tolerance=5)
    key = _key(INSURE_GOLD)
    answer = json.dumps({**INSURE_GOLD, "医保报销金额": 2500})
    assert METRICS["field_accuracy"](answer, key).score == pytest.approx(6 / 7)
    assert field_accuracy_metric(tolerance=5)(answer, key).score == 1.0


def test_keys_match_after_normalisation_and_extras_are_ignored() -> None:
    answer = {"体温（℃）": "37", " 主诉 ": "腰痛", "备注": "多余字段"}
    assert field_scores(answer, {"体温(℃)": "37", "主诉": "腰痛", "过敏史": "未知"}) == {
        "体温(℃)": True,
        "主诉": True,
        "过敏史": False,
    }


def _key(reference: dict[str, Any], metric: str = "field_accuracy") -> ItemKey:
    return ItemKey(
        item_id="x1",
        dataset="SMDoc",
        metric=metric,
        reference=(json.dumps(reference, ensure_ascii=False),),
    )


# (case id, dataset gold, model answer, expected score)
ACCURACY_CASES: list[tuple[str, dict[str, Any], str, float]] = [
    ("insure_perfect_bare", INSURE_GOLD, INSURE_ANSWER, 1.0),
    (
        "insure_strings_and_units",
        INSURE_GOLD,
        '```json\n{"总费用": "4,005.00元", "纳入报销范围金额": "3510", "医保报销金额": "2497.50",'
        ' "乙类项目自负金额": "495元", "完全自费金额": "0", "个人支付总金额": "¥1,507.5",'
        ' "结算后起付线剩余": "0.00"}\n```',
        1.0,
    ),
    (
        "insure_reasoning_then_answer_two_wrong",
        INSURE_GOLD,
        "计算过程：\n1. 总费用=475+3300+230=4005元\n2. 乙类自负=3300×15%=495元\n"
        '{"总费用": 4005, "纳入报销范围金额": 3510, "医保报销金额": 2632.5,'
        ' "乙类项目自负金额": 495, "完全自费金额": 0, "个人支付总金额": 1372.5,'
        ' "结算后起付线剩余": 0}',
        5 / 7,
    ),
    ("insure_echoed_template_only", INSURE_GOLD, INSURE_TEMPLATE, 2 / 7),
    ("insure_missing_fields", INSURE_GOLD, '{"总费用": 4005, "医保报销金额": 2497.5}', 2 / 7),
    ("insure_prose_only", INSURE_GOLD, "本次住院医保报销2497.5元，个人支付1507.5元。", 0.0),
    ("insure_array_is_not_an_object", INSURE_GOLD, "[4005, 3510, 2497.5]", 0.0),
    (
        "smdoc_perfect_with_full_width_keys_and_spacing",
        SMDOC_GOLD,
        "```json\n{\n"
        '  "主诉": "腰背部不适伴右下肢麻木1年，加重伴腰痛1月。",\n'
        '  "体温（℃）": "37",\n  "脉搏（次/分）": "80",\n  "血压（mmHg）": "120/80",\n'
        '  "腰背部有无压痛": "有",\n  "右下肢直腿抬高试验（度）": "40°",\n'
        '  "右下肢肌力（级）": "IV级",\n  "过敏史": "未知"\n}\n```',
        1.0,
    ),
    (
        "smdoc_numbers_as_json_numbers_and_units",
        SMDOC_GOLD,
        '{"主诉": "腰背部不适伴右下肢麻木1年，加重伴腰痛1月。", "体温(℃)": 37.0,'
        ' "脉搏(次/分)": "80次/分", "血压(mmHg)": "120/80mmHg", "腰背部有无压痛": "有",'
        ' "右下肢直腿抬高试验(度)": 40, "右下肢肌力(级)": "IV级", "过敏史": "未知"}',
        7 / 8,
    ),
    (
        "smdoc_paraphrase_and_null_for_unknown",
        SMDOC_GOLD,
        '{"主诉": "腰背不适、右下肢麻木1年，腰痛1月", "体温(℃)": "37", "脉搏(次/分)": "80",'
        ' "血压(mmHg)": "120/80", "腰背部有无压痛": "压痛(+)", "右下肢直腿抬高试验(度)": "40",'
        ' "右下肢肌力(级)": "IV级", "过敏史": null}',
        5 / 8,
    ),
    (
        "smdoc_full_width_json",
        {"主诉": "反复右上腹痛10年，加重1年。", "Murphy征是否阳性": "否"},
        "{“主诉”：“反复右上腹痛10年，加重1年。”，“Murphy征是否阳性”：“否”，}",
        1.0,
    ),
]


@pytest.mark.parametrize(
    ("gold", "answer", "expected"),
    [c[1:] for c in ACCURACY_CASES],
    ids=[c[0] for c in ACCURACY_CASES],
)
def test_field_accuracy(gold: dict[str, Any], answer: str, expected: float) -> None:
    result = METRICS["field_accuracy"](answer, _key(gold))
    assert result.score == pytest.approx(expected)
    assert result.item_id == "x1"
    assert result.metric == "field_accuracy"


def test_parsed_is_canonical_and_truncated() -> None:
    result = METRICS["field_accuracy"]('答：{"b": 1, "a": "甲"}', _key({"a": "甲"}))
    assert result.parsed == '{"a":"甲","b":1}'
    long = METRICS["field_accuracy"](json.dumps({"现病史": "痛" * 800}), _key({"现病史": "痛"}))
    assert len(long.parsed) == 500
    assert METRICS["field_accuracy"]("无", _key({"a": "甲"})).parsed == ""
    assert canonical_json({"b": [1, {"d": 2, "c": 3}]}) == '{"b":[1,{"c":3,"d":2}]}'


@pytest.mark.parametrize("reference", [(), ("not json",), ("[1, 2]",), ("{}",)])
def test_malformed_key_raises(reference: tuple[str, ...]) -> None:
    key = ItemKey(item_id="x1", dataset="SMDoc", metric="field_accuracy", reference=reference)
    with pytest.raises(ValueError, match="x1"):
        METRICS["field_accuracy"]("{}", key)


@given(obj=json_objects.filter(bool))
def test_reference_scores_itself_one(obj: dict[str, Any]) -> None:
    assert METRICS["field_accuracy"](json.dumps(obj, ensure_ascii=False), _key(obj)).score == 1.0


def test_pool_prompts_field_lists_are_json_keys_we_match() -> None:
    """Every SMDoc prompt lists its fields as "- name"; an answer keyed by those names, with
    full-width brackets as some models write them, must score 1 against the same names."""
    path = shared_path("medbench-data", "medbench-v4-testpool", "llm", "SMDoc.jsonl")
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    assert len(items) == 30
    for item in items:
        fields = [
            line[2:].strip()
            for line in item["question"].split("需要提取的实体字段")[-1].splitlines()
            if line.startswith("- ")
        ]
        assert fields, item["other"]["id"]
        gold = {name: "未知" for name in fields}
        answer = json.dumps(
            {name.replace("(", "（").replace(")", "）"): "未知" for name in fields},
            ensure_ascii=False,
        )
        assert METRICS["field_accuracy"](answer, _key(gold)).score == 1.0


def test_pool_insure_prompts_template_parses_to_seven_fields() -> None:
    path = shared_path("medbench-data", "medbench-v4-testpool", "llm", "MedInsureCalc.jsonl")
    for line in path.read_text(encoding="utf-8").splitlines():
        template = extract_json(json.loads(line)["question"], accept=is_object)
        assert template is not None
        assert set(template) == set(INSURE_GOLD)


def test_components_load_without_metrics_so_metrics_can_merge_them() -> None:
    """library.py imports these modules to merge their METRICS and metrics.py dispatches
    through it; the modules themselves need only types.py."""
    prefix = "metric_scorer.core"
    saved = {name: module for name, module in sys.modules.items() if name.startswith(prefix)}
    package = sys.modules["metric_scorer"]
    try:
        for name in saved:
            del sys.modules[name]
        importlib.import_module("metric_scorer.core.boxes")
        importlib.import_module("metric_scorer.core.text_similarity")
        assert "metric_scorer.core.metrics" not in sys.modules
    finally:
        # Put the originals back so later tests see the classes they imported.
        for name in [name for name in sys.modules if name.startswith(prefix)]:
            del sys.modules[name]
        sys.modules.update(saved)
        package.core = saved[prefix]  # type: ignore[attr-defined]
