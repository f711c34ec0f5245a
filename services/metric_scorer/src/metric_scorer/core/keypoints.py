"""Key-point recall: the share of a reference's key points an open-ended answer covers."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz

from metric_scorer.core.structured import final_answer
from metric_scorer.core.types import ItemKey, ItemResult, Metric

__all__ = ["DEFAULT_THRESHOLD", "METRICS", "KeyPointResult", "key_point_recall", "normalise"]

DEFAULT_THRESHOLD = 0.85
"""Fuzzy-match similarity (0-1) at which a key point counts as covered."""


@dataclass(frozen=True)
class KeyPointResult:
    """Recall of one answer over its item's key points."""

    recall: float
    """Covered key points / all key points, in [0, 1]."""
    matched: tuple[bool, ...]
    """Per key point, in the given order: whether the answer covers it."""


def normalise(text: str) -> str:
    """NFKC, lower case, and every punctuation mark, white-space character and invisible format
    character (zero-width space or joiner, soft hyphen) removed, so that "CT平扫，", "ct 平扫"
    and "CT\u200b平扫" compare equal."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(
        ch
        for ch in folded
        if not ch.isspace() and not unicodedata.category(ch).startswith(("P", "Cf"))
    )


def _covered(point: str, answer: str, cutoff: float) -> bool:
    if point in answer:
        return True
    # partial_ratio aligns the shorter string inside the longer one: an answer shorter than
    # the key point would then "cover" it by being a piece of it ("发热" inside "发热伴寒战").
    # Only a key point that fits inside the answer is matched partially.
    if len(point) > len(answer):
        return fuzz.ratio(point, answer, score_cutoff=cutoff) > 0
    return fuzz.partial_ratio(point, answer, score_cutoff=cutoff) > 0


def key_point_recall(
    answer: str, key_points: Sequence[str], threshold: float = DEFAULT_THRESHOLD
) -> KeyPointResult:
    """Which key points the answer covers, and the share covered.

    A key point is covered when its normalised form occurs in the normalised answer, or when
    rapidfuzz's partial_ratio between them is at least threshold * 100 (the best-aligned
    window of the answer nearly spells the key point out: at 0.85, one differing character
    passes in a key point of seven or more characters, not in a shorter one). The dataset's
    Macro-Recall is the mean of these per-item recalls.

    Raises:
        ValueError: there are no key points (such an item is not key-point scored at all,
            rather than scored 0 or 1), a key point is empty once normalised, or threshold
            is outside (0, 1].
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
    if not key_points:
        raise ValueError("no key points: the item is not key-point scored")
    points = [normalise(p) for p in key_points]
    if empty := [kp for kp, p in zip(key_points, points, strict=True) if not p]:
        raise ValueError(f"key points without any text once normalised: {empty!r}")
    text = normalise(answer)
    # score_cutoff is inclusive; rounding keeps 0.57 * 100 = 56.99999999999999 from
    # rejecting a similarity of exactly 57.
    cutoff = round(threshold * 100, 9)
    matched = tuple(bool(text) and _covered(p, text, cutoff) for p in points)
    return KeyPointResult(recall=sum(matched) / len(matched), matched=matched)


def _key_point_recall(answer: str, key: ItemKey) -> ItemResult:
    # A key point named only while thinking aloud is not covered by the answer.
    result = key_point_recall(final_answer(answer), key.key_points)
    return ItemResult(
        item_id=key.item_id,
        metric=key.metric,
        score=result.recall,
        parsed=f"{sum(result.matched)}/{len(result.matched)}",
    )


METRICS: dict[str, Metric] = {"key_point_recall": _key_point_recall}
