"""Tests for character-level edit similarity, ROUGE-L and BLEU, and their metric components."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rapidfuzz.distance import LCSseq, Levenshtein

from metric_scorer.core.text_reference import reference_lcs_length, reference_levenshtein
from metric_scorer.core.text_similarity import METRICS, bleu, edit_similarity, rouge_l
from metric_scorer.core.types import ItemKey
from tests.shared_data import shared_path

# (case id, a, b, expected)
EDIT_CASES: list[tuple[str, str, str, float]] = [
    ("identical", "肝囊肿", "肝囊肿", 1.0),
    ("both_empty", "", "", 1.0),
    ("one_empty", "肝囊肿", "", 0.0),
    ("one_substitution", "腹部平坦", "腹部平软", 0.75),
    ("two_insertions", "肝囊肿", "肝多发囊肿", 0.6),
    ("disjoint", "肝", "肺", 0.0),
    ("latin_kitten", "kitten", "sitting", 1 - 3 / 7),
]


@pytest.mark.parametrize(
    ("a", "b", "expected"), [c[1:] for c in EDIT_CASES], ids=[c[0] for c in EDIT_CASES]
)
def test_edit_similarity(a: str, b: str, expected: float) -> None:
    assert edit_similarity(a, b) == pytest.approx(expected)


# (case id, candidate, reference, expected)
ROUGE_CASES: list[tuple[str, str, str, float]] = [
    ("identical", "双肺纹理清晰", "双肺纹理清晰", 1.0),
    ("both_empty", "", "", 1.0),
    ("empty_candidate", "", "肝囊肿", 0.0),
    ("subsequence", "肝囊肿", "肝多发囊肿", 2 * 3 / 8),
    ("partial", "双肺纹理增粗", "双肺纹理清晰", 2 * 4 / 12),
    ("order_matters", "肿囊肝", "肝囊肿", 2 * 1 / 6),
    ("one_shared_character", "正常", "异常", 2 * 1 / 4),
]


@pytest.mark.parametrize(
    ("candidate", "reference", "expected"),
    [c[1:] for c in ROUGE_CASES],
    ids=[c[0] for c in ROUGE_CASES],
)
def test_rouge_l(candidate: str, reference: str, expected: float) -> None:
    assert rouge_l(candidate, reference) == pytest.approx(expected)


# (case id, candidate, reference, max_n, expected)
BLEU_CASES: list[tuple[str, str, str, int, float]] = [
    ("identical", "肝脏形态大小正常", "肝脏形态大小正常", 4, 1.0),
    ("both_empty", "", "", 4, 1.0),
    ("empty_candidate", "", "肝囊肿", 4, 0.0),
    ("empty_reference", "肝囊肿", "", 4, 0.0),
    ("no_shared_character", "正常", "肝囊肿", 4, 0.0),
    # p1 = 3/3, p2 = (1 + 1) / (2 + 1); brevity exp(1 - 5/3).
    ("short_candidate_bigram", "肝囊肿", "肝多发囊肿", 2, math.exp(1 - 5 / 3) * math.sqrt(2 / 3)),
    # p1 = 3/4, p2 = (1 + 1) / (3 + 1): longer candidate, no brevity penalty.
    ("long_candidate_bigram", "肝多囊肿", "肝囊肿", 2, math.sqrt(3 / 4 * 2 / 4)),
    # p1 = 2/2, p2 = (1 + 1) / (1 + 1), p3 and p4 have no candidate n-grams: (0 + 1) / (0 + 1).
    ("shorter_than_n", "肝癌", "肝癌", 4, 1.0),
    (
        "unigram_only",
        "囊肿肝",
        "肝囊肿",
        1,
        1.0,
    ),
]


@pytest.mark.parametrize(
    ("candidate", "reference", "max_n", "expected"),
    [c[1:] for c in BLEU_CASES],
    ids=[c[0] for c in BLEU_CASES],
)
def test_bleu(candidate: str, reference: str, max_n: int, expected: float) -> None:
    assert bleu(candidate, reference, max_n=max_n) == pytest.approx(expected)


def test_bleu_rejects_max_n_below_one() -> None:
    with pytest.raises(ValueError, match="max_n"):
        bleu("肝", "肝", max_n=0)


def test_bleu_word_order_costs_more_than_unigram_overlap() -> None:
    assert bleu("肿囊肝", "肝囊肿") < bleu("肝囊肿", "肝囊肿")


texts = st.text(alphabet="肝肺癌囊肿ab ，。", max_size=30)
any_texts = st.text(max_size=40)


@given(a=any_texts, b=any_texts)
def test_edit_similarity_symmetric_and_bounded(a: str, b: str) -> None:
    assert 0.0 <= edit_similarity(a, b) <= 1.0
    assert edit_similarity(a, b) == edit_similarity(b, a)
    assert edit_similarity(a, a) == 1.0


@given(a=texts, b=texts)
def test_rouge_l_bounded_symmetric_and_identity(a: str, b: str) -> None:
    assert 0.0 <= rouge_l(a, b) <= 1.0
    # With beta = 1 the F-measure does not care which side is the reference.
    assert rouge_l(a, b) == rouge_l(b, a)
    assert rouge_l(a, a) == 1.0


@given(a=texts, b=texts, max_n=st.integers(1, 4))
def test_bleu_bounded_and_identity(a: str, b: str, max_n: int) -> None:
    assert 0.0 <= bleu(a, b, max_n) <= 1.0
    assert bleu(a, a, max_n) == pytest.approx(1.0)


# ---- rapidfuzz against the plain reference implementations ---------------------------------


@pytest.mark.parametrize(
    ("a", "b", "lcs", "distance"),
    [
        ("", "", 0, 0),
        ("abc", "", 0, 3),
        ("kitten", "sitting", 4, 3),
        ("肝多发囊肿", "肝囊肿", 3, 2),
    ],
)
def test_reference_implementations_on_known_pairs(a: str, b: str, lcs: int, distance: int) -> None:
    assert reference_lcs_length(a, b) == lcs
    assert reference_levenshtein(a, b) == distance


@given(a=texts, b=texts)
def test_rapidfuzz_agrees_with_reference_on_small_alphabets(a: str, b: str) -> None:
    assert LCSseq.similarity(a, b) == reference_lcs_length(a, b)
    assert Levenshtein.distance(a, b) == reference_levenshtein(a, b)


@given(a=any_texts, b=any_texts)
def test_rapidfuzz_agrees_with_reference_on_any_unicode(a: str, b: str) -> None:
    assert LCSseq.similarity(a, b) == reference_lcs_length(a, b)
    assert Levenshtein.distance(a, b) == reference_levenshtein(a, b)


def test_rapidfuzz_agrees_with_reference_on_long_random_strings() -> None:
    # Past 64 characters rapidfuzz switches to its multi-word bit-parallel path.
    rng = random.Random(20240601)
    alphabet = "肝肺脾肾癌囊肿结节影像描述诊断，。ab"
    for _ in range(20):
        a = "".join(rng.choices(alphabet, k=rng.randint(60, 200)))
        b = "".join(rng.choices(alphabet, k=rng.randint(60, 200)))
        assert LCSseq.similarity(a, b) == reference_lcs_length(a, b)
        assert Levenshtein.distance(a, b) == reference_levenshtein(a, b)


# ---- metric components ---------------------------------------------------------------------

OCR_GOLD = {
    "影像描述": "肝脏形态大小正常，肝右叶见类圆形低密度影，边界清，增强扫描未见强化。",
    "影像诊断": "肝囊肿。",
}


def _key(metric: str, reference: str) -> ItemKey:
    return ItemKey(item_id="o1", dataset="MedOCR", metric=metric, reference=(reference,))


def _ocr_key() -> ItemKey:
    return _key("edit_similarity", json.dumps(OCR_GOLD, ensure_ascii=False))


# (case id, model answer, expected score)
OCR_CASES: list[tuple[str, str, float]] = [
    (
        "fenced_as_prompted",
        '```json{"影像描述": "肝脏形态大小正常，肝右叶见类圆形低密度影，边界清，'
        '增强扫描未见强化。", "影像诊断": "肝囊肿。"}```',
        1.0,
    ),
    (
        "line_breaks_from_the_pdf_layout",
        '```json\n{\n  "影像描述": "肝脏形态大小正常，肝右叶见类圆形低密度影，\\n边界清，'
        '增强扫描未见强化。",\n  "影像诊断": " 肝囊肿。 "\n}\n```',
        1.0,
    ),
    (
        "full_width_json_and_punctuation",
        "{“影像描述”：“肝脏形态大小正常,肝右叶见类圆形低密度影,边界清,增强扫描未见强化。”，"
        "“影像诊断”：“肝囊肿。”}",
        1.0,
    ),
    (
        "diagnosis_hedged",
        '{"影像描述": "肝脏形态大小正常，肝右叶见类圆形低密度影，边界清，增强扫描未见强化。",'
        ' "影像诊断": "肝囊肿可能。"}',
        (1 + 4 / 6) / 2,
    ),
    (
        "missing_diagnosis",
        '{"影像描述": "肝脏形态大小正常，肝右叶见类圆形低密度影，边界清，增强扫描未见强化。"}',
        0.5,
    ),
    (
        "echoed_template_then_answer",
        '输出格式为：```json{"影像描述": "", "影像诊断": ""}```\n```json\n'
        '{"影像描述": "肝脏形态大小正常，肝右叶见类圆形低密度影，边界清，增强扫描未见强化。",'
        ' "影像诊断": "肝囊肿。"}\n```',
        1.0,
    ),
    ("echoed_template_only", '```json{"影像描述": "", "影像诊断": ""}```', 0.0),
    ("prose_only", "影像描述：肝右叶低密度影。影像诊断：肝囊肿。", 0.0),
]


@pytest.mark.parametrize(
    ("answer", "expected"), [c[1:] for c in OCR_CASES], ids=[c[0] for c in OCR_CASES]
)
def test_edit_similarity_metric(answer: str, expected: float) -> None:
    result = METRICS["edit_similarity"](answer, _ocr_key())
    assert result.score == pytest.approx(expected)
    assert result.metric == "edit_similarity"


def test_edit_similarity_metric_parsed_and_key_errors() -> None:
    result = METRICS["edit_similarity"]('{"影像诊断": "肝囊肿。", "影像描述": "略"}', _ocr_key())
    assert result.parsed == '{"影像描述":"略","影像诊断":"肝囊肿。"}'
    with pytest.raises(ValueError, match="o1"):
        METRICS["edit_similarity"]("{}", _key("edit_similarity", "肝囊肿"))


def test_pool_medocr_prompt_template_has_the_fields_we_score() -> None:
    path = shared_path("medbench-data", "medbench-v4-testpool", "vlm", "MedOCR.jsonl")
    for line in path.read_text(encoding="utf-8").splitlines():
        item: dict[str, Any] = json.loads(line)
        template = json.loads(item["question"].split("```json")[1].split("```")[0])
        assert set(template) == set(OCR_GOLD)
        answer = f"```json{json.dumps(OCR_GOLD, ensure_ascii=False)}```"
        assert METRICS["edit_similarity"](answer, _ocr_key()).score == 1.0


@pytest.mark.parametrize("metric", ["rouge_l", "bleu"])
def test_plain_text_components(metric: str) -> None:
    key = _key(metric, "考虑腹股沟斜疝，建议择期行疝修补术。")
    same = METRICS[metric]("考虑 腹股沟斜疝，\n建议择期行疝修补术。", key)
    assert same.score == 1.0
    assert same.parsed == "考虑腹股沟斜疝,建议择期行疝修补术。"
    thinking = METRICS[metric]("<think>可能是股疝</think>考虑腹股沟斜疝，建议择期行疝修补术。", key)
    assert thinking.score == 1.0
    partial = METRICS[metric]("考虑腹股沟疝。", key)
    assert 0.0 < partial.score < 1.0
    assert METRICS[metric]("", key).score == 0.0
    with pytest.raises(ValueError, match="o1"):
        METRICS[metric]("x", ItemKey(item_id="o1", dataset="d", metric=metric, reference=()))


def test_plain_text_components_on_cmb_clin_references() -> None:
    """Real reference answers score 1 against themselves and below 1 against another case's."""
    path = shared_path("medbench-data", "cmb-clin", "CMB-Clin.json")
    cases = json.loads(path.read_text(encoding="utf-8"))
    answers = [qa["answer"] for case in cases[:10] for qa in case["QA_pairs"]]
    for metric in ("rouge_l", "bleu"):
        for mine, other in zip(answers, answers[1:], strict=False):
            assert METRICS[metric](mine, _key(metric, mine)).score == pytest.approx(1.0)
            assert METRICS[metric](other, _key(metric, mine)).score < 1.0
    for mine, other in zip(answers[:3], answers[1:4], strict=True):
        assert LCSseq.similarity(mine, other) == reference_lcs_length(mine, other)
        assert Levenshtein.distance(mine, other) == reference_levenshtein(mine, other)
