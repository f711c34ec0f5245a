"""Tests for set-valued F1, the information-extraction parsers and the MedReportQC component."""

from __future__ import annotations

import json
import random
import re
import warnings
from collections.abc import Hashable
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import f1_score
from sklearn.preprocessing import MultiLabelBinarizer

from metric_scorer.core.f1 import (
    METRICS,
    Event,
    F1Score,
    canonical_text,
    error_types,
    first_json,
    item_counts,
    macro_f1,
    micro_f1,
    parse_entities,
    parse_events,
    parse_relations,
    pooled_f1,
)
from metric_scorer.core.types import Counts, ItemKey
from tests.shared_data import shared_path


def _key(reference: str, item_id: str = "MedReportQC-1") -> ItemKey:
    return ItemKey(
        item_id=item_id, dataset="MedReportQC", metric="micro_f1", reference=(reference,)
    )


def test_item_counts_compare_sets_not_lists() -> None:
    assert item_counts(["a", "b", "b", "c"], ["c", "a", "d"]) == Counts(tp=2, fp=1, fn=1)


def test_micro_f1_pools_counts_instead_of_averaging_item_scores() -> None:
    # Item 1: 1 of 1 right; item 2: 1 of 3 right with 2 spurious. Per-item mean F1 would be
    # (1 + 1/3) / 2 = 0.667; pooling gives tp=2, fp=2, fn=2.
    score = micro_f1([{"a"}, {"x", "y", "b"}], [{"a"}, {"b", "c", "d"}])
    assert score == F1Score(precision=0.5, recall=0.5, f1=0.5, tp=2, fp=2, fn=2)


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ([set()], [set()], F1Score(1.0, 1.0, 1.0, 0, 0, 0)),
        ([set()], [{"a"}], F1Score(0.0, 0.0, 0.0, 0, 0, 1)),
        ([{"a"}], [set()], F1Score(0.0, 0.0, 0.0, 0, 1, 0)),
        ([{"a", "b"}], [{"a"}], F1Score(0.5, 1.0, 2 / 3, 1, 1, 0)),
        ([], [], F1Score(1.0, 1.0, 1.0, 0, 0, 0)),
    ],
    ids=["both_empty", "nothing_predicted", "nothing_expected", "one_spurious", "no_items"],
)
def test_micro_f1_edge_cases(pred: list[set[str]], gold: list[set[str]], expected: F1Score) -> None:
    assert micro_f1(pred, gold) == pytest.approx(expected)


def test_micro_f1_rejects_misaligned_items() -> None:
    with pytest.raises(ValueError):
        micro_f1([{"a"}, {"b"}], [{"a"}])


def test_pooled_f1_sums_counts() -> None:
    assert pooled_f1([Counts(1, 0, 1), Counts(2, 1, 0)]) == F1Score(0.75, 0.75, 0.75, 3, 1, 1)


@pytest.mark.parametrize(
    ("pred", "gold", "labels", "expected"),
    [
        (["a", "b", "a", "a"], ["a", "b", "b", "a"], None, (0.8 + 2 / 3) / 2),
        (["a", "a"], ["a", "b"], None, (2 / 3 + 0.0) / 2),
        (["a", "a"], ["a", "b"], ["a", "b", "c"], (2 / 3 + 0.0 + 0.0) / 3),
        ([{"a", "b"}, set()], [{"a"}, {"b"}], None, (1.0 + 0.0) / 2),
    ],
    ids=["single_label", "missed_class", "absent_class_scores_zero", "multi_label"],
)
def test_macro_f1_table(
    pred: list[Any], gold: list[Any], labels: list[str] | None, expected: float
) -> None:
    assert macro_f1(pred, gold, labels) == pytest.approx(expected)


def test_macro_f1_reads_a_string_as_one_label() -> None:
    assert macro_f1(["好转"], ["好转"]) == 1.0


def test_macro_f1_rejects_no_classes_and_misaligned_items() -> None:
    with pytest.raises(ValueError):
        macro_f1([set()], [set()])
    with pytest.raises(ValueError):
        macro_f1(["a"], ["a", "b"])


_LABELS = st.sampled_from(["疾病", "药物", "症状", "部位", "科室", "检验"])
_FACTS = st.tuples(_LABELS, st.sampled_from(["肺炎", "阿司匹林", "发热", "胸", "ALT"]))
_ITEM = st.frozensets(_FACTS, max_size=5)
_CORPUS = st.lists(st.tuples(_ITEM, _ITEM), max_size=6)
# Small corpora exercise every edge; more examples only cost time.
_FEW = settings(max_examples=40, deadline=None)


@_FEW
@given(_CORPUS)
def test_micro_f1_of_identical_inputs_is_one(corpus: list[tuple[frozenset[Any], ...]]) -> None:
    gold = [g for _, g in corpus]
    assert micro_f1(gold, gold).f1 == 1.0


@_FEW
@given(_CORPUS, st.randoms(use_true_random=False))
def test_micro_f1_ignores_order_and_duplicates(
    corpus: list[tuple[frozenset[Any], frozenset[Any]]], rng: random.Random
) -> None:
    pred, gold = [list(p) for p, _ in corpus], [g for _, g in corpus]
    shuffled = []
    for facts in pred:
        doubled = facts + facts[: len(facts) // 2]
        rng.shuffle(doubled)
        shuffled.append(doubled)
    assert micro_f1(shuffled, gold) == micro_f1(pred, gold)


@_FEW
@given(_CORPUS)
def test_micro_f1_value_is_symmetric_and_in_unit_interval(
    corpus: list[tuple[frozenset[Any], frozenset[Any]]],
) -> None:
    pred, gold = [p for p, _ in corpus], [g for _, g in corpus]
    forward, backward = micro_f1(pred, gold), micro_f1(gold, pred)
    assert forward.f1 == pytest.approx(backward.f1)
    assert (forward.precision, forward.recall) == pytest.approx(
        (backward.recall, backward.precision)
    )
    assert all(0.0 <= x <= 1.0 for x in (forward.precision, forward.recall, forward.f1))


# With one column, sklearn reads the indicator matrix as a binary target, not multi-label.
_MULTI_LABEL_CORPUS = _CORPUS.filter(lambda c: len({x for p, g in c for x in p | g}) >= 2)


def _binarised(
    pred: list[frozenset[Hashable]], gold: list[frozenset[Hashable]]
) -> tuple[Any, Any, list[Hashable]]:
    mlb = MultiLabelBinarizer()
    mlb.fit([*pred, *gold])
    return mlb.transform(gold), mlb.transform(pred), list(mlb.classes_)


@_FEW
@given(_MULTI_LABEL_CORPUS)
def test_micro_f1_agrees_with_sklearn_on_multi_label_data(
    corpus: list[tuple[frozenset[Hashable], frozenset[Hashable]]],
) -> None:
    pred, gold = [p for p, _ in corpus], [g for _, g in corpus]
    y_true, y_pred, _ = _binarised(pred, gold)
    ours = micro_f1(pred, gold)
    assert ours.f1 == pytest.approx(f1_score(y_true, y_pred, average="micro", zero_division=0))


@_FEW
@given(_MULTI_LABEL_CORPUS)
def test_macro_f1_agrees_with_sklearn_on_multi_label_data(
    corpus: list[tuple[frozenset[Hashable], frozenset[Hashable]]],
) -> None:
    pred, gold = [p for p, _ in corpus], [g for _, g in corpus]
    y_true, y_pred, classes = _binarised(pred, gold)
    expected = f1_score(y_true, y_pred, average="macro", zero_division=0)
    assert macro_f1(pred, gold, labels=classes) == pytest.approx(expected)
    assert macro_f1(pred, gold) == pytest.approx(expected)


@_FEW
@given(
    st.lists(st.tuples(_LABELS, _LABELS), min_size=1, max_size=12),
    st.lists(_LABELS, max_size=3),
)
def test_macro_f1_agrees_with_sklearn_on_single_labels(
    pairs: list[tuple[str, str]], extra_labels: list[str]
) -> None:
    pred, gold = [p for p, _ in pairs], [g for _, g in pairs]
    assert macro_f1(pred, gold) == pytest.approx(f1_score(gold, pred, average="macro"))
    # Explicit classes, some absent from both sides: sklearn warns and scores them 0.
    labels = sorted({*pred, *gold, *extra_labels})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        expected = f1_score(gold, pred, average="macro", labels=labels)
    assert macro_f1(pred, gold, labels) == pytest.approx(expected)


ENTITY_CASES: list[tuple[str, str, set[tuple[str, str]]]] = [
    (
        "promptcblue_lines",
        "上述句子中的实体包含：\n药物实体：二甲双胍，INS，阿卡波糖\n临床表现实体：\n身体部位实体：",
        {("药物", "二甲双胍"), ("药物", "INS"), ("药物", "阿卡波糖")},
    ),
    (
        "ascii_colon_and_commas",
        "疾病实体: 肺炎, 支气管哮喘\n症状: 咳嗽",
        {("疾病", "肺炎"), ("疾病", "支气管哮喘"), ("症状", "咳嗽")},
    ),
    (
        "type_without_entity_suffix",
        "药物：阿司匹林，氯吡格雷",
        {("药物", "阿司匹林"), ("药物", "氯吡格雷")},
    ),
    (
        "prefix_is_not_kept_in_the_mention",
        "疾病实体：慢性阻塞性肺疾病和哮喘重叠综合征",
        {("疾病", "慢性阻塞性肺疾病和哮喘重叠综合征")},
    ),
    (
        "none_markers_are_not_mentions",
        "药物实体：无\n疾病实体：空\n身体部位实体：股骨颈。",
        {("身体部位", "股骨颈")},
    ),
    (
        "markdown_bullets_and_bold",
        "**识别结果**\n- **药物实体**：头孢曲松\n1. 医疗程序实体：腰椎穿刺，脑脊液培养",
        {("药物", "头孢曲松"), ("医疗程序", "腰椎穿刺"), ("医疗程序", "脑脊液培养")},
    ),
    (
        "several_types_on_one_line",
        "药物实体：呋塞米；疾病实体：心力衰竭，肺水肿",
        {("药物", "呋塞米"), ("疾病", "心力衰竭"), ("疾病", "肺水肿")},
    ),
    (
        "full_width_letters_and_spaces_fold",
        "医学检验项目实体：ＡＬＴ，　血 常规 ",
        {("医学检验项目", "ALT"), ("医学检验项目", "血 常规")},
    ),
    (
        "prose_mentioning_a_type_inside_a_sentence_is_ignored",
        "该患者属于感染性疾病：需抗感染治疗。\n微生物类实体：金黄色葡萄球菌",
        {("微生物类", "金黄色葡萄球菌")},
    ),
    ("no_entities_sentence", "上述句子没有指定类型实体", set()),
    ("empty_answer", "", set()),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in ENTITY_CASES], ids=[c[0] for c in ENTITY_CASES]
)
def test_parse_entities(text: str, expected: set[tuple[str, str]]) -> None:
    assert parse_entities(text) == expected


def test_parse_entities_keeps_only_the_given_types() -> None:
    text = "药物实体：螺内酯\n疾病实体：肝硬化"
    assert parse_entities(text, types=["药物"]) == {("药物", "螺内酯")}


RELATION_CASES: list[tuple[str, str, set[tuple[str, str, str]]]] = [
    (
        "promptcblue_header_and_pairs",
        "具有药物治疗关系的头尾实体对如下：头实体为社区获得性肺炎，尾实体为阿莫西林。\n"
        "具有多发群体关系的头尾实体对如下：",
        {("药物治疗", "社区获得性肺炎", "阿莫西林")},
    ),
    (
        "several_pairs_after_one_header",
        "具有临床表现关系的头尾实体对如下：头实体为甲状腺功能亢进症，尾实体为心悸。"
        "头实体为甲状腺功能亢进症，尾实体为体重下降。",
        {("临床表现", "甲状腺功能亢进症", "心悸"), ("临床表现", "甲状腺功能亢进症", "体重下降")},
    ),
    (
        "pairs_on_following_lines",
        "具有并发症关系的头尾实体对如下：\n头实体为糖尿病，尾实体为糖尿病肾病。\n"
        "头实体为糖尿病，尾实体为视网膜病变",
        {("并发症", "糖尿病", "糖尿病肾病"), ("并发症", "糖尿病", "视网膜病变")},
    ),
    (
        "predicate_with_full_width_brackets_folds",
        "具有相关（导致）关系的头尾实体对如下：头实体为长期吸烟，尾实体为慢性支气管炎。",
        {("相关(导致)", "长期吸烟", "慢性支气管炎")},
    ),
    (
        "keyed_full_width_quotes",
        "关系：“临床表现”，头实体：“偏头痛”，尾实体：“畏光”",
        {("临床表现", "偏头痛", "畏光")},
    ),
    (
        "keyed_ascii_quotes_several_lines",
        '关系:"药物治疗",头实体:"痛风",尾实体:"秋水仙碱"\n'
        '关系："病因"，头实体："肺炎"，尾实体："肺炎链球菌"。',
        {("药物治疗", "痛风", "秋水仙碱"), ("病因", "肺炎", "肺炎链球菌")},
    ),
    (
        "keyed_without_quotes",
        "关系：实验室检查，头实体：缺铁性贫血，尾实体：血清铁蛋白",
        {("实验室检查", "缺铁性贫血", "血清铁蛋白")},
    ),
    (
        "pair_without_header_has_no_predicate",
        "头实体为哮喘，尾实体为喘息。",
        set(),
    ),
    ("empty_answer", "", set()),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in RELATION_CASES], ids=[c[0] for c in RELATION_CASES]
)
def test_parse_relations(text: str, expected: set[tuple[str, str, str]]) -> None:
    assert parse_relations(text) == expected


def test_parse_relations_filters_predicates_when_given() -> None:
    text = (
        "这两种病具有重要关系的头尾实体对如下：头实体为甲，尾实体为乙。\n"
        "具有病理分型关系的头尾实体对如下：头实体为淋巴瘤，尾实体为霍奇金淋巴瘤。"
    )
    assert parse_relations(text, predicates=["病理分型", "发病率"]) == {
        ("病理分型", "淋巴瘤", "霍奇金淋巴瘤")
    }


EVENT_CASES: list[tuple[str, str, set[Event]]] = [
    (
        "promptcblue_lines",
        "上述句子中的临床发现事件如下：\n主体词：结节；发生状态：不确定；描述词：；解剖部位：甲状腺\n"
        "主体词：呕吐；发生状态：否定；描述词：；解剖部位：",
        {Event("结节", "不确定", (), ("甲状腺",)), Event("呕吐", "否定", (), ())},
    ),
    (
        "descriptor_order_does_not_matter",
        "主体词：疼痛；发生状态：；描述词：阵发性，绞痛；解剖部位：右上腹",
        {Event("疼痛", "", ("阵发性", "绞痛"), ("右上腹",))},
    ),
    (
        "affirmed_status_words_fold_to_empty",
        "主体词：咳嗽；发生状态：肯定；描述词：夜间；解剖部位：空",
        {Event("咳嗽", "", ("夜间",), ())},
    ),
    (
        "ascii_punctuation_and_missing_fields",
        "主体词: 发热; 发生状态: 否定",
        {Event("发热", "否定", (), ())},
    ),
    (
        "two_events_on_one_line",
        "主体词：头晕；发生状态：否定；主体词：黑矇；发生状态：否定；描述词：无",
        {Event("头晕", "否定", (), ()), Event("黑矇", "否定", (), ())},
    ),
    (
        "multiple_anatomy_and_trailing_full_stop",
        "- 主体词：水肿；发生状态：；描述词：；解剖部位：双下肢，眼睑。",
        {Event("水肿", "", (), ("双下肢", "眼睑"))},
    ),
    ("prose_only", "句子中未发现临床发现事件。", set()),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in EVENT_CASES], ids=[c[0] for c in EVENT_CASES]
)
def test_parse_events(text: str, expected: set[Event]) -> None:
    assert parse_events(text) == {
        Event(e.trigger, e.status, tuple(sorted(e.descriptors)), tuple(sorted(e.anatomy)))
        for e in expected
    }


JSON_CASES: list[tuple[str, str, object]] = [
    ("bare_dict", '{"错别字": "描述：x"}', {"错别字": "描述：x"}),
    (
        "fenced",
        '好的。\n```json\n{"方位错误": "诊断：左改右"}\n```\n以上。',
        {"方位错误": "诊断：左改右"},
    ),
    ("prose_around", '检查后发现：{"单位错误": "mm改为cm"}，请参考。', {"单位错误": "mm改为cm"}),
    ("empty_dict", "该报告无问题：{}", {}),
    ("empty_list", "[]", []),
    ("citation_is_skipped", '见文献[1]。结果：[{"错误类型": "错别字"}]', [{"错误类型": "错别字"}]),
    ("python_quotes", "{'性别错误': '描述：男改为女'}", {"性别错误": "描述：男改为女"}),
    # The NFKC retry folds the values too.
    ("full_width_colon", '{"用词不当"："诊断：改为考虑"}', {"用词不当": "诊断:改为考虑"}),
    ("nested_takes_the_outer_object", '{"a": {"b": 1}}', {"a": {"b": 1}}),
    ("no_json", "报告未见明显问题。", None),
    ("deeply_nested_garbage_gives_up", "[" * 5000 + "{'a': " * 500, None),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in JSON_CASES], ids=[c[0] for c in JSON_CASES]
)
def test_first_json(text: str, expected: object) -> None:
    assert first_json(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"错别字": "x", "方位错误": "y"}, {"错别字", "方位错误"}),
        (
            [{"错误类型": "错别字", "修改建议": "x"}, {"错误类型": "单位错误"}],
            {"错别字", "单位错误"},
        ),
        ({"错误类型": "性别错误", "修改建议": "x"}, {"性别错误"}),
        (["错别字", "方位错误"], {"错别字", "方位错误"}),
        ({}, set()),
        ([], set()),
    ],
    ids=["dict_form", "list_form", "one_record", "list_of_types", "empty_dict", "empty_list"],
)
def test_error_types(value: object, expected: set[str]) -> None:
    assert error_types(value) == expected


REPORT_QC_CASES: list[tuple[str, str, str, float, str, Counts]] = [
    (
        "exact_dict",
        '{"多字或少字": "描述：肺纹改为肺纹理", "检查项目与报告不符": "诊断提及头颅"}',
        '{"检查项目与报告不符": "a", "多字或少字": "b"}',
        1.0,
        "多字或少字|检查项目与报告不符",
        Counts(2, 0, 0),
    ),
    (
        "list_form_answer_against_dict_reference",
        '```json\n[{"错误类型": "方位错误", "修改建议": "诊断：左改右"}]\n```',
        '{"方位错误": "诊断：左改为右", "单位错误": "描述：mm改为cm"}',
        2 / 3,
        "方位错误",
        Counts(1, 0, 1),
    ),
    (
        "one_spurious_type",
        '答：{"错别字": "x", "性别错误": "y"}',
        '{"错别字": "z"}',
        2 / 3,
        "性别错误|错别字",
        Counts(1, 1, 0),
    ),
    ("both_empty", "{}", "{}", 1.0, "", Counts(0, 0, 0)),
    ("empty_list_against_empty_dict", "[]", "{}", 1.0, "", Counts(0, 0, 0)),
    ("errors_claimed_on_a_clean_report", '{"错别字": "x"}', "{}", 0.0, "错别字", Counts(0, 1, 0)),
    ("no_json_on_a_clean_report", "该报告未发现问题。", "{}", 1.0, "", Counts(0, 0, 0)),
    (
        "no_json_on_a_faulty_report",
        "该报告未发现问题。",
        '{"错别字": "x"}',
        0.0,
        "",
        Counts(0, 0, 1),
    ),
]


@pytest.mark.parametrize(
    ("answer", "reference", "score", "parsed", "counts"),
    [c[1:] for c in REPORT_QC_CASES],
    ids=[c[0] for c in REPORT_QC_CASES],
)
def test_micro_f1_component_scores_error_type_keys(
    answer: str, reference: str, score: float, parsed: str, counts: Counts
) -> None:
    result = METRICS["micro_f1"](answer, _key(reference))
    assert (result.score, result.parsed, result.counts) == (pytest.approx(score), parsed, counts)
    assert result.metric == "micro_f1"


def test_micro_f1_component_accepts_a_reference_of_bare_labels() -> None:
    key = ItemKey("i", "MedReportQC", "micro_f1", reference=("错别字", "方位错误"))
    assert METRICS["micro_f1"]('{"方位错误": "x", "错别字": "y"}', key).score == 1.0


_ERROR_TYPES = st.sampled_from(
    ["多字或少字", "错别字", "单位错误", "方位错误", "用词不当", "性别错误"]
)


@_FEW
@given(st.lists(_ERROR_TYPES, unique=True), st.lists(_ERROR_TYPES, unique=True), st.booleans())
def test_micro_f1_component_is_symmetric_bounded_and_one_on_itself(
    answer_types: list[str], gold_types: list[str], as_list: bool
) -> None:
    def render(types: list[str]) -> str:
        if as_list:
            return json.dumps([{"错误类型": t, "修改建议": "x"} for t in types], ensure_ascii=False)
        return json.dumps({t: "x" for t in types}, ensure_ascii=False)

    forward = METRICS["micro_f1"](render(answer_types), _key(render(gold_types)))
    backward = METRICS["micro_f1"](render(gold_types), _key(render(answer_types)))
    assert 0.0 <= forward.score <= 1.0
    assert forward.score == pytest.approx(backward.score)
    reversed_answer = render(list(reversed(answer_types)))
    assert METRICS["micro_f1"](reversed_answer, _key(render(answer_types))).score == 1.0


def test_the_report_qc_prompts_own_examples_parse_in_both_forms() -> None:
    path = shared_path("medbench-data", "medbench-v4-testpool", "llm", "MedReportQC.jsonl")
    question = json.loads(path.read_text(encoding="utf-8").splitlines()[0])["question"]
    example_dict = question.split("答：", 1)[1]
    assert error_types(first_json(example_dict)) == {"多字或少字", "检查项目与报告不符"}
    example_list = question.split("输出示例：", 1)[1]
    assert error_types(first_json(example_list)) == {"多字或少字", "检查项目与报告不符"}


@cache
def _toy_dev() -> tuple[dict[str, str], dict[str, list[dict[str, Any]]]]:
    folder = shared_path("medbench-data", "promptcblue-toy")
    rows = [json.loads(line) for line in (folder / "dev.json").read_text("utf-8").splitlines()]
    structured = json.loads((folder / "dev_structured.json").read_text("utf-8"))
    return {r["sample_id"]: r["target"] for r in rows}, structured


def _gold_entities(answer: list[dict[str, str]]) -> frozenset[Hashable]:
    return frozenset((canonical_text(a["type"]), canonical_text(a["entity"])) for a in answer)


def _gold_relations(answer: list[dict[str, str]]) -> frozenset[Hashable]:
    return frozenset(
        tuple(canonical_text(a[k]) for k in ("predicate", "subject", "object")) for a in answer
    )


def _gold_events(answer: list[dict[str, Any]]) -> frozenset[Hashable]:
    return frozenset(
        Event(
            canonical_text(a["主体词"]),
            a["发生状态"],
            tuple(sorted({canonical_text(d) for d in a["描述词"]})),
            tuple(sorted({canonical_text(p) for p in a["解剖部位"]})),
        )
        for a in answer
    )


TOY_TASKS = [
    ("CMeEE-V2", parse_entities, _gold_entities),
    ("CMeIE", parse_relations, _gold_relations),
    ("CHIP-CDEE", parse_events, _gold_events),
]


@pytest.mark.parametrize(("task", "parse", "gold_of"), TOY_TASKS, ids=[t[0] for t in TOY_TASKS])
def test_parsing_the_toy_gold_targets_reproduces_the_structured_gold(
    task: str, parse: Any, gold_of: Any
) -> None:
    targets, structured = _toy_dev()
    samples = structured.get(task)
    if not samples:
        pytest.skip(f"{task} is not in the toy dev set")
    parsed = [parse(targets[s["sample_id"]]) for s in samples]
    gold = [gold_of(s["answer"]) for s in samples]
    assert parsed == gold
    assert sum(len(g) for g in gold) > 0
    assert micro_f1(parsed, gold).f1 == 1.0


@pytest.mark.parametrize(("task", "parse", "gold_of"), TOY_TASKS, ids=[t[0] for t in TOY_TASKS])
def test_a_corrupted_copy_of_the_toy_gold_scores_the_exact_expected_f1(
    task: str, parse: Any, gold_of: Any
) -> None:
    targets, structured = _toy_dev()
    samples = structured.get(task)
    if not samples:
        pytest.skip(f"{task} is not in the toy dev set")
    texts = [targets[s["sample_id"]] for s in samples]
    gold = [gold_of(s["answer"]) for s in samples]
    total = sum(len(g) for g in gold)
    # Drop the last fact line of the first item that has one: one false negative.
    victim = next(i for i, g in enumerate(gold) if g)
    lines = texts[victim].splitlines()
    if task == "CMeIE":
        # Pairs share a line there; drop the last "头实体为…，尾实体为…" pair instead.
        last_pair = list(re.finditer(r"头实体为[^。\n]+。?", texts[victim]))[-1]
        texts[victim] = texts[victim][: last_pair.start()] + texts[victim][last_pair.end() :]
    elif task == "CMeEE-V2":
        head, _, mentions = next(x for x in reversed(lines) if x.partition("：")[2]).partition("：")
        kept = "，".join(mentions.split("，")[:-1])
        lines[lines.index(f"{head}：{mentions}")] = f"{head}：{kept}"
        texts[victim] = "\n".join(lines)
    else:
        texts[victim] = "\n".join(lines[:-1])
    corrupted = [parse(t) for t in texts]
    assert sum(len(c) for c in corrupted) == total - 1
    expected = 2 * (total - 1) / (2 * (total - 1) + 1)
    assert micro_f1(corrupted, gold) == pytest.approx(
        F1Score(1.0, (total - 1) / total, expected, total - 1, 0, 1)
    )
    # And one invented fact on top: one false positive too.
    corrupted[-1] = corrupted[-1] | {("疾病", "不存在的实体")}
    assert micro_f1(corrupted, gold).f1 == pytest.approx((total - 1) / total)
