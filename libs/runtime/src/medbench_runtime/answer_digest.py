"""Answer digests (pure): one short hash of an answer as it is scored, so that two submissions'
answers can be compared item by item without reading them again (probing detection: gateway
core/probing.py, for upload-mode answers at the gateway and API-mode answers at the dispatcher).

The digest is taken of canonical_answer: for a choice item (choice_single, choice_multi) the
option letters it names, read as the metric scorer reads them (medbench_runtime.choice_parse),
so that rewording changes nothing ("A", "<A>", "答案：A" are one answer; "不确定", an unanswered
item and, for a single-answer item, an answer naming several letters are all "no option": each
scores 0 whatever the key); for any other item the text normalised for what never changes a
parsed answer (case, width, spacing, punctuation).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping

from medbench_runtime.choice_parse import parse_choice

DIGEST_BYTES = 4
_NOT_LETTERS_OR_DIGITS = re.compile(r"[\W_]+")


def normalised(answer: str) -> str:
    """The answer without what no parser reads: NFKC (full-width forms folded), case folded,
    letters and digits only (CJK characters are letters)."""
    if not answer.isascii():
        answer = unicodedata.normalize("NFKC", answer)
    return _NOT_LETTERS_OR_DIGITS.sub("", answer.casefold())


# -- choice answers, read as the metric scorer reads them (medbench_runtime.choice_parse) -----

CHOICE_SINGLE = "choice_single"
CHOICE_MULTI = "choice_multi"
CHOICE_FORMATS = frozenset({CHOICE_SINGLE, CHOICE_MULTI})
# The canonical answer naming no option: the normalised empty answer, so that it digests as an
# unanswered item does (both score 0).
NO_OPTION = ""


def choice_letters(answer: str, multi: bool) -> frozenset[str]:
    """The option letters a choice answer names, read by the metric scorer's own reading
    (capitals A-J: the gateway does not know an item's option count)."""
    return parse_choice(answer, multi=multi)


def canonical_answer(answer: str, answer_format: str = "") -> str:
    """What the digest of an answer is taken of: for a choice item its letters, sorted
    (NO_OPTION when it names none, or several for a single-answer item: scored 0 whatever the
    key); for any other item (or an unknown format) normalised(answer)."""
    if answer_format not in CHOICE_FORMATS:
        return normalised(answer)
    multi = answer_format == CHOICE_MULTI
    letters = choice_letters(answer, multi)
    if not letters or (not multi and len(letters) != 1):
        return NO_OPTION
    # Lower case: "A" canonical is "a", its digest the one an older vector holds for "<A>".
    return "".join(sorted(letters)).lower()


def answer_digest(answer: str, answer_format: str = "") -> bytes:
    """The digest of canonical_answer(answer, answer_format)."""
    canonical = canonical_answer(answer, answer_format)
    return hashlib.blake2b(canonical.encode(), digest_size=DIGEST_BYTES).digest()


EMPTY = answer_digest("")


def digest_vector(
    answers: Iterable[tuple[int, str]], items: int, formats: Mapping[int, str] | None = None
) -> bytes:
    """One digest per ordinal 0..items-1 of (ordinal, answer) pairs, each item's answer read
    for its answer format (formats: by ordinal; an item without one is read as text); ordinals
    outside (the download's canaries) are left out, unanswered ones hold EMPTY."""
    out = bytearray(EMPTY * items)
    shape = formats or {}
    for ordinal, answer in answers:
        if 0 <= ordinal < items:
            digest = answer_digest(answer, shape.get(ordinal, ""))
            out[ordinal * DIGEST_BYTES : (ordinal + 1) * DIGEST_BYTES] = digest
    return bytes(out)
