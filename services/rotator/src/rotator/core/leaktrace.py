"""Leak tracing (pure): per-download variants and matching a leaked file.

Each download of a pool differs traceably: multiple-choice options come in an order derived
from a secret and the tenant (options.permutation_for), and a few items are canaries, altered
for the tenant in place (core/canaries.py: options reordered, an age moved, an enumeration
reordered: any track and answer format). A leaked file is traced by comparing its option
orders with every download's, and by looking up its canaries' questions (by fingerprint:
NFKC, no white space; every alteration survives it). A canary hit weighs with its chance
(1/(n!-1), or 1/m for an alteration drawn from m alternatives), never as proof by itself.
A label item's candidate list (three names or more) is shown in an order of its own per tenant
and item too (canaries.plain_lists), compared like an option order: a match by accident has
chance 1/(k!-1) for k names (any download shows one of the k!-1 orders but the bank's).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from rotator.core.canaries import Canary, fingerprint, normalise, observed_list
from rotator.core.options import parse_options, permutation_for

__all__ = [
    "CanaryHit",
    "ImageHit",
    "LeakEvidence",
    "LeakedLine",
    "LeakSignal",
    "LegacyCanary",
    "Suspect",
    "Variant",
    "chance",
    "fingerprint",
    "listed_questions",
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


Lists = tuple[tuple[int, int, tuple[int, ...]], ...]
"""(start, end, order) of enumerations of a question: span in the bank's text, order shown."""


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
    lists: tuple[tuple[str, Lists], ...] = ()
    """(item_id, lists) of every item showing an enumeration in another order than the bank's:
    a label item's candidate lists in the tenant's per-item orders (canaries.plain_lists), a
    canary's reordered ones (its `lists`); each (start, end, order) in the bank's question."""


def make_variant(
    secret: bytes,
    submission_id: str,
    tenant_id: str,
    pool_id: str,
    choice_items: Iterable[tuple[str, int]],
    canaries: Sequence[Canary] = (),
    lists: Iterable[tuple[str, Lists]] = (),
) -> Variant:
    """The variant of one download from the (item_id, option count) of the pool's items in pool
    order, its canaries and the (item_id, plain_lists) of its label items: deterministic, so a
    retry makes the same."""
    canary_orders = {c.item_id: c.order for c in canaries if c.order}
    shown_lists = {item_id: spans for item_id, spans in lists if spans}
    shown_lists |= {
        c.item_id: c.lists for c in sorted(canaries, key=lambda c: c.ordinal) if c.lists
    }
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
        lists=tuple(shown_lists.items()),
    )


@dataclass(frozen=True)
class LeakedLine:
    """One line of a leaked file: the item it claims to be and the question it shows."""

    item_id: str
    question: str
    image: bytes = b""
    """An image posted with the line (traced by its watermark: core/watermark.py)."""
    image_sha256: str = ""
    """The sha256 of an image posted with the line, when its bytes are not at hand."""


@dataclass(frozen=True)
class ImageHit:
    """A posted image that is a tenant's watermarked copy of a bank image of a download's pool
    (counted against that download)."""

    tenant_id: str
    submission_id: str
    pool_id: str
    image_id: str
    """The bank image."""
    chance: float
    """That an image not made from this tenant's copy agrees as well (binomial)."""


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
    """Leaked choice items this download has an option order for, and leaked items whose
    candidate lists (or a canary's enumerations) it shows in an order of its own."""
    matched_items: int = 0
    """Of those, the ones in this download's orders."""
    chance: float = 1.0
    """Probability that an unrelated download matches as well: the product of its canaries'
    and its other matched items' chances (0 with a canary of an older download)."""
    image_hits: int = 0
    """Posted images that are this tenant's watermarked copies of this download's pool's
    images (their chances are in chance)."""


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


def listed_questions(
    lines: Iterable[LeakedLine], canonical_questions: Mapping[str, str]
) -> dict[str, tuple[str, str]]:
    """item_id -> (the bank's question, the leaked one), for lines naming an item of the bank:
    where a download's candidate-list orders are read (`LeakEvidence`)."""
    return {
        line.item_id: (canonical_questions[line.item_id], line.question)
        for line in lines
        if line.item_id in canonical_questions
    }


class LeakEvidence:
    """Collects the evidence against each download: canary hits, then the downloads' option
    orders and candidate-list orders compared with the observed ones (variants are offered one
    at a time). A canary whose order also matched counts once."""

    def __init__(
        self,
        observed: Mapping[str, tuple[int, ...]],
        listed: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        """observed: item_id -> option order of the leaked file's choice items
        (`observed_orders`); listed: item_id -> (bank question, leaked question)
        (`listed_questions`)."""
        self._observed = observed
        self._listed = listed or {}
        self._seen_lists: dict[tuple[str, int, int], tuple[int, ...] | None] = {}
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
        # (A two-option choice item's list canary is compared by its option order only.)
        listed = {i: n for i, n in self._list_matches(variant).items() if i not in orders}
        if not checked and not listed:
            return
        matched = [i for i in checked if orders[i] == self._observed[i]]
        self._matched[variant.submission_id] = {i: len(self._observed[i]) for i in matched} | {
            i: n for i, n in listed.items() if n
        }
        self._update(
            variant.submission_id,
            variant.tenant_id,
            variant.pool_id,
            checked=len(checked) + len(listed),
            matched=len(matched) + sum(1 for n in listed.values() if n),
        )

    def _list_matches(self, variant: Variant) -> dict[str, int]:
        """item_id -> for each leaked item whose lists this download orders: 0 when the file
        shows them otherwise, else the fewest names of its lists (what a match by accident
        is weighed with: 1/(k!-1) at most for the whole item)."""
        out: dict[str, int] = {}
        for item_id, spans in variant.lists:
            found = self._listed.get(item_id)
            if found is None or not spans:
                continue
            seen = []
            for start, end, _ in spans:
                key = (item_id, start, end)
                if key not in self._seen_lists:
                    self._seen_lists[key] = observed_list(found[0], start, end, found[1])
                seen.append(self._seen_lists[key])
            if any(s is None for s in seen):
                continue  # the file does not list them: nothing to compare
            same = all(s == order for s, (_, _, order) in zip(seen, spans, strict=True))
            out[item_id] = min(len(order) for _, _, order in spans) if same else 0
        return out

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

    def ranked_with_images(self, hits: Iterable[ImageHit]) -> list[Suspect]:
        """ranked(), with posted images that are a tenant's watermarked copies counted against
        the downloads they name (each image once per download, its chance in the download's),
        strongest evidence first (_strongest_first)."""
        images: dict[str, dict[str, float]] = {}
        for hit in hits:
            images.setdefault(hit.submission_id, {}).setdefault(hit.image_id, hit.chance)
            if hit.submission_id not in self._suspects:
                self._suspects[hit.submission_id] = Suspect(
                    hit.tenant_id, hit.submission_id, hit.pool_id
                )
        suspects = [
            replace(
                s,
                image_hits=len(images.get(s.submission_id, {})),
                chance=s.chance * math.prod(images.get(s.submission_id, {}).values()),
            )
            for s in self._suspects.values()
        ]
        return sorted(
            (s for s in suspects if s.canary_hits or s.matched_items or s.image_hits),
            key=_strongest_first,
        )

    def ranked(self) -> list[Suspect]:
        """Downloads with a canary hit or a matching order, strongest evidence first."""
        return self.ranked_with_images(())


def _strongest_first(s: Suspect) -> tuple[float, int, int, str]:
    """Ranking of suspects: the least chance of the evidence by luck first (a canary hit whose
    alteration one in 23 downloads shows by chance is weaker than six matching orders at
    23^-6), then the most canary and image hits, then the most matched items."""
    return (s.chance, -(s.canary_hits + s.image_hits), -s.matched_items, s.submission_id)


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
