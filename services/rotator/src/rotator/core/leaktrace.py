"""Leak tracing (pure): per-download variants, canary items, and matching a leaked file.

Each download of a pool differs traceably: multiple-choice options come in an order derived
from a secret and the tenant (options.permutation_for), and a few canary items, fictitious
questions whose numbers are derived the same way, are mixed in. A leaked file is traced by
comparing its option orders with every download's, and by looking up its canaries.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from rotator.core.options import parse_options, permutation_for

CANARY_STEMS = (
    "患者，{sex}，{age}岁，发热{days}天，体温最高{temp}℃，血白细胞{wbc}×10^9/L。"
    "下列处理中最恰当的是",
    "患者，{sex}，{age}岁，活动后胸闷{days}天，血压{sbp}/{dbp}mmHg，心率{hr}次/分。首选的检查是",
    "患者，{sex}，{age}岁，口干多饮{days}天，空腹血糖{glu}mmol/L，糖化血红蛋白{a1c}%。"
    "下一步最合适的是",
)
CANARY_OPTIONS = (
    ("完善相关检查后对症治疗", "立即手术治疗", "仅随访观察，不做处理", "转上级医院进一步诊治"),
    ("心电图", "头颅CT", "腹部超声", "肺功能检查"),
    ("生活方式干预并启动降糖治疗", "立即静脉输注胰岛素", "不予处理", "口服抗生素"),
)


@dataclass(frozen=True)
class Canary:
    """A fictitious item unique to one download."""

    item_id: str
    dataset: str
    question: str
    fingerprint: str


def _numbers(secret: bytes, *parts: str) -> bytes:
    message = b"\x00".join(p.encode() for p in parts)
    return hmac.new(secret, message, hashlib.sha256).digest()


def normalise(text: str) -> str:
    """Canonical text for fingerprints: NFKC, no white space."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def fingerprint(text: str) -> str:
    """What identifies a canary wherever its text turns up."""
    return hashlib.sha256(normalise(text).encode()).hexdigest()


def canaries(
    secret: bytes, tenant_id: str, submission_id: str, datasets: Sequence[str], count: int
) -> list[Canary]:
    """count canaries for one download, in the given choice datasets, in the house format."""
    out = []
    for k in range(count if datasets else 0):
        d = _numbers(secret, "canary", tenant_id, submission_id, str(k))
        template = d[0] % len(CANARY_STEMS)
        stem = CANARY_STEMS[template].format(
            sex="男" if d[1] & 1 else "女",
            age=18 + d[2] % 70,
            days=1 + d[3] % 28,
            temp=f"{38 + (d[4] % 25) / 10:.1f}",
            wbc=f"{4 + (d[5] % 160) / 10:.1f}",
            sbp=100 + d[6] % 80,
            dbp=60 + d[7] % 40,
            hr=50 + d[8] % 70,
            glu=f"{7 + (d[9] % 120) / 10:.1f}",
            a1c=f"{6 + (d[10] % 60) / 10:.1f}",
        )
        options = CANARY_OPTIONS[template]
        question = (
            "## 任务：请回答单项选择题，从问题选项中选出一个正确回答的序号，填写到<>中。\n\n"
            f"## 题目：{stem}\n"
            + "\n".join(f"{'ABCD'[i]}. {text}" for i, text in enumerate(options))
        )
        dataset = datasets[d[11] % len(datasets)]
        item_id = f"{dataset}-{100000 + int.from_bytes(d[12:16], 'big') % 900000}"
        out.append(Canary(item_id, dataset, question, fingerprint(question)))
    return out


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
class PlacedCanary:
    """A canary of one download and where it stands in the download."""

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
    """(item_id, order) of every choice item with two options or more, in pool order."""
    canaries: tuple[PlacedCanary, ...]


def make_variant(
    secret: bytes,
    submission_id: str,
    tenant_id: str,
    pool_id: str,
    item_count: int,
    choice_items: Iterable[tuple[str, str, int]],
    canaries_per_download: int,
) -> Variant:
    """The variant of one download of a pool of item_count items, from its (item_id, dataset,
    option count) in pool order: deterministic, so a retry makes the same."""
    orders: list[tuple[str, tuple[int, ...]]] = []
    choice_datasets: set[str] = set()
    for item_id, dataset, n_options in choice_items:
        if n_options >= 2:
            orders.append((item_id, permutation_for(secret, tenant_id, item_id, n_options)))
            choice_datasets.add(dataset)
    made = canaries(
        secret, tenant_id, submission_id, sorted(choice_datasets), canaries_per_download
    )
    return Variant(
        submission_id,
        tenant_id,
        pool_id,
        tuple(orders),
        tuple(
            PlacedCanary(
                c.item_id,
                c.dataset,
                c.question,
                c.fingerprint,
                ordinal=item_count + k,
                after=int(c.fingerprint[:8], 16) % max(item_count, 1),
            )
            for k, c in enumerate(made)
        ),
    )


@dataclass(frozen=True)
class LeakedLine:
    """One line of a leaked file: the item it claims to be and the question it shows."""

    item_id: str
    question: str


@dataclass(frozen=True)
class CanaryHit:
    """A leaked line that is a canary, and the download it was made for."""

    tenant_id: str
    submission_id: str
    pool_id: str


@dataclass(frozen=True)
class Suspect:
    """A download a leaked file may come from, with the evidence."""

    tenant_id: str
    submission_id: str
    pool_id: str
    canary_hits: int = 0
    checked_items: int = 0
    """Leaked choice items this download has an option order for."""
    matched_items: int = 0
    """Of those, the ones in this download's order."""
    chance: float = 1.0
    """Probability that an unrelated download matches as well (0 with a canary hit: a canary
    exists in one download only)."""


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
    orders compared with the observed ones (variants are offered one at a time)."""

    def __init__(self, observed: Mapping[str, tuple[int, ...]]) -> None:
        self._observed = observed
        self._suspects: dict[str, Suspect] = {}

    def add_canary_hit(self, hit: CanaryHit) -> None:
        found = self._suspects.get(hit.submission_id) or Suspect(
            hit.tenant_id, hit.submission_id, hit.pool_id
        )
        self._suspects[hit.submission_id] = replace(
            found, canary_hits=found.canary_hits + 1, chance=0.0
        )

    def add_variant(self, variant: Variant) -> None:
        orders = dict(variant.orders)
        checked = [i for i in self._observed if i in orders]
        if not checked:
            return
        matched = [i for i in checked if orders[i] == self._observed[i]]
        found = self._suspects.get(variant.submission_id) or Suspect(
            variant.tenant_id, variant.submission_id, variant.pool_id
        )
        if not found.canary_hits:
            found = replace(
                found,
                chance=chance([len(self._observed[i]) for i in matched]) if matched else 1.0,
            )
        self._suspects[variant.submission_id] = replace(
            found, checked_items=len(checked), matched_items=len(matched)
        )

    def ranked(self) -> list[Suspect]:
        """Downloads with a canary hit or a matching order: most canaries, then most matched
        items, then the least chance first."""
        return sorted(
            (s for s in self._suspects.values() if s.canary_hits or s.matched_items),
            key=lambda s: (-s.canary_hits, -s.matched_items, s.chance, s.submission_id),
        )
