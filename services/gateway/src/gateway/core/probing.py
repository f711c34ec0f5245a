"""Probing rules (pure): when two submissions of one tenant on one pool differ in so few answers
that comparing their scores would tell the keys of the items they differ in (issue 22).

A submission whose answers are final is kept as a digest vector: one short hash per pool item,
in pool order (canaries left out: they are the download's own), of the answer as it is scored
(canonical_answer): for a choice item (choice_single, choice_multi) the option letters it names,
read as the metric scorer reads them, so that rewording changes nothing ("A", "<A>", "答案：A"
are one answer; "不确定", "无法判断", an unanswered item and, for a single-answer item, an
answer naming several letters are all "no option": each scores 0 whatever the key); for any
other item the text normalised for what never changes a parsed answer (case, width, spacing,
punctuation). Comparing a submission with N earlier ones is then O(N * items), without reading
their answers again. A pair differing in at most max(5, 2% of the items) answers, identical
answers included, is a finding.

Two answers the scorer scores alike must have one digest (else rewording them hides a probe);
two it scores apart may share one (that only flags more pairs, to maintainers). Hence letters
are case-sensitive, as the scorer's are (" a " is no option, not A), and the letters read are
A-J (the scorer's default when an item's option count is not known; the gateway does not know
it)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from medbench_runtime.answer_digest import (
    CHOICE_FORMATS,
    CHOICE_MULTI,
    CHOICE_SINGLE,
    DIGEST_BYTES,
    EMPTY,
    NO_OPTION,
    answer_digest,
    canonical_answer,
    choice_letters,
    digest_vector,
    normalised,
)
from medbench_runtime.errors import InvalidArgument

__all__ = [
    "CHOICE_FORMATS",
    "CHOICE_MULTI",
    "CHOICE_SINGLE",
    "DIGEST_BYTES",
    "EMPTY",
    "NO_OPTION",
    "answer_digest",
    "canonical_answer",
    "choice_letters",
    "digest_vector",
    "normalised",
]

MIN_THRESHOLD = 5
THRESHOLD_PERCENT = 2
# Items compared at once (one byte comparison): a near-identical pair costs a few of them.
CHUNK_ITEMS = 256


def threshold(items: int) -> int:
    """The most differing answers that still make two submissions a probing pair."""
    return max(MIN_THRESHOLD, items * THRESHOLD_PERCENT // 100)


def differing_ordinals(a: bytes, b: bytes, most: int) -> list[int] | None:
    """The ordinals whose digests differ (an item one vector lacks differs), or None as soon as
    more than most differ."""
    if a == b:
        return []
    n, w, step = max(len(a), len(b)) // DIGEST_BYTES, DIGEST_BYTES, CHUNK_ITEMS
    found: list[int] = []
    for start in range(0, n, step):
        lo, hi = start * w, (start + step) * w
        if a[lo:hi] == b[lo:hi]:
            continue
        for o in range(start, min(start + step, n)):
            if a[o * w : (o + 1) * w] != b[o * w : (o + 1) * w]:
                found.append(o)
                if len(found) > most:
                    return None
    return found


@dataclass(frozen=True)
class StoredDigest:
    """A submission whose answers are final, as kept for comparisons."""

    submission_id: str
    tenant_id: str
    pool_id: str
    track: int
    created_at: datetime
    vector: bytes


@dataclass(frozen=True)
class DatasetDifference:
    dataset: str
    differing: int
    items: int


@dataclass(frozen=True)
class Finding:
    """Two submissions of a tenant on a pool whose answers (nearly) agree: the evidence."""

    finding_id: str
    tenant_id: str
    pool_id: str
    track: int
    earlier_submission_id: str
    later_submission_id: str
    differing: int
    items: int
    threshold: int
    datasets: tuple[DatasetDifference, ...]
    found_at: datetime


def finding_id(earlier: str, later: str) -> str:
    return f"{earlier}:{later}"


def compare(
    new: StoredDigest, other: StoredDigest, datasets: Sequence[str], now: datetime
) -> Finding | None:
    """The finding of the pair, or None when they differ in more than threshold answers.
    datasets: the dataset of each pool item, by ordinal."""
    items = len(datasets)
    most = threshold(items)
    differing = differing_ordinals(new.vector, other.vector, most)
    if differing is None:
        return None
    earlier, later = sorted((new, other), key=lambda d: (d.created_at, d.submission_id))
    per_dataset = Counter(datasets[o] for o in differing if o < items)
    totals = Counter(datasets)
    return Finding(
        finding_id=finding_id(earlier.submission_id, later.submission_id),
        tenant_id=new.tenant_id,
        pool_id=new.pool_id,
        track=new.track,
        earlier_submission_id=earlier.submission_id,
        later_submission_id=later.submission_id,
        differing=len(differing),
        items=items,
        threshold=most,
        datasets=tuple(
            DatasetDifference(name, per_dataset.get(name, 0), totals[name])
            for name in sorted(totals)
        ),
        found_at=now,
    )


def page_token(finding: Finding) -> str:
    """The token of the page after finding (its found_at in milliseconds and its id)."""
    return f"{round(finding.found_at.timestamp() * 1000)}.{finding.finding_id}"


def read_token(token: str) -> tuple[datetime, str]:
    """The (found_at, id) a page token names; INVALID_ARGUMENT for anything page_token did not
    make."""
    millis, _, after = token.partition(".")
    try:
        at = datetime.fromtimestamp(int(millis) / 1000, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        at = None
    if at is None or not after:
        raise InvalidArgument("page_token is not one this API returned")
    return at, after
