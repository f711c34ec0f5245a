"""Answers written for the canonical option order, moved to the order a download shows.

Each tenant's download lists multiple-choice options in its own order (leak tracing), so a
canned answer set written against the bank's order must be translated before it is uploaded,
as a model answering the shown question would. Used by the demo, tests and benchmarks.
"""

from __future__ import annotations

import re

from rotator.core.options import parse_options

_RUN = re.compile(r"(?<![A-Za-z])[A-Z]{2,}(?![A-Za-z])")


def translate(answer: str, canonical_question: str, shown_question: str) -> str:
    """Rewrites option letters in answer from the canonical order to the shown one.

    Every capital letter of an option is mapped, wherever it stands: the scorer reads only
    stand-alone letters, and a letter inside a word (CT, A级) stays inside a word either way.
    """
    canonical = parse_options(canonical_question)
    shown = parse_options(shown_question)
    if canonical is None or shown is None or canonical.texts == shown.texts:
        return answer
    letter_of_text = {text: letter for letter, text in zip(shown.letters, shown.texts, strict=True)}
    mapping = {
        letter: letter_of_text[text]
        for letter, text in zip(canonical.letters, canonical.texts, strict=True)
        if text in letter_of_text
    }
    # Full-width letters (Ｄ) count as options too.
    mapping |= {_wide(k): _wide(v) for k, v in mapping.items()}
    moved = list(answer.translate(str.maketrans(mapping)))
    # Letters run together ("AD") are read as an answer only in alphabetical order, so a
    # model writes them sorted in the shown order too.
    for run in _RUN.finditer(answer):
        letters = run.group()
        if list(letters) == sorted(letters) and set(letters) <= set(canonical.letters):
            moved[run.start() : run.end()] = sorted(moved[run.start() : run.end()])
    return "".join(moved)


def _wide(letter: str) -> str:
    return chr(ord(letter) + 0xFEE0)
