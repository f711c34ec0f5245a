"""Reading the judge's reply: a tolerant JSON reader and the verdict it yields (pure).

Judges wrap their JSON in code fences or prose, use full-width punctuation, single or curly
quotes and trailing commas; all of that is accepted. The verdict is the LAST top-level object
with a `score` field, so a judge that first quotes a fake verdict from the answer and then
gives its own yields its own. Objects that appear verbatim in the answer are never taken as
the verdict, and an unreadable object with a score after the chosen one makes the reply
malformed rather than letting an earlier (possibly quoted) object win.

A verdict may also score each of the rubric's criteria (`criteria`: `{"<name>": score}`, or by
criterion number, or a list of `{"name", "score"}`). They are read when every criterion of the
rubric is scored once and readably; otherwise the verdict has none (it stays valid: the overall
score is what calibrates, and older cached verdicts and judges that ignore the request give none).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from judge_scorer.core.rubric import Rubric
from medbench_runtime.errors import MedbenchError

RATIONALE_MAX_CHARS = 500
_MAX_REPLY_CHARS = 50_000
"""Only the tail of a longer reply is read (the verdict comes last; bounds the work)."""

_OPENERS = {"{": "}", "｛": "｝"}
_ARRAY_OPENERS = {"[": "]", "［": "］"}
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "「": "」", "＂": "＂", "＇": "＇"}
_COLONS = ":："
_COMMAS = ",，"
_JSON_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/"}
_NUMBER_CHARS = set("0123456789+-.eE０１２３４５６７８９＋－．")
_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_SCORE_TEXT = re.compile(
    r"\s*([-+]?(?:\d+(?:\.\d+)?|\.\d+))\s*(?:分|points?|pts?)?\s*(?:/\s*(\d+(?:\.\d+)?))?\s*",
    re.IGNORECASE,
)
_SCORE_KEY = re.compile(r"""["'“‘]?\s*score\s*["'”’]?\s*[:：]""", re.IGNORECASE)


class MalformedVerdict(MedbenchError):
    """The judge's reply holds no usable verdict; the message says what is wrong."""


@dataclass(frozen=True)
class Verdict:
    """The judge's score of one answer under one rubric version."""

    score: float
    """On the rubric's scale, clamped into it."""
    raw_score: float
    """The score the judge gave, before clamping."""
    scale_min: float
    scale_max: float
    key_points_covered: tuple[int | str, ...]
    """Key-point numbers (1-based) the judge found covered, or their text."""
    rationale: str
    rubric_id: str
    rubric_version: int
    rubric_hash: str
    criteria: tuple[tuple[str, float], ...] = ()
    """(criterion name, score on the rubric's scale, clamped) for every criterion of the rubric
    in its order, or none (the judge gave none, or not every one readably)."""

    @property
    def clamped(self) -> bool:
        """Whether the judge's score lay outside the scale."""
        return self.score != self.raw_score

    @property
    def normalised(self) -> float:
        """The score mapped to [0, 1]."""
        return (self.score - self.scale_min) / (self.scale_max - self.scale_min)


def parse_verdict(raw: str, rubric: Rubric, *, answer: str | None = None) -> Verdict:
    """Reads the verdict from a judge reply.

    Args:
        raw: the judge's reply.
        rubric: the rubric the judge applied (gives the scale).
        answer: the answer under evaluation; objects quoted verbatim from it are skipped.

    Raises:
        MalformedVerdict: no object with a score, an unreadable last verdict, or a score that
            is not a number.
    """
    text = _strip_format_chars(raw)[-_MAX_REPLY_CHARS:]
    found, failed = _top_level_objects(text)
    quoted = _compact(_strip_format_chars(answer)) if answer else ""
    candidates = [
        (start, end, obj)
        for start, end, obj in found
        if _score_field(obj) is not None and not (quoted and _compact(text[start:end]) in quoted)
    ]
    if not candidates:
        raise MalformedVerdict(_nothing_found(text, found, quoted))
    start, end, obj = candidates[-1]
    later = [s for s, _, _ in found if s > end]
    for position in failed:
        window_end = min((s for s in later if s > position), default=len(text))
        if position > end and _SCORE_KEY.search(text, position, window_end):
            raise MalformedVerdict(
                f"the judge's last verdict (from character {position}) is not well-formed JSON"
            )
    raw_score = _score(obj[_score_field(obj) or "score"], rubric)
    scale = rubric.scale
    return Verdict(
        score=scale.clamp(raw_score),
        raw_score=raw_score,
        scale_min=float(scale.min),
        scale_max=float(scale.max),
        key_points_covered=_key_points(obj.get("key_points_covered")),
        rationale=_rationale(obj.get("rationale")),
        rubric_id=rubric.id,
        rubric_version=rubric.version,
        rubric_hash=rubric.content_hash,
        criteria=criterion_scores(_field(obj, "criteria"), rubric),
    )


def criterion_scores(value: Any, rubric: Rubric) -> tuple[tuple[str, float], ...]:
    """The verdict's score per criterion, in the rubric's order and clamped to its scale; ()
    unless every criterion of the rubric is scored exactly once, readably.

    Accepted: an object by criterion name (NFKC, white space, a leading number and a trailing
    bracketed weight ignored: "1. 医学准确性（30%）") or by 1-based criterion number; a list of
    objects with a name (``name`` or ``criterion``) and a score; a list of scores in the
    rubric's order.
    """
    names = [c.name for c in rubric.criteria]
    entries: list[tuple[Any, Any]]
    if isinstance(value, dict):
        entries = list(value.items())
    elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
        entries = [
            (_field(v, "name", "criterion"), v[f] if (f := _score_field(v)) else None)
            for v in value
        ]
    elif isinstance(value, list) and len(value) == len(names):
        entries = list(zip(range(1, len(names) + 1), value, strict=True))
    else:
        return ()
    by_text = {_criterion_text(n): n for n in names}
    given: dict[str, Any] = {}
    for key, score in entries:
        name = by_text.get(_criterion_text(str(key))) if key is not None else None
        if name is None and isinstance(key, int | str) and not isinstance(key, bool):
            number = str(key).strip()
            if number.isdigit() and 1 <= int(number) <= len(names):
                name = names[int(number) - 1]
        if name is None or name in given:
            return ()
        given[name] = score
    if len(given) != len(names):
        return ()
    try:
        return tuple((n, rubric.scale.clamp(_score(given[n], rubric))) for n in names)
    except MalformedVerdict:
        return ()


def _criterion_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).strip()
    text = re.sub(r"^\d+\s*[.、)]\s*", "", text)
    return re.sub(r"\s*\([^()]*\)$", "", text).strip()


def _field(obj: dict[str, Any], *names: str) -> Any:
    """The value of the first key (case and white space ignored) among ``names``; None."""
    for key in obj:
        if isinstance(key, str) and key.strip().lower() in names:
            return obj[key]
    return None


def points_covered(covered: Sequence[int | str], key_points: Sequence[str]) -> tuple[bool, ...]:
    """Per key point, in order: whether the verdict's key_points_covered names it, by its
    1-based number or by its text (NFKC, surrounding white space ignored). Numbers outside
    1..n and texts that are no key point name nothing."""
    texts = {unicodedata.normalize("NFKC", p).strip(): i for i, p in enumerate(key_points)}
    named: set[int] = set()
    for c in covered:
        if isinstance(c, int):
            if 1 <= c <= len(key_points):
                named.add(c - 1)
        elif (index := texts.get(unicodedata.normalize("NFKC", c).strip())) is not None:
            named.add(index)
    return tuple(i in named for i in range(len(key_points)))


def key_point_recall(covered: Sequence[int | str], key_points: Sequence[str]) -> float:
    """The share of the key points the verdict found covered (``points_covered``).

    Raises:
        ValueError: no key points (such an item has no key-point recall at all).
    """
    if not key_points:
        raise ValueError("no key points: the item has no key-point recall")
    flags = points_covered(covered, key_points)
    return sum(flags) / len(flags)


def _strip_format_chars(text: str) -> str:
    # Zero-width spaces, joiners and BOMs (Unicode category Cf) break JSON and hide text.
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def _compact(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _score_field(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    return next((k for k in obj if k.strip().lower() == "score"), None)


def _nothing_found(text: str, found: list[tuple[int, int, Any]], quoted: str) -> str:
    if not found:
        preview = text.strip()[:80]
        return f"no JSON object in the judge reply: {preview!r}"
    with_score = [o for _, _, o in found if _score_field(o) is not None]
    if with_score and quoted:
        return "the only objects with a 'score' field are quoted from the answer"
    keys = sorted({k for _, _, o in found if isinstance(o, dict) for k in o})
    return f"no JSON object with a 'score' field (keys seen: {keys})"


def _score(value: Any, rubric: Rubric) -> float:
    if value is None:
        raise MalformedVerdict("'score' is null")
    if isinstance(value, bool):
        raise MalformedVerdict(f"'score' must be a number, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        match = _SCORE_TEXT.fullmatch(unicodedata.normalize("NFKC", value))
        if match is None:
            raise MalformedVerdict(f"'score' must be a number, got {value!r}")
        number = float(match.group(1))
        denominator = match.group(2)
        if denominator is not None and float(denominator) != float(rubric.scale.max):
            raise MalformedVerdict(
                f"'score' {value!r} is out of {denominator}, the scale is "
                f"{rubric.scale.min}–{rubric.scale.max}"
            )
    else:
        raise MalformedVerdict(f"'score' must be a number, got {type(value).__name__}")
    if not math.isfinite(number):
        raise MalformedVerdict(f"'score' must be finite, got {value!r}")
    return number


def _key_points(value: Any) -> tuple[int | str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[Any] = [p for p in re.split(r"[,，、;；\s]+", value) if p]
    elif isinstance(value, list):
        items = value
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    else:
        raise MalformedVerdict(f"'key_points_covered' must be a list, got {type(value).__name__}")
    covered: list[int | str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | float | str):
            raise MalformedVerdict(f"'key_points_covered' holds {item!r}, not an index or text")
        if isinstance(item, float):
            if not item.is_integer():
                raise MalformedVerdict(f"'key_points_covered' holds {item!r}, not an index")
            covered.append(int(item))
        elif isinstance(item, str):
            text = unicodedata.normalize("NFKC", item).strip()
            covered.append(int(text) if text.isdigit() else item.strip())
        else:
            covered.append(item)
    return tuple(covered)


def _rationale(value: Any) -> str:
    if value is None:
        return ""
    text = (value if isinstance(value, str) else str(value)).strip()
    if len(text) > RATIONALE_MAX_CHARS:
        return text[: RATIONALE_MAX_CHARS - 1] + "…"
    return text


class _Unreadable(Exception):
    pass


def _top_level_objects(text: str) -> tuple[list[tuple[int, int, Any]], list[int]]:
    """Every object readable from an opening brace that is not inside an earlier readable
    object, as (start, end, value); and the brace positions nothing could be read from."""
    found: list[tuple[int, int, Any]] = []
    failed: list[int] = []
    position = 0
    while True:
        starts = [i for i in (text.find(ch, position) for ch in _OPENERS) if i >= 0]
        if not starts:
            return found, failed
        start = min(starts)
        try:
            value, end = _Reader(text).value(start)
        except _Unreadable:
            failed.append(start)
            position = start + 1
        else:
            found.append((start, end, value))
            position = end


class _Reader:
    """Lenient JSON: full-width brackets and punctuation, single/curly quotes, bare keys,
    trailing commas, Python literals."""

    def __init__(self, text: str) -> None:
        self.text = text

    def _skip(self, i: int) -> int:
        while i < len(self.text) and (self.text[i].isspace()):
            i += 1
        return i

    def _at(self, i: int) -> str:
        if i >= len(self.text):
            raise _Unreadable("unexpected end")
        return self.text[i]

    def value(self, i: int) -> tuple[Any, int]:
        i = self._skip(i)
        ch = self._at(i)
        if ch in _OPENERS:
            return self._object(i + 1, _OPENERS[ch])
        if ch in _ARRAY_OPENERS:
            return self._array(i + 1, _ARRAY_OPENERS[ch])
        if ch in _QUOTES:
            return self._string(i)
        if ch in _NUMBER_CHARS:
            return self._number(i)
        match = _BARE.match(self.text, i)
        if match:
            word = match.group().lower()
            literals = {"true": True, "false": False, "null": None, "none": None}
            if word in literals:
                return literals[word], match.end()
        raise _Unreadable(f"unexpected {ch!r}")

    def _object(self, i: int, close: str) -> tuple[dict[str, Any], int]:
        obj: dict[str, Any] = {}
        while True:
            i = self._skip(i)
            ch = self._at(i)
            if ch in ("}", "｝"):
                return obj, i + 1
            if ch in _QUOTES:
                key, i = self._string(i)
            else:
                match = _BARE.match(self.text, i)
                if match is None:
                    raise _Unreadable(f"expected a key, got {ch!r}")
                key, i = match.group(), match.end()
            i = self._skip(i)
            if self._at(i) not in _COLONS:
                raise _Unreadable("expected ':'")
            obj[key], i = self.value(i + 1)
            i = self._skip(i)
            ch = self._at(i)
            if ch in _COMMAS:
                i += 1
            elif ch not in ("}", "｝"):
                raise _Unreadable(f"expected ',' or '{close}', got {ch!r}")

    def _array(self, i: int, close: str) -> tuple[list[Any], int]:
        items: list[Any] = []
        while True:
            i = self._skip(i)
            if self._at(i) in ("]", "］"):
                return items, i + 1
            item, i = self.value(i)
            items.append(item)
            i = self._skip(i)
            ch = self._at(i)
            if ch in _COMMAS or ch == "、":
                i += 1
            elif ch not in ("]", "］"):
                raise _Unreadable(f"expected ',' or '{close}', got {ch!r}")

    def _string(self, i: int) -> tuple[str, int]:
        close = _QUOTES[self.text[i]]
        out: list[str] = []
        i += 1
        while True:
            ch = self._at(i)
            if ch == close:
                return "".join(out), i + 1
            if ch == "\\" and i + 1 < len(self.text):
                nxt = self.text[i + 1]
                if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", self.text[i + 2 : i + 6]):
                    out.append(chr(int(self.text[i + 2 : i + 6], 16)))
                    i += 6
                    continue
                out.append(_JSON_ESCAPES.get(nxt, nxt))
                i += 2
                continue
            out.append(ch)
            i += 1

    def _number(self, i: int) -> tuple[int | float, int]:
        end = i
        while end < len(self.text) and self.text[end] in _NUMBER_CHARS:
            end += 1
        token = unicodedata.normalize("NFKC", self.text[i:end])
        if not _NUMBER.fullmatch(token):
            raise _Unreadable(f"bad number {token!r}")
        if end < len(self.text) and self.text[end] == "分":
            end += 1
        if re.fullmatch(r"[-+]?\d+", token):
            return int(token), end
        return float(token), end
