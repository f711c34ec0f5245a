"""Set-valued F1 (pooled micro-F1, macro-F1, per-item counts) and information-extraction parsers."""

from __future__ import annotations

import ast
import json
import re
import unicodedata
from collections.abc import Collection, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeGuard

import numpy as np

from metric_scorer.core.structured import final_answer
from metric_scorer.core.types import Counts, ItemKey, ItemResult, Metric

__all__ = [
    "CMEEE_TYPES",
    "METRICS",
    "Event",
    "F1Score",
    "canonical_text",
    "error_types",
    "first_json",
    "item_counts",
    "item_f1",
    "macro_f1",
    "micro_f1",
    "parse_entities",
    "parse_events",
    "parse_relations",
    "pooled_f1",
]


@dataclass(frozen=True)
class F1Score:
    """Precision, recall and F1 (all in [0, 1]) with the counts they come from."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int


def _ratio(numerator: int, denominator: int, *, all_empty: bool) -> float:
    # Nothing predicted and nothing expected is perfect agreement; a zero denominator with
    # something on the other side is a total miss (sklearn's zero_division=0 there).
    if denominator:
        return numerator / denominator
    return 1.0 if all_empty else 0.0


def pooled_f1(counts: Iterable[Counts]) -> F1Score:
    """Micro P/R/F1 from per-item counts summed over the corpus (not averaged per item).

    When every item is empty on both sides, all three are 1.0.
    """
    tp = fp = fn = 0
    for c in counts:
        tp, fp, fn = tp + c.tp, fp + c.fp, fn + c.fn
    all_empty = tp + fp + fn == 0
    return F1Score(
        precision=_ratio(tp, tp + fp, all_empty=all_empty),
        recall=_ratio(tp, tp + fn, all_empty=all_empty),
        # 2tp/(2tp+fp+fn) equals the harmonic mean of P and R wherever that is defined and
        # is 0, not undefined, when tp is 0.
        f1=_ratio(2 * tp, 2 * tp + fp + fn, all_empty=all_empty),
        tp=tp,
        fp=fp,
        fn=fn,
    )


def item_counts(pred: Collection[Hashable], gold: Collection[Hashable]) -> Counts:
    """tp/fp/fn of one item, comparing sets: order and duplicates do not matter."""
    p, g = set(pred), set(gold)
    return Counts(tp=len(p & g), fp=len(p - g), fn=len(g - p))


def item_f1(counts: Counts) -> float:
    """F1 of one item; 1.0 when both sides are empty."""
    return pooled_f1((counts,)).f1


def micro_f1(pred: Iterable[Collection[Hashable]], gold: Iterable[Collection[Hashable]]) -> F1Score:
    """Pooled micro-F1 over items; each item is a set of hashable facts such as
    (type, entity), (predicate, subject, object) or a whole Event.

    Raises:
        ValueError: pred and gold hold different numbers of items (items must be aligned).
    """
    return pooled_f1(item_counts(p, g) for p, g in zip(pred, gold, strict=True))


def _label_set(labels: Hashable | Collection[Hashable]) -> set[Hashable]:
    # A str is one label, not the set of its characters.
    if isinstance(labels, str) or not isinstance(labels, Collection):
        return {labels}
    return set(labels)


def macro_f1(
    pred_labels: Sequence[Hashable | Collection[Hashable]],
    gold_labels: Sequence[Hashable | Collection[Hashable]],
    labels: Iterable[Hashable] | None = None,
    *,
    zero_division: float = 0.0,
) -> float:
    """Unweighted mean over classes of each class's F1.

    Each item is a single label (a str, or any non-collection hashable) or, for multi-label
    data, a collection of labels; wrap tuple-valued labels in a set. Classes default to every
    label seen on either side, like sklearn's f1_score(average="macro"); a class in `labels`
    that occurs on neither side scores zero_division (sklearn's default too).

    Raises:
        ValueError: the sequences differ in length, or there are no classes at all.
    """
    if len(pred_labels) != len(gold_labels):
        raise ValueError(f"{len(pred_labels)} predictions for {len(gold_labels)} gold items")
    pred_sets = [_label_set(p) for p in pred_labels]
    gold_sets = [_label_set(g) for g in gold_labels]
    classes = list(
        dict.fromkeys(
            labels if labels is not None else (x for s in (*gold_sets, *pred_sets) for x in s)
        )
    )
    if not classes:
        raise ValueError("macro-F1 needs at least one class")
    pred_matrix = np.array([[c in s for c in classes] for s in pred_sets], dtype=bool)
    gold_matrix = np.array([[c in s for c in classes] for s in gold_sets], dtype=bool)
    pred_matrix = pred_matrix.reshape(len(pred_sets), len(classes))
    gold_matrix = gold_matrix.reshape(len(gold_sets), len(classes))
    tp = (pred_matrix & gold_matrix).sum(axis=0)
    fp = (pred_matrix & ~gold_matrix).sum(axis=0)
    fn = (~pred_matrix & gold_matrix).sum(axis=0)
    denominator = 2 * tp + fp + fn
    per_class = np.divide(
        2 * tp, denominator, out=np.full(len(classes), zero_division), where=denominator > 0
    )
    return float(per_class.mean())


_QUOTES = "\"'“”‘’「」『』《》`"
_NONE_MENTIONS = frozenset({"", "无", "空", "没有", "暂无", "未提及", "none", "null", "n/a", "-"})


def canonical_text(text: str) -> str:
    """One surface form per mention: NFKC (full-width to ASCII), surrounding white space,
    quotes and full stops removed, inner white-space runs collapsed to one space."""
    folded = unicodedata.normalize("NFKC", text)
    folded = " ".join(folded.split())
    return folded.strip(_QUOTES + " 。.")


_FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()
_MAX_LITERAL_TRIES = 64
_MAX_FAILED_STARTS = 200
_LITERAL_START = re.compile(r"[{\[]\s*'")


def _is_structured(value: object) -> TypeGuard[dict[str, object] | list[object]]:
    if isinstance(value, dict):
        return True
    return isinstance(value, list) and all(isinstance(v, dict | str) for v in value)


def _json_values(text: str) -> Iterator[object]:
    # Failed tries are bounded so that hostile output ("[[[[…") costs milliseconds, not
    # seconds; a real answer has few brackets before its JSON.
    failures, literal_tries = _MAX_FAILED_STARTS, _MAX_LITERAL_TRIES
    for start, ch in enumerate(text):
        if ch not in "{[":
            continue
        try:
            yield _DECODER.raw_decode(text, start)[0]
            continue
        except (json.JSONDecodeError, RecursionError):
            failures -= 1
            if failures <= 0:
                return
        # Python-literal fallback for models that answer {'错别字': '...'} with single quotes:
        # literal_eval evaluates literals only, and is tried only where a quote opens the value.
        if not _LITERAL_START.match(text, start):
            continue
        closer = "}" if ch == "{" else "]"
        for end in (i for i in range(start + 1, len(text)) if text[i] == closer):
            if literal_tries <= 0:
                return
            literal_tries -= 1
            try:
                yield ast.literal_eval(text[start : end + 1])
                break
            except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
                continue


def first_json(text: str) -> dict[str, object] | list[object] | None:
    """The first JSON object, or array of objects/strings, in a model answer.

    Looks inside ``` fences first, then anywhere in the text (prose around it is fine), then
    once more after NFKC folding (a full-width colon or comma breaks JSON). Arrays of other
    things (a citation like "[1]") are skipped. None when nothing qualifies.
    """
    fenced = [m.group(1) for m in _FENCE.finditer(text)]
    for candidate in (*fenced, text, unicodedata.normalize("NFKC", text)):
        for value in _json_values(candidate):
            if _is_structured(value):
                return value
    return None


# Field names used by the MedReportQC list form: [{"错误类型": ..., "修改建议": ...}, ...].
_ERROR_TYPE_FIELD = "错误类型"


def error_types(value: object) -> frozenset[str]:
    """Error-type labels of a MedReportQC answer or reference.

    Accepts both forms its prompt asks for: the dict {error type: fix} and the list
    [{"错误类型": type, "修改建议": fix}, ...] (a bare dict of that record shape is one record;
    a list of strings is a list of types). Empty dict or list: no errors.
    """
    found: set[str] = set()

    def add(label: object) -> None:
        if isinstance(label, str):
            if text := canonical_text(label):
                found.add(text)
        elif isinstance(label, list):
            for item in label:
                add(item)

    if isinstance(value, dict):
        if _ERROR_TYPE_FIELD in value:
            add(value[_ERROR_TYPE_FIELD])
        else:
            for key in value:
                add(key)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                found |= error_types(item)
            else:
                add(item)
    return frozenset(found)


# CMeEE: lines "<type>实体：m1，m2" (PromptCBLUE) or "<type>：m1,m2".
CMEEE_TYPES = frozenset(
    {
        # CMeEE-V2 names (PromptCBLUE).
        "疾病",
        "临床表现",
        "医疗程序",
        "医疗设备",
        "药物",
        "医学检验项目",
        "身体部位",
        "医院科室",
        "微生物类",
        # CMeEE-V1 names used by the 2024 MedBench prompts.
        "症状",
        "医疗操作",
        "设备",
    }
)
"""Entity types recognised by default: the CMeEE-V2 and V1 names."""

_MENTION_SEPARATOR = re.compile(r"[,，]")
_MARKDOWN = re.compile(r"\*\*|__|`+|^\s*#+\s*", re.MULTILINE)
_BULLET = r"(?:[-*•·]\s*|\d+[.、)]\s*|[(（]\d+[)）]\s*)?"


def _type_pattern(types: Collection[str]) -> re.Pattern[str]:
    names = sorted({canonical_text(t) for t in types}, key=len, reverse=True)
    alternatives = "|".join(re.escape(n) for n in names)
    # A type label starts a line or follows a ";" / "。" / white space, so that "疾病：" inside
    # a sentence of prose is not taken for a label.
    return re.compile(rf"(?:^|(?<=[;。\s])){_BULLET}(?P<type>{alternatives})(?:实体)?\s*:", re.M)


def _labelled_regions(label: re.Pattern[str], text: str) -> Iterator[tuple[re.Match[str], str]]:
    """Each match of label with the text between it and the next match (or the end)."""
    marks = list(label.finditer(text))
    # One end more than marks when there are none; zip then yields nothing.
    ends = [m.start() for m in marks[1:]] + [len(text)]
    for mark, end in zip(marks, ends, strict=False):
        yield mark, text[mark.end() : end]


def _mentions(region: str) -> Iterator[str]:
    for raw in _MENTION_SEPARATOR.split(region):
        mention = canonical_text(raw).strip(";、 ")
        if mention.lower() not in _NONE_MENTIONS:
            yield mention


def parse_entities(text: str, types: Collection[str] | None = None) -> frozenset[tuple[str, str]]:
    """(type, mention) pairs from a CMeEE-style answer.

    Args:
        text: lines such as "疾病实体：肺炎，哮喘" or "- 药物: 阿司匹林, 氯吡格雷"; several labelled
            groups may share a line when separated by "；". Other lines are ignored, as are
            mentions written as "无"/"空". Mentions are split on "，"/"," only, since CMeEE
            mentions may themselves hold "、" or "和".
        types: the entity types to accept (e.g. the item's answer choices); default
            CMEEE_TYPES.
    """
    if types is not None and not types:
        return frozenset()
    pattern = _type_pattern(CMEEE_TYPES if types is None else types)
    folded = _MARKDOWN.sub("", unicodedata.normalize("NFKC", text))
    found: set[tuple[str, str]] = set()
    for line in folded.splitlines():
        for label, region in _labelled_regions(pattern, line):
            found.update((label["type"], m) for m in _mentions(region))
    return frozenset(found)


# CMeIE: "具有<R>关系的头尾实体对如下：头实体为<S>，尾实体为<O>。…" (PromptCBLUE) or
# "关系："R"，头实体："S"，尾实体："O"" (2024 MedBench prompts).
_Q = "[\"'“”‘’「」]?"
_END = r"(?=[;。\n]|,?\s*头实体|具有[^\n:;。]+?关系的|$)"
_KEYED_TRIPLE = re.compile(
    rf"关系\s*(?:为|是|:)\s*{_Q}(?P<p>[^\n,;。\"'“”‘’「」]+?){_Q}\s*[,;]\s*"
    rf"头实体\s*(?:为|是|:)\s*{_Q}(?P<s>[^\n]+?){_Q}\s*[,;]\s*"
    rf"尾实体\s*(?:为|是|:)\s*{_Q}(?P<o>[^\n]+?){_Q}\s*{_END}"
)
_HEADER = re.compile(r"具有\s*(?P<p>[^\n:;。]+?)\s*关系的(?:头尾)?实体对(?:如下|有|为|是)?\s*:?")
_PAIR = re.compile(
    rf"头实体\s*(?:为|是|:)\s*{_Q}(?P<s>[^\n]+?){_Q}\s*[,;]\s*"
    rf"尾实体\s*(?:为|是|:)\s*{_Q}(?P<o>[^\n]+?){_Q}\s*{_END}"
)


def parse_relations(
    text: str, predicates: Collection[str] | None = None
) -> frozenset[tuple[str, str, str]]:
    """(predicate, subject, object) triples from a CMeIE-style answer.

    Reads both the PromptCBLUE form (a "具有R关系的头尾实体对如下：" header followed by
    "头实体为S，尾实体为O。" pairs, on its line or the next ones) and the keyed form
    关系："R"，头实体："S"，尾实体："O" with ASCII or full-width colons, commas and quotes.

    Args:
        predicates: if given, triples with another predicate are dropped (a header such as
            "具有重要关系的…" in prose is then not mistaken for a relation).
    """
    folded = _MARKDOWN.sub("", unicodedata.normalize("NFKC", text))
    found: set[tuple[str, str, str]] = set()
    for m in _KEYED_TRIPLE.finditer(folded):
        found.add((canonical_text(m["p"]), canonical_text(m["s"]), canonical_text(m["o"])))
    # Blank the keyed triples out so their "头实体…尾实体…" part is not read again as a pair.
    rest = _KEYED_TRIPLE.sub(lambda m: " " * len(m[0]), folded)
    events = sorted(
        [(m.start(), "header", m) for m in _HEADER.finditer(rest)]
        + [(m.start(), "pair", m) for m in _PAIR.finditer(rest)],
        key=lambda e: e[0],
    )
    predicate: str | None = None
    for _, kind, m in events:
        if kind == "header":
            predicate = canonical_text(m["p"])
        elif predicate is not None:
            found.add((predicate, canonical_text(m["s"]), canonical_text(m["o"])))
    if predicates is not None:
        allowed = {canonical_text(p) for p in predicates}
        found = {t for t in found if t[0] in allowed}
    return frozenset(t for t in found if all(t))


# CHIP-CDEE: "主体词：X；发生状态：否定；描述词：a，b；解剖部位：c" per event.


class Event(NamedTuple):
    """One clinical-finding event; list attributes are sorted so their order does not count."""

    trigger: str
    """主体词."""
    status: str
    """发生状态: "否定", "不确定" or "" (affirmed)."""
    descriptors: tuple[str, ...]
    """描述词."""
    anatomy: tuple[str, ...]
    """解剖部位."""


_EVENT_FIELDS = {
    "主体词": "trigger",
    "发生状态": "status",
    "描述词": "descriptors",
    "解剖部位": "anatomy",
}
_EVENT_START = re.compile(r"主体词\s*:")
_EVENT_FIELD = re.compile(r"(?P<field>主体词|发生状态|描述词|解剖部位)\s*:")
# The gold marks affirmed findings with an empty status; models write 肯定/阳性/无/正常.
_STATUSES = frozenset({"否定", "不确定"})


def _event(segment: str) -> Event | None:
    fields: dict[str, str] = {}
    for mark, value in _labelled_regions(_EVENT_FIELD, segment):
        fields.setdefault(_EVENT_FIELDS[mark["field"]], value.strip().strip(";,。 "))
    trigger = canonical_text(fields.get("trigger", ""))
    if not trigger:
        return None
    status = canonical_text(fields.get("status", ""))
    return Event(
        trigger=trigger,
        status=status if status in _STATUSES else "",
        descriptors=tuple(sorted(set(_mentions(fields.get("descriptors", ""))))),
        anatomy=tuple(sorted(set(_mentions(fields.get("anatomy", ""))))),
    )


def parse_events(text: str) -> frozenset[Event]:
    """Events from a CHIP-CDEE-style answer: each "主体词" starts an event that runs to the
    next "主体词" or the end of its line; lines without one are ignored. Descriptor and
    anatomy lists are split on "，"/"," ("空"/"无" mean none) and compared as sets, unlike
    PromptCBLUE's JSON-string comparison, which made their order count."""
    folded = _MARKDOWN.sub("", unicodedata.normalize("NFKC", text))
    found: set[Event] = set()
    for line in folded.splitlines():
        starts = [m.start() for m in _EVENT_START.finditer(line)]
        for start, end in zip(starts, [*starts[1:], len(line)], strict=False):
            if (event := _event(line[start:end])) is not None:
                found.add(event)
    return frozenset(found)


def _reference_labels(reference: tuple[str, ...]) -> frozenset[str]:
    # One JSON text (dict or list form); anything else is the labels themselves.
    if len(reference) == 1:
        value = first_json(reference[0])
        if value is not None:
            return error_types(value)
    return frozenset(label for r in reference if (label := canonical_text(r)))


def _json_error_types_f1(answer: str, key: ItemKey) -> ItemResult:
    # An answer without JSON predicts no errors: it is credited only when the report has
    # none, and it adds nothing to the pooled counts then either.
    value = first_json(final_answer(answer))
    predicted = error_types(value) if value is not None else frozenset()
    counts = item_counts(predicted, _reference_labels(key.reference))
    return ItemResult(
        item_id=key.item_id,
        metric=key.metric,
        score=item_f1(counts),
        parsed="|".join(sorted(predicted)),
        counts=counts,
    )


METRICS: dict[str, Metric] = {"micro_f1": _json_error_types_f1}
