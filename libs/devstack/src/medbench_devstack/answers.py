"""Answers written for the canonical option order, moved to the order a download shows.

Each tenant's download lists multiple-choice options in its own order (leak tracing), so a
canned answer set written against the bank's order must be translated before it is uploaded,
as a model answering the shown question would. Used by the demo, tests and benchmarks.

This side does not need the rotator's rule for which option list a download reorders: it
compares the two questions it is given. A candidate option list (a run of markers A, B, C ...)
counts only if both questions are identical around the option texts and the texts are the same
set, so the letters it moves are exactly the ones the download moved; when no candidate fits
(a free-text item, or options this reading cannot split), the answer is left as written.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from dataclasses import dataclass

LETTERS = string.ascii_uppercase
# "(A)" / "（A）", or "A" then one of . ． 、 : ： ) ）; spaces after a marker belong to it.
_MARKER = re.compile(
    r"(?:[(（](?P<bracketed>[A-Z])[)）]|(?P<letter>[A-Z])[.．、:：)）])[ \t\u3000]*"
)
_RUN = re.compile(r"(?<![A-Za-z])[A-Z]{2,}(?![A-Za-z])")


@dataclass(frozen=True)
class _Marker:
    start: int
    end: int
    """Where the option text starts."""
    letter: str
    line_start: bool


@dataclass(frozen=True)
class _OptionList:
    """A question split into its option texts and everything around them."""

    letters: tuple[str, ...]
    texts: tuple[str, ...]
    around: tuple[str, ...]
    """The question before the first text, between texts, and after the last."""


def translate(answer: str, canonical_question: str, shown_question: str) -> str:
    """Rewrites option letters in answer from the canonical order to the shown one.

    Every capital letter of an option is mapped, wherever it stands: the scorer reads only
    stand-alone letters, and a letter inside a word (CT, A级) stays inside a word either way.
    """
    found = _moved_options(canonical_question, shown_question)
    if found is None:
        return answer
    canonical, shown = found
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


def _moved_options(canonical: str, shown: str) -> tuple[_OptionList, _OptionList] | None:
    """The option list the shown question reorders, as split in each question; None when
    the questions are the same or differ other than by an option order."""
    if canonical == shown:
        return None
    shown_lists = list(_option_lists(shown))
    # The last lists first: a question's own options follow any worked example's.
    for c in reversed(list(_option_lists(canonical))):
        for s in shown_lists:
            if (
                c.around == s.around
                and c.letters == s.letters
                and sorted(c.texts) == sorted(s.texts)
            ):
                return c, s
    return None


def _option_lists(question: str) -> Iterator[_OptionList]:
    """Every way to read a run of markers A, B, C ... (two at least) as an option list: from
    each marker A, the next letter either at the next marker that starts a line or at the next
    marker with that letter anywhere, and every prefix of such a run."""
    markers = _markers(question)
    seen: set[tuple[int, ...]] = set()
    for i, first in enumerate(markers):
        if first.letter != "A":
            continue
        for prefer_line_start in (True, False):
            run = [first]
            for marker in markers[i + 1 :]:
                if marker.letter != LETTERS[len(run)]:
                    continue
                if prefer_line_start and not marker.line_start:
                    continue
                run.append(marker)
                if len(run) == len(LETTERS):
                    break
            for n in range(2, len(run) + 1):
                key = tuple(m.start for m in run[:n])
                if key not in seen:
                    seen.add(key)
                    yield _split(question, run[:n])


def _markers(question: str) -> list[_Marker]:
    found = []
    for match in _MARKER.finditer(question):
        start = match.start()
        line_begin = question.rfind("\n", 0, start) + 1
        found.append(
            _Marker(
                start=start,
                end=match.end(),
                letter=match["bracketed"] or match["letter"],
                line_start=not question[line_begin:start].strip(" \t\u3000"),
            )
        )
    return found


def _split(question: str, run: list[_Marker]) -> _OptionList:
    texts, around = [], []
    previous_end = 0
    for i, marker in enumerate(run):
        if i + 1 < len(run):
            stop = run[i + 1].start
        else:
            line_end = question.find("\n", marker.end)
            stop = len(question) if line_end < 0 else line_end
        text_end = marker.end + len(question[marker.end : stop].rstrip())
        around.append(question[previous_end : marker.end])
        texts.append(question[marker.end : text_end])
        previous_end = text_end
    around.append(question[previous_end:])
    return _OptionList(tuple(m.letter for m in run), tuple(texts), tuple(around))


def _wide(letter: str) -> str:
    return chr(ord(letter) + 0xFEE0)
