"""Closed-label metrics: triage department sets (MedHG), single labels, QC label sets (MedQC)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator

from metric_scorer.core.boxes import box_label_metric, is_detection_reference
from metric_scorer.core.f1 import first_json, item_counts
from metric_scorer.core.structured import final_answer
from metric_scorer.core.types import ItemKey, ItemResult, Metric

__all__ = [
    "METRICS",
    "NO_PROBLEM",
    "department_key",
    "parse_departments",
    "parse_label",
    "parse_label_set",
]

NO_PROBLEM = "无问题"
"""MedQC's answer for an image without acquisition problems: the empty label set."""
_NO_PROBLEM_TOKENS = frozenset({NO_PROBLEM, "无", "没有问题", "无明显问题", "未见问题"})

_MARKDOWN = re.compile(r"\*\*|__|`+|^\s*#+\s*", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*•·]\s*|\d+\s*[.、)]\s*|[(（]\d+[)）]\s*|[①-⑳]\s*)")
_QUOTES = "\"'“”‘’「」『』《》【】[]"
# Remarks a model appends to a name: "血液科(首选)", "淋巴瘤科（必要时）".
_REMARK = re.compile(r"\s*\([^()]*\)$")
_SENTENCE_END = "。!?"
# Longest department name in the v4 pool is 19 characters; prose clauses tend to be longer.
_MAX_TOKEN_CHARS = 30

_DEPARTMENT_SEPARATORS = re.compile(r"[、,;\s/]+")
_LABEL_SEPARATORS = re.compile(r"[|、,;\s/]+")
# Cues are matched after NFKC, which folds "：" to ":".
_DEPARTMENT_CUE = re.compile(r"(?:科室|科别)[^:\n]{0,6}:")
_LABEL_SET_CUE = re.compile(r"(?:问题|答案|结果|结论)[^:\n]{0,6}:")


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _clean_token(token: str) -> str:
    token = _BULLET.sub("", token).strip().rstrip(_SENTENCE_END + ".").strip(_QUOTES + " ")
    return _REMARK.sub("", token).strip(_QUOTES + " ")


def _list_like(
    line: str, separators: re.Pattern[str], gate: Callable[[str], bool] | None
) -> list[str] | None:
    """The tokens of a line that reads as a bare list, or None for prose."""
    body = _BULLET.sub("", line).strip().rstrip(_SENTENCE_END + ".")
    if not body or ":" in body or any(ch in body for ch in _SENTENCE_END):
        return None
    tokens = [t for raw in separators.split(body) if (t := _clean_token(raw))]
    if not tokens or any(len(t) > _MAX_TOKEN_CHARS for t in tokens):
        return None
    if gate is not None and not any(gate(t) for t in tokens):
        return None
    return tokens


def _list_items(
    answer: str,
    separators: re.Pattern[str],
    cue: re.Pattern[str],
    gate: Callable[[str], bool] | None = None,
) -> list[str]:
    """Items of a list answer such as "科室1、科室2", possibly after cue lines
    ("建议就诊科室：…") and before or after prose.

    Reads the first block of consecutive list-like lines (no inner sentence punctuation, no
    colon, short tokens, and at least one token passing gate) after each cue, or from the
    start when there is no cue; a blank or prose line ends a block. The gate only tells
    list lines from prose ("您好，我来分析一下"): every token of a list line is kept, so a
    wrong name is still counted. The closed list of names is not in the key, so prose that
    passes these tests is read as a list; the prompts ask for the bare list.
    """
    text = _MARKDOWN.sub("", _fold(answer))
    segments = [text[c.end() :] for c in cue.finditer(text)] or [text]
    items: list[str] = []
    for segment in segments:
        block: list[str] = []
        for line in segment.splitlines():
            tokens = _list_like(line, separators, gate)
            if tokens is not None:
                block.extend(tokens)
            elif block:
                break
        items.extend(block)
    return items


# Endings of the pool's 120 department names ("性心理健康", "放射治疗中心", "发育性学习障碍门诊")
# and of common others ("导管室", "重症医学病区"); a line with none of them is prose.
_DEPARTMENT_ENDINGS = ("科", "门诊", "中心", "咨询", "健康", "室", "病区", "部")


def _names_a_department(token: str) -> bool:
    return token.endswith(_DEPARTMENT_ENDINGS)


def department_key(name: str) -> str:
    """What two department names must share to count as the same department.

    Width, case and white space are folded, and one trailing "科" is dropped when at least
    two characters remain ("血液科" = "血液", "心理咨询科" = "心理咨询"), since the pool's
    lists name some departments with the suffix and some without. Nothing else is merged:
    "心内科" and "心血管内科" stay different, and "内科"/"外科"/"儿科" keep their "科".
    """
    key = "".join(_fold(name).split()).casefold().strip(_QUOTES)
    if key.endswith("科") and len(key) >= 3:
        key = key[:-1]
    return key


def parse_departments(answer: str) -> dict[str, str]:
    """Departments named in a MedHG answer, as {department_key: name as written (NFKC)},
    in answer order. Separators: "、", "，", ",", "；", "/", white space, new lines."""
    found: dict[str, str] = {}
    for name in _list_items(answer, _DEPARTMENT_SEPARATORS, _DEPARTMENT_CUE, _names_a_department):
        found.setdefault(department_key(name), name)
    return found


def _department_set_accuracy(answer: str, key: ItemKey) -> ItemResult:
    predicted = parse_departments(final_answer(answer))
    # One name per entry, but a reference stored as one "、"-joined string reads the same.
    gold = {
        k
        for r in key.reference
        for name in _DEPARTMENT_SEPARATORS.split(_fold(r))
        if (k := department_key(name))
    }
    return ItemResult(
        item_id=key.item_id,
        metric=key.metric,
        # v4 scores triage by Accuracy on the whole set, not by the 2024 substring rule that
        # ignored extra departments.
        score=1.0 if set(predicted) == gold else 0.0,
        parsed="|".join(predicted[k] for k in sorted(predicted)),
        counts=item_counts(predicted.keys(), gold),
    )


def _label_key(label: str) -> str:
    return "".join(_fold(label).split()).casefold().strip(_QUOTES)


def parse_label_set(answer: str) -> frozenset[str]:
    """QC labels of a MedQC-style answer ("体位不正|偏中心", "无问题"), NFKC-folded.

    "无问题" (or "无", "没有问题") stands for the empty set; beside real labels, the labels win.
    """
    tokens = _list_items(answer, _LABEL_SEPARATORS, _LABEL_SET_CUE)
    return frozenset(k for t in tokens if (k := _label_key(t)) and k not in _NO_PROBLEM_TOKENS)


def _label_set_accuracy(answer: str, key: ItemKey) -> ItemResult:
    predicted = parse_label_set(final_answer(answer))
    # The reference lists the gold labels; "无问题" (or nothing) is the empty set.
    gold = frozenset(
        k
        for r in key.reference
        for t in _LABEL_SEPARATORS.split(_fold(r))
        if (k := _label_key(t)) and k not in _NO_PROBLEM_TOKENS
    )
    return ItemResult(
        item_id=key.item_id,
        metric=key.metric,
        score=1.0 if predicted == gold else 0.0,
        parsed="|".join(sorted(predicted)) if predicted else NO_PROBLEM,
        counts=item_counts(predicted, gold),
    )


_QUOTE_CLASS = "\"'“”‘’「」『』【】\\[("
_ANSWER_CUE = re.compile(
    r"(?:预测结局|结局|最终答案|答案|结论|预测|意图|诊断|分类|类别|标签|结果|选择|判断)"
    rf"[{_QUOTE_CLASS}]*(?:应该是|应为|应是|为|是)?:?[{_QUOTE_CLASS}]*$"
)
_CUE_WINDOW = 16


def _json_strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _json_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _json_strings(v)


def parse_label(answer: str, labels: tuple[str, ...]) -> str | None:
    """The label of a closed set that a free-text answer commits to, or None.

    In order of precedence:
    1. a JSON value that is exactly a label (MedOutcome's {"预测结局": "好转", "理由": …}, whose
       reasons may well mention other outcomes);
    2. the last label right after an answer cue ("结局：好转", "答案是治愈", "意图为…");
    3. the last label mentioned anywhere (a model that reconsiders ends on its answer).
    Matching folds width, case and white space, and prefers the longest label at a position
    ("重症肺炎" is not read as "肺炎").
    """
    by_key = {_label_key(label): label for label in labels if _label_key(label)}
    if not by_key:
        return None
    value = first_json(answer)
    if value is not None:
        for text in _json_strings(value):
            if (label := by_key.get(_label_key(text))) is not None:
                return label
    folded = "".join(_MARKDOWN.sub("", _fold(answer)).split()).casefold()
    pattern = "|".join(re.escape(k) for k in sorted(by_key, key=len, reverse=True))
    mentions = list(re.finditer(pattern, folded))
    if not mentions:
        return None
    anchored = [
        m
        for m in mentions
        if _ANSWER_CUE.search(folded[max(0, m.start() - _CUE_WINDOW) : m.start()])
    ]
    return by_key[(anchored or mentions)[-1].group(0)]


def _label_accuracy(answer: str, key: ItemKey) -> ItemResult:
    """reference[0] is the gold label; the whole reference is the closed label set (the
    remaining entries are the other candidates, e.g. 治愈/好转/未愈/死亡).

    A box item (MedDetect, ``box_iou+label_accuracy``) seals one JSON lesion array instead:
    its labels are the lesions' classes, read from the parsed boxes (boxes.box_label_metric),
    never the reference text itself.
    """
    if not key.reference:
        raise ValueError(f"item {key.item_id!r}: label_accuracy needs a gold label")
    if is_detection_reference(key.reference):
        return box_label_metric(answer, key)
    predicted = parse_label(final_answer(answer), key.reference)
    correct = predicted is not None and _label_key(predicted) == _label_key(key.reference[0])
    return ItemResult(
        item_id=key.item_id,
        metric=key.metric,
        score=1.0 if correct else 0.0,
        parsed=predicted or "",
    )


METRICS: dict[str, Metric] = {
    "department_set_accuracy": _department_set_accuracy,
    "label_accuracy": _label_accuracy,
    "label_set_accuracy": _label_set_accuracy,
}
