"""Multiple-choice answer extraction and scoring for MedBench answer formats (pure, no I/O)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from medbench_runtime.choice_parse import DEFAULT_VALID_LETTERS, canonical_letters, parse_choice
from metric_scorer.core.types import ItemKey, ItemResult, Metric

# The reading of an answer's letters is shared with the gateway's probing detection.
__all__ = ["DEFAULT_VALID_LETTERS", "canonical_letters", "parse_choice"]


@dataclass(frozen=True)
class ChoiceScore:
    """Outcome of scoring one multiple-choice answer."""

    correct: bool
    parsed: str
    """Parsed letters, sorted and joined by ","; "" when nothing was parsed."""


@lru_cache(maxsize=4096)
def _check_reference(reference: frozenset[str], multi: bool, valid_letters: str) -> None:
    if not reference:
        raise ValueError("reference must name at least one option letter")
    invalid = sorted(
        letter for letter in reference if len(letter) != 1 or letter not in valid_letters
    )
    if invalid:
        raise ValueError(f"reference letters {invalid} are not among {valid_letters!r}")
    if not multi and len(reference) != 1:
        raise ValueError(
            f"single-answer reference must hold one letter, got {canonical_letters(reference)!r}"
        )


class _PlainWrappers:
    """The commonest replies ("<B>", "<A, C>") read without the general parser."""

    _pattern = re.compile(r"\s*<([A-Z](?:, ?[A-Z])*)>\s*")

    def get(self, text: str) -> frozenset[str] | None:
        match = self._pattern.fullmatch(text)
        return frozenset(match.group(1).replace(" ", "").split(",")) if match else None


_PLAIN_WRAPPER = _PlainWrappers()


def score_choice(
    text: str,
    reference: frozenset[str],
    *,
    multi: bool,
    valid_letters: str = DEFAULT_VALID_LETTERS,
) -> ChoiceScore:
    """Scores an answer: correct iff the parsed letter set equals the reference set.

    Raises:
        ValueError: the reference is empty, holds something other than letters of
            ``valid_letters``, or holds several letters for a single-answer question.
    """
    _check_reference(reference, multi, valid_letters)
    parsed = _PLAIN_WRAPPER.get(text)
    if parsed is None or not parsed <= frozenset(valid_letters):
        parsed = parse_choice(text, multi=multi, valid_letters=valid_letters)
    return ChoiceScore(correct=parsed == reference, parsed=canonical_letters(parsed))


ALL_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def option_letters(options: int, reference: tuple[str, ...]) -> str:
    """The letters that name an item's options: A to the options-th letter when the count is
    known (real DDx-advanced items have 12, A-L), else A-J widened to the reference's highest
    letter."""
    highest = max((ALL_LETTERS.find(r) + 1 for r in reference), default=0)
    return ALL_LETTERS[: max(options or len(DEFAULT_VALID_LETTERS), highest)]


def _choice_metric(*, multi: bool) -> Metric:
    def metric(answer: str, key: ItemKey) -> ItemResult:
        letters = option_letters(key.options, key.reference)
        outcome = score_choice(answer, frozenset(key.reference), multi=multi, valid_letters=letters)
        return ItemResult(
            item_id=key.item_id,
            metric=key.metric,
            score=1.0 if outcome.correct else 0.0,
            parsed=outcome.parsed,
        )

    return metric


METRICS: dict[str, Metric] = {
    "choice_single": _choice_metric(multi=False),
    "choice_multi": _choice_metric(multi=True),
}


def shown_reference(reference: tuple[str, ...], order: tuple[int, ...] | None) -> tuple[str, ...]:
    """The reference letters as one download shows them: order[i] is the original option at
    position i, so original letter L is shown as the letter of the position holding it."""
    if not order:
        return reference
    position = {original: shown for shown, original in enumerate(order)}
    return tuple(sorted(ALL_LETTERS[position[ALL_LETTERS.index(r)]] for r in reference))
