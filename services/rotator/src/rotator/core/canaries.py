"""Canaries (pure): tenant-specific altered copies of real pool items, shown in their place.

A download shows, per dataset, a few question groups of the pool altered for its tenant. A
canary keeps its item's id, ordinal, dataset, answer format, images and group (a permutation
group is altered whole), so it is counted, scored and listed like every other item: nothing but
its content tells it apart, and only for whoever holds the unaltered item. Which groups, and
how they are altered, follows from the leak secret, the tenant and the group: every download of
a pool by one tenant shows the same canaries; other tenants see others.

Three alterations (sealed with the download's variant), tried in this order of preference:

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
- **list** (any other item of any track and format: labels, free text without an age, choice
  items of two options): the question's own enumerations shown in another order. A label
  item's candidate list is found by its key (a label_accuracy key names the whole label set,
  whatever separates the names; a label set's key names the gold labels only and is never
  used); any other enumeration is a whole clause (after a colon or at a line's start, up to
  the clause's end) of at least two short entries joined by "、", the mark of a list of
  coordinate terms, so their order carries no meaning: no entry with a digit, an ordinal or
  sequence word ("第", "首先", "然后" ...), a conjunction or "等" (which bind to their
  neighbours), no repeated entry, none inside a worked example or a choice item's options (a
  choice item keeps its tenant's plain option order). The key is unchanged (a label's text is
  its key, an enumeration's order is not part of any answer), so it is scored exactly like the
  original.

**Per-item candidate orders.** Every download shows every label item's candidate list of three
names or more in an order drawn per tenant and item from the secret, never the bank's
(`plain_lists`, like a choice item's options), so no order is common to a dataset's items. A
list canary shows such a list in one more order (neither the tenant's plain order for the item
nor the bank's) and an own enumeration (one no other candidate group shows) in any order but
the bank's; an enumeration every download shows as the bank lists it and other groups share (a
two-name candidate list: its one other order would be every tenant's; a shared "、" clause) is
never reordered, so a dataset without anything else has no list canary. A detail canary of a
label item shows its candidates in the plain order too. Whole-clause "、" lists keep the bank's
order outside canaries: their order may matter to an answer scored by text overlap.

Why these, and what was rejected: width variants (full- and half-width punctuation, digits)
vanish in `normalise` (NFKC), so they could not trace a leak that was retyped through NFKC;
separator or punctuation variants, zero-width characters and fixed rewordings would be new
text, the same in every download, so whoever reads this code could strip them, and one item
would read unlike its dataset's others. Reordering what the item itself enumerates adds no text
at all. Swapping the two options of a two-option item is no canary: every tenant's plain order
of two options is already the swap (`permutation_for` never shows the bank's order), so the
bank's order is the only other one, and it is what any copy of the bank shows.

**Detecting a right answer to the original.** An order canary and a detail canary whose key
moves make it detectable (`originals`). A list canary cannot: its meaning and its key are the
original's (a label is named by its text, in whatever order the candidates come), so every
answer right for the original is right for it, and an alteration that changed its right answer
would have to change its case (another image, another dialogue): a new item, not an
alteration. A list canary therefore only traces a leak (`originals` is empty). So does a detail
canary whose key does not quote the age.

**Chance.** A canary's `chance` bounds the probability that an unrelated download shows its
very question: 1 / (n! - 1) for an order canary (any download shows its own order of every
choice item), 1 / m for a detail canary drawn from m ages in the half-decade (other downloads
show the bank's age). A list canary reordering candidate lists only: 1 / L, L the product of
their k! - 1 orders (any download shows one of them, plain or canary, all alike); one that
reorders an own enumeration too: 1 / (m - 1), m the product of every kept list's orders (a
download that is no canary there shows the bank's). An own two-name list has m = 2: such a
canary names whoever showed it, and an unrelated download that altered the same item would
show it too (reported as 1).

**What tells a canary apart, still.** Its content only, and only for whoever holds the
unaltered item: within one download, and across a tenant's downloads (all the same), its
candidate orders are drawn like every item's, and an own enumeration has nothing to compare
with. Two tenants comparing their downloads see every label item differ, canary or not; an own
enumeration, though, differs only in canaries (as an age does). Images are never altered (out
of scope): a
multimodal item is traced by its question text, and one whose question has no age and no
enumeration (a bare "describe this image" item) cannot be a canary, nor can a free-text item
with neither; its pool is traced by its other items (the track's label items, option orders).

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
LIST = "list"
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
    """ORDER, DETAIL or LIST."""
    fingerprint: str
    """Of its question as the download shows it."""
    chance: float
    """Probability that an unrelated download shows this very question (an upper bound)."""
    originals: tuple[str, ...]
    """What a right answer to the original reads as: option letters as the scorer parses them
    ("A,C") for ORDER, the original age for DETAIL; none for LIST (not detectable)."""
    order: tuple[int, ...] = ()
    """ORDER: the options' order as shown (order[i] = the bank's option at letter i); its key
    is the pool key's through this order, like every choice item's. LIST of a choice item: the
    tenant's plain order (`permutation_for`), which it keeps."""
    age: str = ""
    """DETAIL: the age the item states ..."""
    moved: str = ""
    """... and the age the download shows instead, in its prompt (and the judge's)."""
    moves_key: bool = False
    """DETAIL: the key quotes the age, and moves with it (else the canary only traces)."""
    lists: tuple[tuple[int, int, tuple[int, ...]], ...] = ()
    """(start, end, order) of each enumeration shown in another order than the bank's: its span
    in the bank's question and its entries' order as shown (order[i] = the bank's entry at
    place i). LIST: the enumerations it reorders and the candidate lists it shows in the
    tenant's plain order (`plain_lists`); DETAIL: its candidate lists' plain orders."""

    def shown(
        self, question: str, messages: tuple[tuple[str, str], ...] = ()
    ) -> tuple[str, tuple[tuple[str, str], ...]]:
        """The pool item's question and messages as this canary shows them."""
        if self.kind == ORDER:
            block = parse_options(question)
            if block is None or len(block.texts) != len(self.order):
                return question, messages
            return relabel(block, self.order), messages
        if self.kind == LIST:
            return shown_lists(question, self.lists, self.order), messages
        shown = shown_lists(question, self.lists)  # a label item's candidates: the plain order
        return self.alter_prompt(shown), tuple((r, self.alter_prompt(c)) for r, c in messages)

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
    (when too few do) the first that can be altered to trace a leak only; altered whole. An
    enumeration that other groups of the dataset show in the bank's order in every download is
    never reordered (`shared_lists`): in another order in one item, it would tell it apart."""
    out: list[Canary] = []
    for dataset in sorted(groups):
        candidates = groups[dataset]
        ranked = sorted(candidates, key=lambda g: rank(secret, tenant_id, g))
        shared: frozenset[str] = shared_lists(candidates)
        made: dict[str, list[Canary]] = {}
        # Keyed first; then trace-only.
        for keyed_only in (True, False):
            for group_id in ranked:
                if len(made) >= per_dataset:
                    break
                if group_id not in made:
                    altered = alter_group(
                        secret, tenant_id, candidates[group_id], keyed_only, shared
                    )
                    if altered:
                        made[group_id] = altered
        out.extend(c for group_id in ranked if group_id in made for c in made[group_id])
    return out


def alter_group(
    secret: bytes,
    tenant_id: str,
    members: Sequence[CanarySource],
    keyed_only: bool = False,
    shared: frozenset[str] | None = frozenset(),
) -> list[Canary] | None:
    """Every member of a question group altered for the tenant, or None when one cannot be
    (keyed_only: nor when the alteration would leave the key as it is). An order or detail
    alteration is preferred; else (unless keyed_only) a list alteration, reordering none of
    the `shared` enumerations (normalised; None: any may be reordered) but those every download
    shows in its own order per item (a label item's candidate list, `plain_lists`)."""
    if not members:
        return None
    choice = [m.metric.startswith("choice") for m in members]
    made = None
    if all(choice):
        made = _reordered(secret, tenant_id, members)
    elif not any(choice):
        made = _detailed(secret, tenant_id, members, keyed_only)
    if made is None and not keyed_only and (all(choice) or not any(choice)):
        made = _listed(secret, tenant_id, members, shared)
    return made


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
    return [
        _moved(m, age, moved, common[age], 1.0 / len(choices), plain_lists(secret, tenant_id, m))
        for m in members
    ]


def _moved(
    member: CanarySource,
    age: str,
    moved: str,
    moves_key: bool,
    chance: float,
    lists: tuple[tuple[int, int, tuple[int, ...]], ...],
) -> Canary:
    # A label item's candidates stand in the tenant's plain order, as in every download.
    shown = move_number(shown_lists(member.question, lists), age, moved)
    return Canary(
        item_id=member.item_id,
        ordinal=member.ordinal,
        dataset=member.dataset,
        kind=DETAIL,
        fingerprint=fingerprint(shown),
        chance=chance,
        # An age the key does not quote is no one's right answer: nothing to signal.
        originals=(age,) if moves_key else (),
        age=age,
        moved=moved,
        moves_key=moves_key,
        lists=lists,
    )


# -- list canaries ----------------------------------------------------------------------------

# Between the entries of a list: "、" (and, for a label item's named candidates, the other marks
# a question may list them with), with the spaces that follow.
_SEPARATOR = re.compile(r"([、，,/／；;|｜][ \t\u3000]*)")
_ENTRY = r"[^\s、，,。．.；;：:？?！!（）()\[\]【】“”\"'‘’「」『』《》<>＜＞/／|｜0-9０-９]{1,16}"
# A whole clause of "、"-joined entries: after a colon or at a line's start, to the clause's end.
_ENUMERATION = re.compile(
    rf"(?:^|(?<=[：:]))[ \t\u3000]*({_ENTRY}(?:、{_ENTRY})+)(?=[。．；;？?！!，,\n]|$)", re.M
)
# Entries that bind to their neighbours: an ordinal or a step, a conjunction, "等" (etc.).
_SEQUENCE = ("第", "首先", "其次", "然后", "再", "最后", "先", "后", "接着")
_BINDING = frozenset("等和及或与并")
_MAX_ALTERNATIVES = 1 << 64
_MAX_CANDIDATES = 12


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    entries: tuple[str, ...]
    candidates: bool = False
    """A label item's candidate list (named by its key)."""

    def text(self, question: str) -> str:
        return normalise(question[self.start : self.end])

    @property
    def per_item(self) -> bool:
        """Shown in an order of its own per tenant and item in every download (`plain_lists`):
        a candidate list of three names or more (two have one other order only, the same for
        every tenant: such a list is shown as the bank lists it)."""
        return self.candidates and len(self.entries) >= 3


def _split_entries(text: str) -> tuple[list[str], list[str]]:
    """(entries, separators) of an enumeration's text."""
    parts = _SEPARATOR.split(text)
    return parts[0::2], parts[1::2]


def shown_lists(
    question: str, lists: Sequence[tuple[int, int, Sequence[int]]], order: Sequence[int] = ()
) -> str:
    """The question with each listed enumeration's entries in its order (separators stay in
    place), then its options in `order` (a choice item's plain order; () for none)."""
    out, at = [], 0
    for start, end, entry_order in sorted(lists):
        entries, separators = _split_entries(question[start:end])
        if start < at or len(entries) != len(entry_order):
            return question  # not the question the canary was made from: shown as it is
        out.append(question[at:start])
        for i, original in enumerate(entry_order):
            out.append(entries[original])
            if i < len(separators):
                out.append(separators[i])
        at = end
    text = "".join(out) + question[at:]
    if order:
        block = parse_options(text)
        if block is not None and len(block.texts) == len(order):
            text = relabel(block, order)
    return text


def _example_spans(question: str) -> list[tuple[int, int]]:
    """Spans of the question's worked-example paragraphs (see `_examples`)."""
    bounds = [0, *(x for m in _PARAGRAPH.finditer(question) for x in (m.start(), m.end()))]
    bounds.append(len(question))
    spans = [(bounds[i], bounds[i + 1]) for i in range(0, len(bounds) - 1, 2)]
    return [(a, b) for a, b in spans if "示例" in question[a:b]]


def _fit(entries: Sequence[str]) -> bool:
    """Whether a list's entries may change places without changing what it says."""
    folded = [normalise(e) for e in entries]
    return (
        len(folded) >= 2
        and all(folded)
        and len(set(folded)) == len(folded)
        and not any(e.startswith(_SEQUENCE) or _BINDING & set(e) for e in folded)
        and not any(len(e) == 1 and e.isascii() for e in folded)
    )


def names_candidates(metric: str) -> bool:
    """Whether an item's key names its candidates: a label_accuracy item's reference is the
    whole closed label set (its gold label first). Other label keys (label_set_accuracy) name
    the gold labels only, which a reordered list must never single out."""
    return "label_accuracy" in metric.split("+")


def _named(question: str, labels: Sequence[str]) -> list[tuple[int, int]]:
    """Spans of the question listing exactly these labels, each once, and nothing more."""
    alternatives = "|".join(re.escape(x) for x in sorted(labels, key=len, reverse=True))
    named = re.compile(
        rf"(?:{alternatives})(?:{_SEPARATOR.pattern}(?:{alternatives})){{{len(labels) - 1}}}"
    )
    found = []
    for match in named.finditer(question):
        entries, _ = _split_entries(match.group(0))
        before, after = question[: match.start()], question[match.end() :]
        # Part of a longer "、" list: not the candidate list itself.
        if sorted(entries) == sorted(labels) and not (
            before.endswith("、") or after.startswith("、")
        ):
            found.append((match.start(), match.end()))
    return found


def candidate_lists(metric: str, question: str, reference: Sequence[str]) -> list[_Span]:
    """A label item's candidate lists (its key's label set, whatever separates the names) in
    its question, in text order, outside worked examples."""
    labels = list(dict.fromkeys(r for r in reference if r.strip()))
    if not names_candidates(metric) or not 2 <= len(labels) <= _MAX_CANDIDATES:
        return []
    examples = _example_spans(question)
    found: list[_Span] = []
    for start, end in _named(question, labels):
        entries, _ = _split_entries(question[start:end])
        if _fit(entries) and not any(a < end and start < b for a, b in examples):
            found.append(_Span(start, end, tuple(entries), candidates=True))
    return found


def plain_lists(
    secret: bytes, tenant_id: str, item: CanarySource
) -> tuple[tuple[int, int, tuple[int, ...]], ...]:
    """(start, end, order) of each candidate list of a label item (three names or more) as every
    download by the tenant shows it: in an order drawn per tenant and item from the secret,
    never the bank's (like a choice item's options, `permutation_for`), so that no order is
    the same in every item of a dataset and a list canary's order is just another one."""
    out = []
    spans = candidate_lists(item.metric, item.question, item.reference)
    for n, span in enumerate(spans):
        if span.per_item:
            k = len(span.entries)
            order = permutation_for(secret, f"\x00list\x00{n}\x00{tenant_id}", item.item_id, k)
            out.append((span.start, span.end, order))
    return tuple(out)


def enumerations(member: CanarySource) -> list[_Span]:
    """The enumerations of an item's question that a list canary may reorder, in text order:
    a label item's candidate lists (`candidate_lists`), then whole-clause "、" lists; never
    in a worked example nor in a choice item's option list."""
    question = member.question
    limit = len(question)
    if member.metric.startswith("choice"):
        block = parse_options(question)
        limit = len(block.prefix) if block is not None else limit
    examples = _example_spans(question)
    found = candidate_lists(member.metric, question, member.reference)
    for match in _ENUMERATION.finditer(question):
        start, end = match.start(1), match.end(1)
        entries, _ = _split_entries(question[start:end])
        if (
            end <= limit
            and _fit(entries)
            and not any(a < end and start < b for a, b in examples)
            and not any(s.start < end and start < s.end for s in found)
        ):
            found.append(_Span(start, end, tuple(entries)))
    return sorted(found, key=lambda s: s.start)


def shared_lists(candidates: Mapping[str, Sequence[CanarySource]]) -> frozenset[str]:
    """Enumerations (normalised) that two groups or more of a dataset show, in the bank's order
    in every download (not `per_item`): the same in many items, reordered in one they would
    tell it apart."""
    groups_showing: dict[str, set[str]] = {}
    for group_id, members in candidates.items():
        for member in members:
            for span in enumerations(member):
                if not span.per_item:
                    groups_showing.setdefault(span.text(member.question), set()).add(group_id)
    return frozenset(text for text, groups in groups_showing.items() if len(groups) > 1)


def _lehmer(index: int, n: int) -> tuple[int, ...]:
    """The index-th order of n entries (0: the bank's), by its Lehmer code."""
    pool, order = list(range(n)), []
    for k in range(n, 0, -1):
        index, digit = divmod(index, k)
        order.append(pool.pop(digit))
    return tuple(order)


def _lehmer_index(order: Sequence[int]) -> int:
    """The index of an order (`_lehmer`'s inverse)."""
    pool, index, scale = list(range(len(order))), 0, 1
    for k, original in zip(range(len(order), 0, -1), order, strict=True):
        digit = pool.index(original)
        pool.pop(digit)
        index += digit * scale
        scale *= k
    return index


def _listed(
    secret: bytes,
    tenant_id: str,
    members: Sequence[CanarySource],
    shared: frozenset[str] | None,
) -> list[Canary] | None:
    out = []
    for member in members:
        plain = {start: order for start, _, order in plain_lists(secret, tenant_id, member)}
        spans = [
            s
            for s in enumerations(member)
            if s.start in plain or shared is None or s.text(member.question) not in shared
        ]
        # A candidate list shown per item is always kept (its order is at least the plain one):
        # one of its k! - 1 orders but the bank's; another enumeration one of its k!.
        spans.sort(key=lambda s: (s.start not in plain, s.start))
        kept: list[_Span] = []
        radices: list[int] = []
        for span in spans:
            radix = math.factorial(len(span.entries)) - (span.start in plain)
            if span.start not in plain and math.prod(radices) * radix > _MAX_ALTERNATIVES:
                break
            kept.append(span)
            radices.append(radix)
        alternatives = math.prod(radices)
        # The combination every download by this tenant shows (the plain one) is excluded.
        digits = [_lehmer_index(plain[s.start]) - 1 if s.start in plain else 0 for s in kept]
        shown_index = sum(d * math.prod(radices[:i]) for i, d in enumerate(digits))
        if alternatives < 2:
            return None
        # One of the others, keyed by the tenant, the group and what is listed (a permutation
        # group's siblings, which share their stem, list alike).
        drawn = _digest(
            secret,
            "list",
            tenant_id,
            member.group_id,
            *(s.text(member.question) for s in kept),
        )
        index = int.from_bytes(drawn) % (alternatives - 1)
        index += index >= shown_index
        lists = []
        own_moved = False
        for span, radix in zip(kept, radices, strict=True):
            index, digit = divmod(index, radix)
            if span.start in plain:
                digit += 1  # never the bank's order
            else:
                own_moved = own_moved or digit > 0
            lists.append((span.start, span.end, _lehmer(digit, len(span.entries))))
        # Chance that an unrelated download shows this very question: its candidate lists are
        # in an order of their own (any but the bank's, alike for plain and canary orders); its
        # other enumerations in the bank's, unless it drew this item as a canary too.
        per_item = math.prod(r for s, r in zip(kept, radices, strict=True) if s.start in plain)
        chance = 1.0 / (alternatives - 1) if own_moved else 1.0 / per_item
        order: tuple[int, ...] = ()
        if member.metric.startswith("choice"):
            block = parse_options(member.question)
            if block is not None:
                order = permutation_for(secret, tenant_id, member.item_id, len(block.texts))
        shown = shown_lists(member.question, lists, order)
        out.append(
            Canary(
                item_id=member.item_id,
                ordinal=member.ordinal,
                dataset=member.dataset,
                kind=LIST,
                fingerprint=fingerprint(shown),
                chance=chance,
                originals=(),
                order=order,
                lists=tuple(sorted(lists)),
            )
        )
    return out


def observed_list(
    question: str, start: int, end: int, leaked_question: str
) -> tuple[int, ...] | None:
    """The order in which a leaked question shows the enumeration at [start, end) of the bank's
    question (its entries as they stand there, NFKC, no white space; the n-th listing of the
    same entries in the bank's question is the n-th in the leaked one), or None when it does
    not list them."""
    entries = [normalise(e) for e in _split_entries(question[start:end])[0]]
    if not _fit(entries):
        return None
    place = {e: i for i, e in enumerate(entries)}
    text = normalise(leaked_question)
    before = len(_named(normalise(question[:start]), entries))
    found = _named(text, entries)
    if before >= len(found):
        return None
    listed, _ = _split_entries(text[slice(*found[before])])
    return tuple(place[e] for e in listed)
