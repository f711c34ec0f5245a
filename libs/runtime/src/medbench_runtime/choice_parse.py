"""Reading the option letters a model's answer names (pure): the one reading every part of the
platform uses, so that what is scored (metric scorer) and what is compared (the gateway's
probing detection) never disagree."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_VALID_LETTERS = "ABCDEFGHIJ"

# Separators allowed between letters of one answer: "A, C", "A、C", "A;C", "A C", "A和C".
# Applied after NFKC, which already folds full-width "，；：（）＜＞" to ASCII.
_SEPARATOR_CLASS = r"[\s,、;和与及]"
# After an answer cue a line break ends the answer: "答案是A\n\nB项错误" names only A.
_INLINE_SEPARATOR_CLASS = r"[ \t,、;和与及]"
# A CJK character next to a letter usually glues it into a term (B超, A级, 维生素C, C反应蛋白);
# these are the characters that instead mark the letter as an option reference (选A, A项, A和C).
_OPTION_PREFIX_CHARS = frozenset("选项择是为答案和与及或")
_OPTION_SUFFIX_CHARS = frozenset("项选正错对是为和与及或")
_CUE_FOLLOW_CHARS = _OPTION_SUFFIX_CHARS | frozenset("因")
# Glue characters that make a letter part of a term: HER-2, A/G 比值, CD4+, O'Brien.
# "°" keeps the C of a temperature (NFKC turns "℃" into "°C") from reading as option C.
_GLUE_CHARS = frozenset("-+/_'’&*%^~=°")
_WRAPPER_OPEN = "<【〈"
_WRAPPER_CLOSE = ">】〉"
_ONLY_SEPARATORS = re.compile(rf"{_SEPARATOR_CLASS}*")


@dataclass(frozen=True)
class _Patterns:
    wrapper: re.Pattern[str]
    bare: re.Pattern[str]
    cue: re.Pattern[str]


@lru_cache(maxsize=32)
def _patterns(valid_letters: str) -> _Patterns:
    letter = f"[{re.escape(valid_letters)}]"
    run = f"{letter}(?:{_SEPARATOR_CLASS}*{letter})*"
    inline_run = f"{letter}(?:{_INLINE_SEPARATOR_CLASS}*{letter})*"
    opens = re.escape(_WRAPPER_OPEN)
    closes = re.escape(_WRAPPER_CLOSE)
    # The optional tail accepts a model that restates the option text: "<D. 单一病种>".
    wrapper = re.compile(
        rf"[{opens}]\s*(?P<run>{run})\s*(?:[.:、]\s*[^{opens}{closes}]*)?[{closes}]"
    )
    bare = re.compile(
        rf"(?:(?:最终|正确)?答案|答)?\s*(?:是|为|:)?\s*(?P<run>{run})[\s。.!]*",
    )
    cue = re.compile(
        r"(?:答案|答|选择|应选|故选|选"
        # English phrasing: "the answer is (B)", "Answer: C", "final answer: A, C", "option D".
        r"|(?i:(?:the\s+)?(?:correct\s+|final\s+|best\s+)?answer(?:\s+is|\s*:)|option)"
        r")\s*(?:应该是|应该为|应是|应为|是|为)?\s*:?\s*\(?"
        rf"(?P<run>{inline_run})"
    )
    return _Patterns(wrapper=wrapper, bare=bare, cue=cue)


def _letters(run: str) -> frozenset[str]:
    return frozenset(ch for ch in run if "A" <= ch <= "Z")


def _strictly_increasing(word: str) -> bool:
    return all(a < b for a, b in zip(word, word[1:], strict=False))


def _is_ideograph(ch: str) -> bool:
    return unicodedata.category(ch) == "Lo"


def _delimits(ch: str | None, option_chars: frozenset[str]) -> bool:
    """True when ch, next to a capital letter, leaves that letter standing alone."""
    if ch is None:
        return True
    if ch in _GLUE_CHARS:
        return False
    if _is_ideograph(ch):
        return ch in option_chars
    # Any other letter or digit (ASCII, Greek, Roman numerals) makes the capital part of a token.
    return not ch.isalnum()


_ENGLISH_WORD_AFTER = re.compile(r" [a-z]")
_ENGLISH_WORD_BEFORE = re.compile(r"[a-z] $")


def _stands_alone(text: str, start: int, end: int) -> bool:
    before = text[start - 1] if start > 0 else None
    after = text[end] if end < len(text) else None
    # "I think ...", "A patient ...": an English word, unless a word leads up to it
    # ("option A is", "choose B because").
    if (
        end - start == 1
        and _ENGLISH_WORD_AFTER.match(text, end)
        and not _ENGLISH_WORD_BEFORE.search(text[max(0, start - 2) : start])
    ):
        return False
    return _delimits(before, _OPTION_PREFIX_CHARS) and _delimits(after, _OPTION_SUFFIX_CHARS)


def _from_wrappers(text: str, patterns: _Patterns) -> frozenset[str] | None:
    matches = list(patterns.wrapper.finditer(text))
    if not matches:
        return None
    # A model often echoes the prompt's worked example ("答：<E>") before its own answer, so
    # the last wrapper wins; wrappers written side by side ("<A>、<C>") form one answer.
    letters = set(_letters(matches[-1].group("run")))
    for earlier, later in zip(reversed(matches[:-1]), reversed(matches[1:]), strict=True):
        if not _ONLY_SEPARATORS.fullmatch(text[earlier.end() : later.start()]):
            break
        letters.update(_letters(earlier.group("run")))
    return frozenset(letters)


def _from_bare_answer(text: str, patterns: _Patterns) -> frozenset[str] | None:
    match = patterns.bare.fullmatch(text.strip())
    return _letters(match.group("run")) if match else None


def _from_cue(text: str, patterns: _Patterns) -> frozenset[str] | None:
    found: frozenset[str] | None = None
    for match in patterns.cue.finditer(text):
        end = match.end("run")
        if _delimits(text[end] if end < len(text) else None, _CUE_FOLLOW_CHARS):
            found = _letters(match.group("run"))
    return found


def _from_scan(text: str, valid_letters: str, *, multi: bool) -> frozenset[str]:
    found: set[str] = set()
    for token in re.finditer(r"[A-Za-z0-9]+", text):
        word = token.group()
        if not all(ch in valid_letters for ch in word):
            continue
        # Run-together letters ("ACE") are an answer only in multi-answer questions, and models
        # write them in alphabetical order; anything else (DIC, ECG, or any run in a
        # single-answer question) is far more likely an acronym.
        if len(word) > 1 and not (multi and _strictly_increasing(word)):
            continue
        if _stands_alone(text, token.start(), token.end()):
            found.update(word)
    return frozenset(found)


def parse_choice(
    text: str, *, multi: bool, valid_letters: str = DEFAULT_VALID_LETTERS
) -> frozenset[str]:
    """Extracts the option letters a model answered.

    Order of evidence: the last ``<...>`` (also ``【...】``, ``〈...〉`` and full-width ``＜...＞``)
    wrapper holding option letters; a reply that is nothing but letters (``ABC``, ``A、C``,
    ``答案：BD``); the last answer cue (``答案是C``, ``选A和D``); finally every letter that
    stands alone (``A.``, ``(A)``, ``A项``), ignoring capitals inside words, acronyms and terms
    (CT, NYHA, I131, B超, A级, 维生素C).

    Letters are case-sensitive, as the MedBench prompts demand ("需要区分大小写"): lowercase
    letters are never options, and neither are capitals outside ``valid_letters``. For a
    single-answer question an answer naming several letters is returned as parsed, so that
    scoring marks it wrong.
    """
    # Markdown emphasis ("**B**") is formatting, not glue.
    normalised = re.sub(r"\*\*|__", " ", unicodedata.normalize("NFKC", text))
    patterns = _patterns(valid_letters)
    for strategy in (_from_wrappers, _from_bare_answer, _from_cue):
        letters = strategy(normalised, patterns)
        if letters is not None:
            return letters
    return _from_scan(normalised, valid_letters, multi=multi)


def canonical_letters(letters: frozenset[str]) -> str:
    """Sorted letters joined by ","; "" for the empty set."""
    return ",".join(sorted(letters))
