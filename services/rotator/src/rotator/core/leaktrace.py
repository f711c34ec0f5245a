"""Leak tracing (pure): per-download variants and matching a leaked file.

Each download of a pool differs traceably: multiple-choice options come in an order derived
from a secret and the tenant (options.permutation_for), and a few items are canaries, altered
for the tenant in place (core/canaries.py). A leaked file is traced by comparing its option
orders with every download's, and by looking up its canaries' questions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from rotator.core.canaries import Canary, fingerprint, normalise
from rotator.core.options import parse_options, permutation_for

__all__ = [
    "CanaryHit",
    "LeakEvidence",
    "LeakedLine",
    "LeakSignal",
    "LegacyCanary",
    "Suspect",
    "Variant",
    "chance",
    "fingerprint",
    "make_variant",
    "normalise",
    "observed_order",
    "observed_orders",
]


def observed_order(canonical: Sequence[str], leaked_question: str) -> tuple[int, ...] | None:
    """Which canonical option stands at each position of a leaked question (None if the
    leaked options are not a reordering of the canonical ones)."""
    block = parse_options(leaked_question)
    if block is None or len(block.texts) != len(canonical):
        return None
    position = {normalise(text): i for i, text in enumerate(canonical)}
    try:
        order = tuple(position[normalise(text)] for text in block.texts)
    except KeyError:
        return None
    return order if len(set(order)) == len(order) else None


def chance(option_counts: Sequence[int]) -> float:
    """Probability that a download with independent random orders (never the identity)
    matches every listed item: the product of 1 / (n! - 1)."""
    p = 1.0
    for n in option_counts:
        p /= max(math.factorial(n) - 1, 1)
    return p


@dataclass(frozen=True)
class LegacyCanary:
    """A fictitious extra item of a download made before canaries were altered pool items
    (stored with its variant; served after the pool item it follows, never scored)."""

    item_id: str
    dataset: str
    question: str
    fingerprint: str
    ordinal: int
    after: int
    """The ordinal of the pool item it follows."""


@dataclass(frozen=True)
class Variant:
    """What makes one download traceable: its option orders and its canaries. Stored sealed
    before anyone can download or score."""

    submission_id: str
    tenant_id: str
    pool_id: str
    orders: tuple[tuple[str, tuple[int, ...]], ...]
    """(item_id, order) of every choice item with two options or more, in pool order (an order
    canary's order is its canary order)."""
    canaries: tuple[Canary, ...] = ()
    """Pool items this download shows altered, in pool order."""
    legacy: tuple[LegacyCanary, ...] = ()
    """Extra items of a download made before canaries were pool items (never made now)."""


def make_variant(
    secret: bytes,
    submission_id: str,
    tenant_id: str,
    pool_id: str,
    choice_items: Iterable[tuple[str, int]],
    canaries: Sequence[Canary] = (),
) -> Variant:
    """The variant of one download from the (item_id, option count) of the pool's items in pool
    order and its canaries: deterministic, so a retry makes the same."""
    canary_orders = {c.item_id: c.order for c in canaries if c.order}
    orders = tuple(
        (item_id, canary_orders.get(item_id) or permutation_for(secret, tenant_id, item_id, n))
        for item_id, n in choice_items
        if n >= 2
    )
    return Variant(
        submission_id,
        tenant_id,
        pool_id,
        orders,
        tuple(sorted(canaries, key=lambda c: c.ordinal)),
    )


@dataclass(frozen=True)
class LeakedLine:
    """One line of a leaked file: the item it claims to be and the question it shows."""

    item_id: str
    question: str


@dataclass(frozen=True)
class CanaryHit:
    """A leaked line that is a canary's question, and the download that showed it."""

    tenant_id: str
    submission_id: str
    pool_id: str
    item_id: str = ""
    chance: float = 0.0
    """Probability that an unrelated download shows the same question (0 for a canary of an
    older download: a fictitious item that existed in that download only)."""
    fingerprint: str = ""
    """Of the canary's question (canaries.fingerprint)."""


@dataclass(frozen=True)
class Suspect:
    """A download a leaked file may come from, with the evidence."""

    tenant_id: str
    submission_id: str
    pool_id: str
    canary_hits: int = 0
    """This download's canaries whose question is in the file."""
    checked_items: int = 0
    """Leaked choice items this download has an option order for."""
    matched_items: int = 0
    """Of those, the ones in this download's order."""
    chance: float = 1.0
    """Probability that an unrelated download matches as well: the product of its canaries'
    and its other matched items' chances (0 with a canary of an older download)."""


def observed_orders(
    lines: Iterable[LeakedLine], canonical_questions: Mapping[str, str]
) -> dict[str, tuple[int, ...]]:
    """item_id -> the option order a leaked line shows, for lines whose item is a choice item
    of the bank (canonical_questions: item_id -> the bank's question)."""
    observed: dict[str, tuple[int, ...]] = {}
    for line in lines:
        question = canonical_questions.get(line.item_id)
        canonical = parse_options(question) if question is not None else None
        if canonical is not None:
            order = observed_order(canonical.texts, line.question)
            if order is not None:
                observed[line.item_id] = order
    return observed


class LeakEvidence:
    """Collects the evidence against each download: canary hits, then the downloads' option
    orders compared with the observed ones (variants are offered one at a time). A canary
    whose order also matched counts once."""

    def __init__(self, observed: Mapping[str, tuple[int, ...]]) -> None:
        self._observed = observed
        self._suspects: dict[str, Suspect] = {}
        self._hits: dict[str, dict[str, float]] = {}
        """submission -> canary item found -> its chance."""
        self._matched: dict[str, dict[str, int]] = {}
        """submission -> matched item -> its option count."""

    def add_canary_hit(self, hit: CanaryHit) -> None:
        hits = self._hits.setdefault(hit.submission_id, {})
        hits.setdefault(hit.item_id or f"#{len(hits)}", hit.chance)
        self._update(hit.submission_id, hit.tenant_id, hit.pool_id)

    def add_variant(self, variant: Variant) -> None:
        orders = dict(variant.orders)
        checked = [i for i in self._observed if i in orders]
        if not checked:
            return
        matched = [i for i in checked if orders[i] == self._observed[i]]
        self._matched[variant.submission_id] = {i: len(self._observed[i]) for i in matched}
        self._update(
            variant.submission_id,
            variant.tenant_id,
            variant.pool_id,
            checked=len(checked),
            matched=len(matched),
        )

    def _update(
        self, submission_id: str, tenant_id: str, pool_id: str, checked: int = -1, matched: int = -1
    ) -> None:
        found = self._suspects.get(submission_id) or Suspect(tenant_id, submission_id, pool_id)
        hits = self._hits.get(submission_id, {})
        orders = self._matched.get(submission_id, {})
        p = math.prod(hits.values()) * chance([n for i, n in orders.items() if i not in hits])
        found = replace(found, canary_hits=len(hits), chance=p)
        if checked >= 0:
            found = replace(found, checked_items=checked, matched_items=matched)
        self._suspects[submission_id] = found

    def ranked(self) -> list[Suspect]:
        """Downloads with a canary hit or a matching order: most canaries, then most matched
        items, then the least chance first."""
        return sorted(
            (s for s in self._suspects.values() if s.canary_hits or s.matched_items),
            key=lambda s: (-s.canary_hits, -s.matched_items, s.chance, s.submission_id),
        )


@dataclass(frozen=True)
class LeakSignal:
    """A canary answered with its original item's right answer (recorded by the metric scorer;
    maintainers only)."""

    submission_id: str
    tenant_id: str
    pool_id: str
    item_id: str
    dataset: str
    kind: str
    matched: str
    """What of the original's right answer the answer gave ("letters A,C", "value 45")."""
    recorded_at: datetime
