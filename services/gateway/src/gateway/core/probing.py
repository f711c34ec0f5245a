"""Probing rules (pure): when two submissions of one tenant on one pool differ in so few answers
that comparing their scores would tell the keys of the items they differ in (issue 22).

A submission whose answers are final is kept as a digest vector: one short hash per pool item,
in pool order (canaries left out: they are the download's own), of the answer normalised for
what never changes a parsed answer (case, width, spacing, punctuation: "<A>", "a", "(A)." are
one answer); an unanswered item has the digest of an empty answer. Comparing a submission with
N earlier ones is then O(N * items), without reading their answers again. A pair differing in
at most max(5, 2% of the items) answers, identical answers included, is a finding."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from medbench_runtime.errors import InvalidArgument

DIGEST_BYTES = 4
MIN_THRESHOLD = 5
THRESHOLD_PERCENT = 2
# Items compared at once (one byte comparison): a near-identical pair costs a few of them.
CHUNK_ITEMS = 256
_NOT_LETTERS_OR_DIGITS = re.compile(r"[\W_]+")


def normalised(answer: str) -> str:
    """The answer without what no parser reads: NFKC (full-width forms folded), case folded,
    letters and digits only (CJK characters are letters)."""
    if not answer.isascii():
        answer = unicodedata.normalize("NFKC", answer)
    return _NOT_LETTERS_OR_DIGITS.sub("", answer.casefold())


def answer_digest(answer: str) -> bytes:
    return hashlib.blake2b(normalised(answer).encode(), digest_size=DIGEST_BYTES).digest()


EMPTY = answer_digest("")


def digest_vector(answers: Iterable[tuple[int, str]], items: int) -> bytes:
    """One digest per ordinal 0..items-1 of (ordinal, answer) pairs; ordinals outside (the
    download's canaries) are left out, unanswered ones hold EMPTY."""
    out = bytearray(EMPTY * items)
    for ordinal, answer in answers:
        if 0 <= ordinal < items:
            out[ordinal * DIGEST_BYTES : (ordinal + 1) * DIGEST_BYTES] = answer_digest(answer)
    return bytes(out)


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
