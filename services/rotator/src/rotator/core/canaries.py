"""Canaries (pure): tenant-specific altered copies of real pool items, shown in their place.

A download shows, per dataset, a few question groups of the pool altered for its tenant. A
canary keeps its item's id, ordinal, dataset, answer format, images and group (a permutation
group is altered whole), so it is counted, scored and listed like every other item: nothing but
its content tells it apart, and only for whoever holds the unaltered item. Which groups, and
how they are altered, follows from the leak secret, the tenant and the group: every download of
a pool by one tenant shows the same canaries; other tenants see others.

Two alterations, each with its own key (sealed with the download's variant):

- **order** (choice items, three options or more): the options in an order that puts every
  correct option where a distractor stands in the tenant's plain order (`permutation_for`) and
  away from its bank letter; the key follows the texts. The question is the same, so an honest
  answer is as right as on the original; an answer with the original's letters (the tenant's
  plain order or the bank's) is a right answer to the original, wrong here.
- **detail** (text items whose question states the patient's age): the age moved within its
  half-decade (45-49, 60-64: never across an age limit of five) in the prompt, the judge's
  prompt and, where the key quotes it, the key (reference, key points). An answer naming the
  original age (which this download never shows) is then a right answer to the original. An
  age the key does not quote moves in the prompt only: the canary traces a leak, its key stays.
  A group whose alteration moves its key is preferred.

A leaked canary is traced by its shown question (`fingerprint`), also without its id.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from medbench_runtime.canary_text import move_number, standalone
from rotator.core.options import LETTERS, parse_options, permutation_for, relabel

ORDER = "order"
DETAIL = "detail"
_DOMAIN = b"medbench/canary/v1"
_ORDER_TRIES = 64
# A two-digit age as a prompt writes it ("45岁"); the digits stand alone (not "1.45岁", "145岁").
_AGE = re.compile(r"(?<![0-9.．])([2-8][0-9])岁")
# Prompts that state a birth date keep their ages: a moved age would disagree with it.
_TELLS = ("出生",)
# Nor do items whose image is a report ("结果如报告所示", "见报告单"), which may state the age.
_REPORT = re.compile(r"报告(?:所示|单|如图)|[如见]报告")


def normalise(text: str) -> str:
    """Canonical text for fingerprints: NFKC, no white space."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def fingerprint(text: str) -> str:
    """What identifies a canary's question wherever its text turns up."""
    return hashlib.sha256(normalise(text).encode()).hexdigest()


@dataclass(frozen=True)
class CanarySource:
    """One pool item as a canary is made from it: its prompt and its sealed key."""

    item_id: str
    ordinal: int
    dataset: str
    group_id: str
    metric: str
    question: str
    messages: tuple[tuple[str, str], ...] = ()
    reference: tuple[str, ...] = ()
    key_points: tuple[str, ...] = ()
    prompt: str = ""
    """What the judge reads as the question ("" for items the judge does not score)."""
    images: int = 0
    """Images the item shows."""


@dataclass(frozen=True)
class Canary:
    """One item of a download shown altered for its tenant (sealed with the download's variant:
    what it shows follows from its pool item and this record)."""

    item_id: str
    ordinal: int
    dataset: str
    kind: str
    """ORDER or DETAIL."""
    fingerprint: str
    """Of its question as the download shows it."""
    chance: float
    """Probability that an unrelated download shows this very question (an upper bound)."""
    originals: tuple[str, ...]
    """What a right answer to the original reads as: option letters as the scorer parses them
    ("A,C") for ORDER, the original age for DETAIL."""
    order: tuple[int, ...] = ()
    """ORDER: the options' order as shown (order[i] = the bank's option at letter i); its key
    is the pool key's through this order, like every choice item's."""
    age: str = ""
    """DETAIL: the age the item states ..."""
    moved: str = ""
    """... and the age the download shows instead, in its prompt (and the judge's)."""
    moves_key: bool = False
    """DETAIL: the key quotes the age, and moves with it (else the canary only traces)."""

    def shown(
        self, question: str, messages: tuple[tuple[str, str], ...] = ()
    ) -> tuple[str, tuple[tuple[str, str], ...]]:
        """The pool item's question and messages as this canary shows them."""
        if self.kind == ORDER:
            block = parse_options(question)
            if block is None or len(block.texts) != len(self.order):
                return question, messages
            return relabel(block, self.order), messages
        return self.alter_prompt(question), tuple((r, self.alter_prompt(c)) for r, c in messages)

    def alter_prompt(self, text: str) -> str:
        """A DETAIL canary's prompt text with its age moved; others' unchanged."""
        return move_number(text, self.age, self.moved) if self.kind == DETAIL else text

    def alter_key(self, text: str) -> str:
        """A text of the key as this canary's key reads it (moved only when the key moves)."""
        return self.alter_prompt(text) if self.moves_key else text


def _digest(secret: bytes, *parts: str) -> bytes:
    message = b"".join(len(p.encode()).to_bytes(4, "big") + p.encode() for p in parts)
    return hmac.new(secret, _DOMAIN + message, hashlib.sha256).digest()


def rank(secret: bytes, tenant_id: str, group_id: str) -> bytes:
    """A group's place in the tenant's order of canary candidates (lowest first)."""
    return _digest(secret, "rank", tenant_id, group_id)


def may_alter(metric: str, reference: Sequence[str]) -> bool:
    """Whether an item may be altered, judged from its key alone (the prompt decides later): a
    choice item needs its key letters."""
    return bool(reference) or not metric.startswith("choice")


def choose(
    secret: bytes,
    tenant_id: str,
    groups: Mapping[str, Mapping[str, Sequence[CanarySource]]],
    per_dataset: int,
) -> list[Canary]:
    """The download's canaries: per dataset (dataset -> group_id -> members in pool order), the
    first per_dataset groups in the tenant's rank order whose alteration moves their key, then
    (when too few do) the first that can be altered to trace a leak only; altered whole."""
    out: list[Canary] = []
    for dataset in sorted(groups):
        candidates = groups[dataset]
        ranked = sorted(candidates, key=lambda g: rank(secret, tenant_id, g))
        made: dict[str, list[Canary]] = {}
        for keyed_only in (True, False):
            for group_id in ranked:
                if len(made) >= per_dataset:
                    break
                if group_id not in made:
                    altered = alter_group(secret, tenant_id, candidates[group_id], keyed_only)
                    if altered:
                        made[group_id] = altered
        out.extend(c for group_id in ranked if group_id in made for c in made[group_id])
    return out


def alter_group(
    secret: bytes, tenant_id: str, members: Sequence[CanarySource], keyed_only: bool = False
) -> list[Canary] | None:
    """Every member of a question group altered for the tenant, or None when one cannot be
    (keyed_only: nor when the alteration would leave the key as it is)."""
    if not members:
        return None
    if all(m.metric.startswith("choice") for m in members):
        return _reordered(secret, tenant_id, members)
    if not any(m.metric.startswith("choice") for m in members):
        return _detailed(secret, tenant_id, members, keyed_only)
    return None


# -- order canaries ---------------------------------------------------------------------------


def _letters(positions: Sequence[int] | set[int]) -> str:
    """Option positions as the choice scorer prints parsed letters ("A,C")."""
    return ",".join(sorted(LETTERS[p] for p in positions))


def _reordered(
    secret: bytes, tenant_id: str, members: Sequence[CanarySource]
) -> list[Canary] | None:
    blocks = [parse_options(m.question) for m in members]
    if any(b is None for b in blocks):
        return None
    # A member shown in a sibling's bank order would be that sibling's bank text (a leaked
    # bank file must never read as a canary), or another member's canary text.
    taken = {tuple(normalise(t) for t in b.texts) for b in blocks if b is not None}
    out = []
    for member, block in zip(members, blocks, strict=True):
        assert block is not None
        made = reorder(secret, tenant_id, member, block.texts, taken)
        if made is None:
            return None
        order, originals = made
        taken.add(tuple(normalise(block.texts[i]) for i in order))
        out.append(
            Canary(
                item_id=member.item_id,
                ordinal=member.ordinal,
                dataset=member.dataset,
                kind=ORDER,
                fingerprint=fingerprint(relabel(block, order)),
                chance=1.0 / max(math.factorial(len(order)) - 1, 1),
                originals=originals,
                order=order,
            )
        )
    return out


def reorder(
    secret: bytes,
    tenant_id: str,
    member: CanarySource,
    texts: Sequence[str],
    taken: set[tuple[str, ...]] | frozenset[tuple[str, ...]] = frozenset(),
) -> tuple[tuple[int, ...], tuple[str, ...]] | None:
    """A choice item's canary order and the letters of a right answer to the original (the
    tenant's plain order's, the bank's), or None when it has too few options to move its key.

    The correct options change places with distractors: never at their letters in the plain
    order nor at their bank letters (for a multiple-choice key, no correct option at a correct
    letter of the plain order when the options leave room); the shown sequence of option texts
    is none of `taken` (normalised)."""
    n = len(texts)
    try:
        correct = {LETTERS.index(r) for r in member.reference}
    except ValueError:
        return None
    if n < 3 or not correct or max(correct) >= n or len(correct) >= n:
        return None
    plain = permutation_for(secret, tenant_id, member.item_id, n)
    plain_key = {p for p, original in enumerate(plain) if original in correct}
    disjoint = 2 * len(correct) <= n
    for k in range(_ORDER_TRIES):
        order = permutation_for(secret, f"\x00canary\x00{k}\x00{tenant_id}", member.item_id, n)
        key = {p for p, original in enumerate(order) if original in correct}
        if key in (plain_key, correct) or (disjoint and key & plain_key):
            continue
        if tuple(normalise(texts[i]) for i in order) in taken:
            continue
        originals = tuple(dict.fromkeys((_letters(plain_key), _letters(correct))))
        return order, originals
    return None


# -- detail canaries --------------------------------------------------------------------------


def _texts(member: CanarySource) -> list[str]:
    return [member.question, *(content for _, content in member.messages)]


def _key_texts(member: CanarySource) -> list[str]:
    return [*member.reference, *member.key_points]


def _examples(question: str) -> tuple[str, str]:
    """(worked examples, the rest) of a question: a paragraph (after a blank line or before a
    "#" header) naming an example ("## 任务示例", "格式示例") is one. An example is the same in
    every item of its dataset: moved there, an age would tell its canary apart."""
    paragraphs = _PARAGRAPH.split(question)
    example = [p for p in paragraphs if "示例" in p]
    return "\n".join(example), "\n".join(p for p in paragraphs if "示例" not in p)


_PARAGRAPH = re.compile(r"\n[ \t\u3000]*\n|\n(?=#)")


def ages(member: CanarySource) -> dict[str, bool]:
    """Ages the item's prompt states that may be moved, each with whether its key quotes it:
    used in the prompt only as that age and never in a worked example, and shown in the
    question itself (so that a leaked question line carries it)."""
    prompt = _texts(member)
    if any(tell in text for text in prompt for tell in _TELLS):
        return {}
    if member.images and any(_REPORT.search(text) for text in prompt):
        return {}  # the report in the image may state the age
    example, own = _examples(member.question)
    found = {}
    for age in sorted(set(_AGE.findall(own))):
        uses = sum(len(standalone(age).findall(text)) for text in prompt)
        as_age = sum(len(re.findall(rf"(?<![0-9.．]){age}岁", text)) for text in prompt)
        if uses == as_age and not standalone(age).search(example):
            found[age] = any(standalone(age).search(text) for text in _key_texts(member))
    return found


def _detailed(
    secret: bytes, tenant_id: str, members: Sequence[CanarySource], keyed_only: bool
) -> list[Canary] | None:
    group_id = members[0].group_id
    found = [ages(m) for m in members]
    # An age every member states, quoted by every member's key or by none.
    common = {
        age: quoted
        for age, quoted in found[0].items()
        if all(age in f and f[age] == quoted for f in found[1:]) and (quoted or not keyed_only)
    }
    if not common:
        return None
    # One age of the group moves (one its key quotes, if any), within its half-decade (an age
    # limit of five, as 65, is never crossed), to an age no member uses anywhere.
    age = min(common, key=lambda a: (not common[a], _digest(secret, "age", tenant_id, group_id, a)))
    used = [t for m in members for t in (*_texts(m), *_key_texts(m), m.prompt)]
    low = int(age) // 5 * 5
    choices = [
        str(v)
        for v in range(low, low + 5)
        if str(v) != age and not any(standalone(str(v)).search(t) for t in used)
    ]
    if not choices:
        return None
    moved = min(choices, key=lambda v: _digest(secret, "moved", tenant_id, group_id, age, v))
    return [_moved(m, age, moved, common[age], 1.0 / len(choices)) for m in members]


def _moved(member: CanarySource, age: str, moved: str, moves_key: bool, chance: float) -> Canary:
    return Canary(
        item_id=member.item_id,
        ordinal=member.ordinal,
        dataset=member.dataset,
        kind=DETAIL,
        fingerprint=fingerprint(move_number(member.question, age, moved)),
        chance=chance,
        # An age the key does not quote is no one's right answer: nothing to signal.
        originals=(age,) if moves_key else (),
        age=age,
        moved=moved,
        moves_key=moves_key,
    )
