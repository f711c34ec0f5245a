"""JSON extraction from model text and field-by-field scoring of structured answers (pure)."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from metric_scorer.core.types import ItemKey, ItemResult, Metric

DEFAULT_TOLERANCE = 0.01
"""Absolute tolerance for numeric fields: one fen, the smallest amount MedInsureCalc settles."""

PARSED_LIMIT = 500

_THINK_END = "</think>"
# A fence may carry a language tag and may hug its content: the MedOCR prompt itself shows
# ```json{"影像描述": "", "影像诊断": ""}```, so models copy that shape.
_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)
_WHITESPACE = re.compile(r"\s+")
# A number as models write money and vital signs: "1,234.50", "¥1234.5", "1234.5元", "37°C",
# "80次/分". The unit may not contain digits, so "120/80mmHg" and "2-3月/次" stay text.
_NUMBER = re.compile(
    r"(?P<currency>¥|RMB|CNY)?"
    r"(?P<number>[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+)"
    r"(?P<unit>[^\d.,+-]*)"
)
_CURRENCY_UNITS = frozenset({"元", "圆", "人民币", "RMB", "CNY", "¥"})
_OPENERS = {"{": "}", "[": "]"}
_CLOSER_AHEAD = re.compile(r"\s*[}\]]")
_CLOSERS = frozenset("}]")
# Outside a string these can only be structure, so a model that typed them full width meant
# the ASCII character; inside a string they are content and are left alone.
_FULL_WIDTH_STRUCTURE = {"：": ":", "，": ","}


class _Unparsable:
    pass


_FAIL = _Unparsable()


def final_answer(text: str) -> str:
    """The text after the last `</think>`: a reasoning model's drafts are not its answer."""
    return text.rpartition(_THINK_END)[2]


def extract_json(text: str, *, accept: Callable[[Any], bool] | None = None) -> Any | None:
    """The JSON value a model meant as its answer, or None when there is none.

    Rules, in order:

    1. Only the text after the last `</think>` is read.
    2. If any fenced block (```json ... ``` or a bare ``` fence) holds an accepted value, the
       last value of the last such block wins: a fence is the model's own marking of its answer,
       and commentary after it (footnotes like "[1]") must not override it.
    3. Otherwise the LAST complete JSON value in the text wins. Models that echo the prompt's
       template (MedInsureCalc's all-zero object, MedDetect's examples) or show a draft write
       their own answer after it; a value that is only an echo and comes last cannot be told
       from an answer, and is scored as the answer.

    Values are found by string-aware bracket matching, so brackets inside strings do not
    count. A span that is not strict JSON is retried after repairs that are unambiguous:
    “full-width” quotes used as string delimiters, full-width colons and commas outside
    strings, trailing commas, raw line breaks inside strings. Nested full-width quotes
    (“...“...”...”) are ambiguous and make the span unparsable. Python-style single-quoted
    dicts are not JSON and are not read.

    Args:
        text: The model's raw answer.
        accept: Keeps only values it returns True for (e.g. "is a dict"); None keeps all.
    """
    answer = final_answer(text)
    for fenced in reversed(_FENCE.findall(answer)):
        found = _last_accepted(_json_values(fenced), accept)
        if found is not _FAIL:
            return found
    found = _last_accepted(_json_values(answer), accept)
    return None if found is _FAIL else found


def canonical_json(value: Any, limit: int | None = PARSED_LIMIT) -> str:
    """Compact JSON with sorted keys, cut to limit characters (for ItemResult.parsed)."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return text if limit is None else text[:limit]


def normalise_text(text: str) -> str:
    """NFKC (full-width letters, digits and punctuation to ASCII) with all white space removed."""
    return _WHITESPACE.sub("", unicodedata.normalize("NFKC", text))


def value_text(value: Any) -> str:
    """A JSON value as comparable text: strings as they are, anything else as canonical JSON."""
    if isinstance(value, str):
        return value
    return canonical_json(value, limit=None)


def parse_number(value: Any) -> tuple[float, str] | None:
    """(number, unit) read from a JSON number or a numeric string, else None.

    Strings may carry thousands separators and a unit without digits ("1,234.50", "1234.5元",
    "37℃", "80次/分"); currency markers (¥, 元, RMB ...) all read as the unit "元".
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # a JSON integer of hundreds of digits
            return None
        return (number, "") if math.isfinite(number) else None
    if not isinstance(value, str):
        return None
    match = _NUMBER.fullmatch(normalise_text(value))
    if match is None:
        return None
    number = float(match["number"].replace(",", ""))
    unit = match["unit"]
    if match["currency"] or unit in _CURRENCY_UNITS:
        if match["currency"] and unit not in ("", *_CURRENCY_UNITS):
            return None
        unit = "元"
    return (number, unit) if math.isfinite(number) else None


def field_correct(answer: Any, reference: Any, *, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Whether one answer field matches its reference field.

    A reference that reads as a number is compared numerically within tolerance; its unit and
    the answer's must agree unless either is absent ("37" matches "37℃", "3天" does not match
    "3周"). A JSON object or array reference is compared by structure, each value by these
    same rules (so key order, white space and 1 vs 1.0 never matter): an object needs the same
    keys (matched as find_field matches them); an array needs the same length, in order when
    every element is a number (a pair such as [120, 80] means something in order), in any
    order otherwise (a list of findings or diagnoses is a collection). Any other reference is
    compared as text after normalise_text.
    """
    ref_number = parse_number(reference)
    if ref_number is not None:
        got = parse_number(answer)
        if got is None:
            return False
        (ref_value, ref_unit), (value, unit) = ref_number, got
        # The epsilon absorbs binary rounding, so 0.01 apart counts as within 0.01.
        close = abs(value - ref_value) <= tolerance + 1e-9
        return close and (not ref_unit or not unit or ref_unit == unit)
    if isinstance(reference, dict) and isinstance(answer, dict):
        return len(answer) == len(reference) and all(
            field_scores(answer, reference, tolerance=tolerance).values()
        )
    if isinstance(reference, list) and isinstance(answer, list):
        return _lists_match(answer, reference, tolerance)
    return normalise_text(value_text(answer)) == normalise_text(value_text(reference))


def _lists_match(answer: list[Any], reference: list[Any], tolerance: float) -> bool:
    if len(answer) != len(reference):
        return False
    if all(parse_number(r) is not None for r in reference):
        return all(
            field_correct(a, r, tolerance=tolerance) for a, r in zip(answer, reference, strict=True)
        )
    # Greedy pairing suffices for strings and objects of strings, whose matching is equality of
    # normalised forms: no choice of partner can then block a later element.
    left = list(answer)
    for r in reference:
        partner = next(
            (i for i, a in enumerate(left) if field_correct(a, r, tolerance=tolerance)), None
        )
        if partner is None:
            return False
        del left[partner]
    return True


def find_field(answer: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    """(found, value) of the answer's field for the reference field name: the exact key when
    present, else the first key equal to it after normalise_text ("体温（℃）" for "体温(℃)")."""
    if name in answer:
        return True, answer[name]
    wanted = normalise_text(name)
    for key, value in answer.items():
        if normalise_text(key) == wanted:
            return True, value
    return False, None


def field_scores(
    answer: Mapping[str, Any],
    reference: Mapping[str, Any],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, bool]:
    """Per reference field, whether the answer has it right (see find_field for how keys
    match); a missing field is wrong, extra fields are ignored."""
    scores: dict[str, bool] = {}
    for name, value in reference.items():
        found, given = find_field(answer, name)
        scores[name] = found and field_correct(given, value, tolerance=tolerance)
    return scores


def reference_object(key: ItemKey) -> dict[str, Any]:
    """The key's reference as a non-empty JSON object.

    Raises:
        ValueError: the sealed key is not one JSON object with at least one field.
    """
    if not key.reference:
        raise ValueError(f"item {key.item_id!r}: {key.metric} needs a JSON object reference")
    try:
        value = json.loads(key.reference[0])
    except json.JSONDecodeError as exc:
        raise ValueError(f"item {key.item_id!r}: reference is not JSON: {exc}") from exc
    if not isinstance(value, dict) or not value:
        raise ValueError(f"item {key.item_id!r}: reference must be a non-empty JSON object")
    return value


def item_result(key: ItemKey, score: float, parsed: str) -> ItemResult:
    """The ItemResult of key's item under key's metric."""
    return ItemResult(item_id=key.item_id, metric=key.metric, score=score, parsed=parsed)


def is_object(value: Any) -> bool:
    """An extract_json filter for answers that must be one JSON object."""
    return isinstance(value, dict)


def field_accuracy_metric(*, tolerance: float = DEFAULT_TOLERANCE) -> Metric:
    """Share of reference fields the answer's JSON object gets right (SMDoc, MedInsureCalc).

    An answer without a JSON object scores 0. Raises ValueError for a malformed key.
    """

    def metric(answer: str, key: ItemKey) -> ItemResult:
        reference = reference_object(key)
        found = extract_json(answer, accept=is_object)
        if found is None:
            return item_result(key, 0.0, "")
        scores = field_scores(found, reference, tolerance=tolerance)
        return item_result(key, sum(scores.values()) / len(scores), canonical_json(found))

    return metric


METRICS: dict[str, Metric] = {"field_accuracy": field_accuracy_metric()}


def _last_accepted(values: list[Any], accept: Callable[[Any], bool] | None) -> Any:
    for value in reversed(values):
        if accept is None or accept(value):
            return value
    return _FAIL


def _json_values(text: str) -> list[Any]:
    """Every outermost parsable JSON object or array in text, in order."""
    values: list[Any] = []
    ends: dict[int, int | None] = {}
    i = 0
    while i < len(text):
        if text[i] in _OPENERS:
            if i not in ends:
                ends.update(_bracket_ends(text, i))
            end = ends[i]
            if end is not None:
                value = _parse(text[i:end])
                if value is not _FAIL:
                    values.append(value)
                    i = end
                    continue
        # An unparsable span may still hold a complete value further in, so step one char.
        i += 1
    return values


def _bracket_ends(text: str, start: int) -> dict[int, int | None]:
    """Scanning from the bracket at start, skipping strings: for it and every bracket opened
    after it, the index just past its closing bracket, or None if it never closes.

    A scan from any of those later brackets would see the same strings and closers, so its
    answer is already here; reusing it keeps text with many unclosed brackets linear.
    """
    ends: dict[int, int | None] = {}
    stack: list[tuple[str, int]] = []
    closing_quote: str | None = None
    escaped = False
    for k in range(start, len(text)):
        ch = text[k]
        if closing_quote is not None:
            if escaped:
                escaped = False
            elif ch == "\\" and closing_quote == '"':
                escaped = True
            elif ch == closing_quote:
                closing_quote = None
        elif ch == '"':
            closing_quote = '"'
        elif ch == "“":
            closing_quote = "”"
        elif ch in _OPENERS:
            stack.append((_OPENERS[ch], k))
            ends[k] = None
        elif ch in _CLOSERS:
            expected, opened = stack.pop()
            if ch != expected:
                break  # a mismatched closer ends every bracket still open
            ends[opened] = k + 1
            if not stack:
                break
    return ends


def _parse(span: str) -> Any:
    # strict=False lets raw line breaks and tabs inside strings through.
    try:
        return json.loads(span, strict=False)
    except ValueError:
        pass
    try:
        return json.loads(_repair(span), strict=False)
    except ValueError:
        return _FAIL


def _repair(span: str) -> str:
    """span with full-width string delimiters and structure made ASCII, trailing commas dropped."""
    out: list[str] = []
    closing_quote: str | None = None
    escaped = False
    for k, ch in enumerate(span):
        if closing_quote == '"':
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                closing_quote = None
        elif closing_quote == "”":
            if ch == "”":
                out.append('"')
                closing_quote = None
            else:
                out.append({'"': '\\"', "\\": "\\\\"}.get(ch, ch))
        elif ch in ('"', "“"):
            out.append('"')
            closing_quote = '"' if ch == '"' else "”"
        elif ch in (",", "，"):
            if not _CLOSER_AHEAD.match(span, k + 1):
                out.append(",")
        else:
            out.append(_FULL_WIDTH_STRUCTURE.get(ch, ch))
    return "".join(out)
