"""Finds a multiple-choice question's own option list and re-renders it in another order.

Each tenant's download shows the options of a choice item in its own order (see
`permutation_for`), so a leaked file identifies the tenant that received it. The letters stay
A, B, C ... in place; only the option texts move.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import count

LETTERS = string.ascii_uppercase

# "(A)" / "（A）", or "A" then one of . ． 、 : ： ) ）; spaces after a marker belong to it.
_MARKER = re.compile(
    r"(?:(?P<open>[(（])(?P<bracketed>[A-Z])[)）]|(?P<letter>[A-Z])[.．、:：)）])[ \t\u3000]*"
)
_LINE_SPACE = " \t\u3000"

_PERMUTATION_DOMAIN = b"medbench/option-order/v1"


@dataclass(frozen=True)
class OptionBlock:
    """A question split around its option list.

    The question reads prefix + letters[0] + separators[0] + texts[0] + separators[1]
    + letters[1] + separators[2] + texts[1] + ... + texts[n-1] + suffix: separators[2*i] follows
    letter i up to its text ("." and spaces, ")" ...), separators[2*i - 1] lies between text i-1
    and letter i (a line break, an opening bracket ...). The prefix ends with the first
    marker's opening bracket, if it has one; the suffix starts after the last option's text,
    which ends with its line.
    """

    prefix: str
    letters: tuple[str, ...]
    """Always "A", "B", "C" ... in order, at least two."""
    texts: tuple[str, ...]
    """The option texts, without surrounding whitespace."""
    separators: tuple[str, ...]
    suffix: str

    def __post_init__(self) -> None:
        n = len(self.letters)
        if n < 2 or self.letters != tuple(LETTERS[:n]):
            raise ValueError(f"letters must be A, B, C ... (at least two), got {self.letters}")
        if len(self.texts) != n or len(self.separators) != 2 * n - 1:
            raise ValueError(
                f"{n} options need {n} texts and {2 * n - 1} separators, got "
                f"{len(self.texts)} and {len(self.separators)}"
            )


@dataclass(frozen=True)
class _Marker:
    start: int
    """Where the marker starts: its opening bracket, or its letter."""
    letter_at: int
    end: int
    """Just after the marker and the spaces that follow it: where the option text starts."""
    letter: str
    line_start: bool
    """Only whitespace precedes the marker on its line."""


def parse_options(question: str) -> OptionBlock | None:
    """Finds the question's own option list: the last run of markers A, B, C ... in the text.

    A run needs at least two markers, in order and without gaps. The first marker may follow the
    stem on its line; a later one is the next marker that starts a line if that one has the
    expected letter, else the first marker with that letter further along the same line (options
    written one after another on one line). A run that starts inside an earlier run's options (a
    marker-like "(A)" in an option text) does not count, so a worked example's options earlier in
    the prompt are skipped in favour of the question's own.

    Returns:
        The split question, or None when it holds no such run (a free-text item).
    """
    markers = _markers(question)
    chosen: list[_Marker] = []
    covered_until = -1
    for i, marker in enumerate(markers):
        if marker.letter != "A" or marker.start < covered_until:
            continue
        run = _run_from(question, markers, i)
        if len(run) >= 2:
            chosen = run
            covered_until = _text_end(question, run[-1].end, _line_end(question, run[-1].end))
    if not chosen:
        return None
    return _split(question, chosen)


def render(block: OptionBlock) -> str:
    """The question as it was parsed (identical to the parsed text)."""
    return relabel(block, range(len(block.texts)))


def relabel(block: OptionBlock, order: Sequence[int]) -> str:
    """Renders the question with its option texts in another order.

    Args:
        block: the parsed question.
        order: order[i] is the index of the original option shown at position i (letter i).

    Raises:
        ValueError: order is not a permutation of the option indices.
    """
    _check_order(order, len(block.texts))
    parts = [block.prefix]
    for i, original in enumerate(order):
        if i:
            parts.append(block.separators[2 * i - 1])
        parts += [block.letters[i], block.separators[2 * i], block.texts[original]]
    parts.append(block.suffix)
    return "".join(parts)


def letter_map(order: Sequence[int]) -> dict[str, str]:
    """Original letter -> the letter it is shown under after `relabel(block, order)`.

    Raises:
        ValueError: order is not a permutation of range(len(order)).
    """
    _check_order(order, len(order))
    return {LETTERS[original]: LETTERS[shown] for shown, original in enumerate(order)}


def permutation_for(secret: bytes, tenant_id: str, item_id: str, n: int) -> tuple[int, ...]:
    """The option order one tenant sees for one item, derived with HMAC-SHA256 from a secret.

    Deterministic for the same arguments; for n >= 2 never the identity (a tenant must not get
    the stored order), so with n = 2 every tenant gets the swap. Distinct tenants agree with
    probability 1 / (n! - 1).

    Raises:
        ValueError: n is negative, greater than 26, or the secret is empty.
    """
    if not 0 <= n <= len(LETTERS):
        raise ValueError(f"n must be between 0 and {len(LETTERS)}, got {n}")
    if not secret:
        raise ValueError("secret must not be empty: an unkeyed order is guessable")
    identity = tuple(range(n))
    if n < 2:
        return identity
    for candidate in count():
        words = _hmac_words(secret, tenant_id, item_id, n, candidate)
        order = list(identity)
        for i in range(n - 1, 0, -1):
            j = _below(i + 1, words)
            order[i], order[j] = order[j], order[i]
        if tuple(order) != identity:
            return tuple(order)
    raise AssertionError("unreachable")


def _markers(question: str) -> list[_Marker]:
    found = []
    for match in _MARKER.finditer(question):
        start = match.start()
        letter_at = match.start("bracketed") if match["open"] else start
        line_begin = question.rfind("\n", 0, start) + 1
        found.append(
            _Marker(
                start=start,
                letter_at=letter_at,
                end=match.end(),
                letter=question[letter_at],
                line_start=not question[line_begin:start].strip(_LINE_SPACE),
            )
        )
    return found


def _run_from(question: str, markers: list[_Marker], first: int) -> list[_Marker]:
    run = [markers[first]]
    position = first
    while run[-1].letter != LETTERS[-1]:
        current = run[-1]
        wanted = LETTERS[LETTERS.index(current.letter) + 1]
        line_end = _line_end(question, current.end)
        next_line_start = next(
            (k for k in range(position + 1, len(markers)) if markers[k].line_start), None
        )
        if next_line_start is not None and markers[next_line_start].letter == wanted:
            position = next_line_start
        else:
            inline = next(
                (
                    k
                    for k in range(position + 1, len(markers))
                    if markers[k].start < line_end and markers[k].letter == wanted
                ),
                None,
            )
            if inline is None:
                break
            position = inline
        run.append(markers[position])
    return run


def _split(question: str, run: list[_Marker]) -> OptionBlock:
    texts, separators = [], []
    for i, marker in enumerate(run):
        separators.append(question[marker.letter_at + 1 : marker.end])
        if i + 1 < len(run):
            text_end = _text_end(question, marker.end, run[i + 1].start)
            texts.append(question[marker.end : text_end])
            separators.append(question[text_end : run[i + 1].letter_at])
        else:
            text_end = _text_end(question, marker.end, _line_end(question, marker.end))
            texts.append(question[marker.end : text_end])
    return OptionBlock(
        prefix=question[: run[0].letter_at],
        letters=tuple(marker.letter for marker in run),
        texts=tuple(texts),
        separators=tuple(separators),
        suffix=question[text_end:],
    )


def _line_end(question: str, position: int) -> int:
    end = question.find("\n", position)
    return len(question) if end < 0 else end


def _text_end(question: str, start: int, stop: int) -> int:
    """Where an option text starting at start ends, before stop: trailing whitespace excluded."""
    return start + len(question[start:stop].rstrip())


def _check_order(order: Sequence[int], n: int) -> None:
    if sorted(order) != list(range(n)):
        raise ValueError(f"order must be a permutation of 0..{n - 1}, got {list(order)}")


def _hmac_words(
    secret: bytes, tenant_id: str, item_id: str, n: int, candidate: int
) -> Iterator[int]:
    """An endless stream of 32-bit words, keyed by the secret, for one (tenant, item, n, try)."""
    fields = (
        _PERMUTATION_DOMAIN,
        tenant_id.encode("utf-8"),
        item_id.encode("utf-8"),
        str(n).encode("ascii"),
        str(candidate).encode("ascii"),
    )
    # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
    message = b"".join(len(field).to_bytes(4, "big") + field for field in fields)
    for block in count():
        digest = hmac.new(secret, message + block.to_bytes(4, "big"), hashlib.sha256).digest()
        for offset in range(0, len(digest), 4):
            yield int.from_bytes(digest[offset : offset + 4], "big")


def _below(bound: int, words: Iterator[int]) -> int:
    """A uniform integer in [0, bound), by rejection so that no value is favoured."""
    limit = (1 << 32) - (1 << 32) % bound
    for word in words:
        if word < limit:
            return word % bound
    raise AssertionError("the word stream is endless")
