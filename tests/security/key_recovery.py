"""Key recovery: adversaries that try to read a hidden pool's answer keys back through the public
API, and the measure of what they recovered (issue 22, item 4).

Each adversary is one partner tenant with one partner key. It plays upload-mode evaluations on
the current pool of the LLM track's upload board exactly as a partner can: CreateSubmission,
DownloadPrompts, UploadAnswers, GetSubmission, GetReport and GetItemResults on the gateway, and
nothing else. It plays within the tenant's quotas as the platform enforces them: the first
refused CreateSubmission (RESOURCE_EXHAUSTED: a daily, concurrent or per-pool limit) ends its
budget, and so does the budget the caller gives it (rounds).

What an adversary sees of an item is its download: item id, dataset, answer format and the
question with its options in the order shown to this tenant. It knows nothing else about the
items: it groups the permutations of one question by their text (stem and option texts), never
by id, and it keeps what it learns as option *texts*, so a key it learns holds in every option
order. Only multiple-choice items (choice_single, choice_multi) are attacked and measured.

The adversaries (all of them answer every shown item; an item they do not probe gets an answer
that names no option, which the scorer marks wrong):
- ConstantLetters: round r answers every single-choice item with letter r (A, B, C ...) and
  every multiple-choice item with the r-th letter set (AB, AC, ...); reads per-item results when
  GetItemResults answers (a 1 is the key, a 0 rules the letter out) and, per dataset, how many
  items each constant got right (the dataset's item count and item mean), which it uses as a
  prior for the items it could not resolve.
- GroupDifferencing: one question group per dataset per round: answers the group's items with
  one candidate key (the same option text in every permutation) and the rest with no option;
  the dataset's right-item count (item_mean x items) says whether the candidate is the key.
- DimensionDifferencing: the same, one group per dimension per round, read from the dimension
  score alone.
- Combined: whatever the API exposes. While GetItemResults answers: each permutation of a
  question gets a different candidate, so one round tries as many candidates as the question
  has permutations. Else, per dataset and round, several groups at once with weights 1, 2, 4
  (a candidate answered in that many permutations) that the dataset's right-item count decodes
  uniquely, a half-split of the candidates per group (binary search), and one more whole group
  read from the all-permutations score; answers that name no option change wording every round
  (so successive submissions differ in every answer). It never probes items GetItemResults
  leaves out (unscored: canaries, while they are told apart). GetSubmission's counters are read
  too (Observation.submission) but carry nothing about keys.
Group and dimension differencing never call GetItemResults (the attack that is left when it is
withheld); `make_adversaries(use_item_results=False)` makes the other two do the same.

The truth is never read from the platform: `Truth` takes the bank rows the test imported and
gives each shown item's key in the option order shown (medbench_devstack.answers.translate,
checked against the option texts). Per dataset the measure is the adversary's per-item key
accuracy (its final guess for every item of its first download) minus the accuracy of the best
constant answer, the dataset's most common shown key (per answer format where a dataset has
single- and multiple-choice items) ("recovered beyond chance", in percentage points; README
"Security"). Target: <= 5 points for every dataset. Every adversary's reading is checked sound:
the true key of every item must remain among its candidates (Result.ruled_out_true_keys == 0).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import string
import time
import unicodedata
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from medbench.common.v1 import common_pb2
from medbench.identity.v1 import identity_pb2, identity_service_pb2
from medbench.report.v1 import report_pb2, report_service_pb2, report_service_pb2_grpc
from medbench.submission.v1 import submission_pb2
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_client.api import (
    AdminClient,
    IdentityAdmin,
    PartnerClient,
    channel,
    chunked,
    service_stub,
)
from medbench_client.bank_files import import_item
from medbench_devstack.answers import translate
from rotator.core.synthetic import synthetic_items

LETTERS = string.ascii_uppercase
CHOICE_FORMATS = ("choice_single", "choice_multi")
TARGET_POINTS = 5.0
# Answers that name no option (the scorer parses no letter from them: wrong for every choice
# item). The Combined adversary changes wording every round.
NO_OPTION = ("不确定", "无法判断", "不知道", "暂不作答", "不清楚", "无法确定", "不作回答")
COMPLETED = submission_pb2.SUBMISSION_STATE_COMPLETED
TERMINAL = (
    submission_pb2.SUBMISSION_STATE_COMPLETED,
    submission_pb2.SUBMISSION_STATE_FAILED,
    submission_pb2.SUBMISSION_STATE_CANCELLED,
)

Range = tuple[int, int]
"""The least and the most of a count that a report allows (both included)."""
Key = frozenset[str]
"""Option letters in one option order."""
Texts = frozenset[str]
"""A key as option texts (normalised): the same in every option order."""


# -- reading a question's options --------------------------------------------------------------

_OPTION_LINE = re.compile(
    r"^[ \t\u3000]*(?:[(（](?P<bracketed>[A-Z])[)）]|(?P<letter>[A-Z])[.．、:：)）])"
    r"[ \t\u3000]*(?P<text>.*?)[ \t\u3000]*$",
    re.MULTILINE,
)


def normalise(text: str) -> str:
    """NFKC, no white space: an option text as compared across downloads."""
    return "".join(unicodedata.normalize("NFKC", text).split())


@dataclass(frozen=True)
class Options:
    """A question's (last) option list: letters A, B, C ... on lines of their own."""

    letters: tuple[str, ...]
    texts: tuple[str, ...]
    """Normalised, in the shown order."""
    stem: str
    """The question without the option list, normalised."""
    exact: tuple[str, tuple[str, ...]]
    """The question without the option list and the option texts (sorted), as written: what
    the bank's copy of a question and a download's show the same, character for character."""

    def texts_of(self, letters: Iterable[str]) -> Texts:
        return frozenset(self.texts[self.letters.index(letter)] for letter in letters)

    def letters_of(self, texts: Iterable[str]) -> Key:
        return frozenset(self.letters[self.texts.index(text)] for text in texts)


def read_options(question: str) -> Options | None:
    """The last run of option lines A., B., C. ... (two at least) of a question, as a partner's
    script would read it; None when there is none or two options read the same."""
    runs: list[list[re.Match[str]]] = []
    current: list[re.Match[str]] = []
    for match in _OPTION_LINE.finditer(question):
        letter = match["bracketed"] or match["letter"]
        if letter == "A":
            current = [match]
            runs.append(current)
        elif current and letter == LETTERS[len(current)]:
            current.append(match)
        else:
            current = []
    runs = [run for run in runs if len(run) >= 2]
    if not runs:
        return None
    run = runs[-1]
    texts = tuple(normalise(m["text"]) for m in run)
    if len(set(texts)) != len(texts) or not all(texts):
        return None
    around = question[: run[0].start()] + "\n" + question[run[-1].end() :]
    exact = (around, tuple(sorted(m["text"] for m in run)))
    return Options(tuple(LETTERS[: len(run)]), texts, normalise(around), exact)


def key_text(letters: Iterable[str], multi: bool) -> str:
    """An answer naming these letters, in the house format (<B>, <A, C>)."""
    ordered = sorted(letters)
    return f"<{', '.join(ordered)}>" if multi or len(ordered) != 1 else f"<{ordered[0]}>"


def _letters_in(answer: str) -> Key:
    return frozenset(re.findall(r"[A-Z]", answer))


# -- what an adversary sees --------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """One downloaded item."""

    item_id: str
    dataset: str
    answer_format: str
    question: str
    options: Options | None

    @property
    def multi(self) -> bool:
        return self.answer_format == "choice_multi"

    @property
    def choice(self) -> bool:
        return self.answer_format in CHOICE_FORMATS and self.options is not None

    @property
    def signature(self) -> tuple[str, str, str, tuple[str, ...]]:
        """What the permutations of one question share: dataset, format, stem, option texts."""
        assert self.options is not None
        return (
            self.dataset,
            self.answer_format,
            self.options.stem,
            tuple(sorted(self.options.texts)),
        )


View = tuple[Shown, ...]


def view_of(prompts: Iterable[submission_pb2.Prompt]) -> View:
    return tuple(
        Shown(p.item_id, p.dataset, p.answer_format, p.question, read_options(p.question))
        for p in prompts
    )


@dataclass
class Observation:
    """Everything the platform told the adversary about one of its submissions."""

    round: int
    submission_id: str
    view: View
    plan: dict[str, Texts]
    """item id -> the candidate key it answered (items not in it named no option)."""
    report: report_pb2.Report
    item_results: dict[str, float | None] | None
    """item id -> score, when GetItemResults answered; None when it was refused."""
    item_results_refusal: str
    submission: submission_pb2.Submission

    def dataset(self, name: str) -> report_pb2.DatasetScore | None:
        return next((d for d in self.report.datasets if d.dataset == name), None)

    @property
    def live(self) -> bool:
        """The report is a live view: every score rounded (after a dither) to its step."""
        return self.report.live

    def right_items(self, name: str) -> Range | None:
        """Items of a dataset scored right, as the least and the most the report allows: from
        item_mean x items (exact in an exact report; within a step either way in a live view:
        a dithered rounding is off by less than one step). None when the report has no such
        dataset or no item mean."""
        d = self.dataset(name)
        if d is None or d.items <= 0:
            return None
        if d.item_mean or not d.score:
            mean = d.item_mean
        elif d.rule == "mean":
            mean = d.score  # a report without item means: the score is the item mean
        else:
            return None
        found = count_range(mean, d.step, d.items)
        if d.rule == "mean" and d.units == d.items:  # the score reads the same count again
            other = count_range(d.score, d.step, d.items)
            found = (max(found[0], other[0]), min(found[1], other[1]))
        return found

    def right_units(self, name: str) -> Range | None:
        """Questions of an all-permutations dataset with every permutation right (a range, as
        right_items)."""
        d = self.dataset(name)
        if d is None or d.units <= 0:
            return None
        return count_range(d.score, d.step, d.units)

    def dimension_score(self, dimension: str) -> float | None:
        return next((d.score for d in self.report.dimensions if d.dimension == dimension), None)


def count_range(shown: float, step: float, n: int) -> Range:
    """The counts out of ``n`` a shown percentage allows: exactly round(shown x n / 100) when
    ``step`` is 0 (an exact report); else every count whose percentage lies within one step of
    the shown one (a live view's dithered rounding is off by less than a step), ends included."""
    if step <= 0:
        exact = round(shown * n / 100)
        return exact, exact
    low = math.ceil((shown - step) * n / 100 - 1e-6)
    high = math.floor((shown + step) * n / 100 + 1e-6)
    return max(0, low), min(n, high)


# -- what an adversary knows -------------------------------------------------------------------

Signature = tuple[str, str, str, tuple[str, ...]]
MULTI_SIZES = (2, 3, 4, 1)


def _sizes(n: int) -> list[int]:
    """Sizes of the letter sets a multiple-choice key may have, likeliest first."""
    return [s for s in MULTI_SIZES if s <= n] + list(range(5, n + 1))


def _candidates(texts: Sequence[str], multi: bool) -> list[Texts]:
    """Every key a question may have, in the order a guesser tries them: options in the order
    shown (never by their content, which would bring the bank's own order back in synthetic
    items); for multiple choice two options first, then three, four, one, then the rest."""
    if not multi:
        return [frozenset([t]) for t in texts]
    return [frozenset(c) for s in _sizes(len(texts)) for c in itertools.combinations(texts, s)]


def _rank(letters: Key, multi: bool, n: int) -> tuple[int, tuple[str, ...]]:
    """The order a guesser without evidence prefers answers in: A before B; for multiple
    choice the likelier size first."""
    return (_sizes(n).index(len(letters)) if multi else 0, tuple(sorted(letters)))


@dataclass
class Group:
    """The permutations of one question (one item when it has none) and its remaining keys."""

    signature: Signature
    dataset: str
    multi: bool
    candidates: list[Texts]
    items: list[Shown] = field(default_factory=list)
    """Its items in the latest download."""
    seen: dict[str, Shown] = field(default_factory=dict)
    """Every item of it in any download, by id."""

    @property
    def resolved(self) -> bool:
        return len(self.candidates) == 1

    def confirm(self, key: Texts) -> None:
        if key in self.candidates:
            self.candidates = [key]

    def eliminate(self, keys: Iterable[Texts]) -> None:
        ruled_out = set(keys)
        left = [c for c in self.candidates if c not in ruled_out]
        self.candidates = left or self.candidates

    def restrict(self, keys: Iterable[Texts]) -> None:
        kept = set(keys)
        left = [c for c in self.candidates if c in kept]
        self.candidates = left or self.candidates


class Knowledge:
    """Groups by question text, their remaining keys, and what the reports say of datasets."""

    def __init__(self) -> None:
        self.groups: dict[Signature, Group] = {}
        self.first_view: View = ()
        self.latest_view: View = ()
        self.prior: dict[str, Counter[Key]] = {}
        """dataset -> right items counted per constant answer (letters), when measured."""
        self.dimension_of: dict[str, str] = {}
        self.rule_of: dict[str, str] = {}
        self.unscored: set[str] = set()

    def see(self, view: View) -> None:
        if not self.first_view:
            self.first_view = view
        self.latest_view = view
        for group in self.groups.values():
            group.items = []
        for shown in view:
            if not shown.choice or shown.options is None:
                continue
            if shown.signature not in self.groups:
                self.groups[shown.signature] = Group(
                    shown.signature,
                    shown.dataset,
                    shown.multi,
                    _candidates(shown.options.texts, shown.multi),
                )
            self.groups[shown.signature].items.append(shown)
            self.groups[shown.signature].seen[shown.item_id] = shown

    def live_groups(self, dataset: str | None = None) -> list[Group]:
        """Unresolved groups of the latest download with an item worth probing, in view order."""
        return [
            g
            for g in self.groups.values()
            if g.items
            and not g.resolved
            and (dataset is None or g.dataset == dataset)
            and any(s.item_id not in self.unscored for s in g.items)
        ]

    def datasets(self) -> list[str]:
        """Datasets with choice items in the latest download, in view order."""
        return list(dict.fromkeys(s.dataset for s in self.latest_view if s.choice))

    def learn_report(self, obs: Observation) -> None:
        for d in obs.report.datasets:
            self.dimension_of[d.dataset] = d.dimension
            self.rule_of[d.dataset] = d.rule
        if obs.item_results is not None:
            self.unscored |= {s.item_id for s in obs.view if s.item_id not in obs.item_results}

    def learn_items(self, obs: Observation) -> None:
        """Per-item results: a right answer is the key, a wrong one is not."""
        if obs.item_results is None:
            return
        by_id = {s.item_id: s for s in obs.view if s.choice}
        for item_id, key in obs.plan.items():
            score = obs.item_results.get(item_id)
            shown = by_id.get(item_id)
            if score is None or shown is None:
                continue
            group = self.groups[shown.signature]
            if score >= 0.999:
                group.confirm(key)
            else:
                group.eliminate([key])

    def guess(self, shown: Shown) -> Key:
        """The key this adversary bets on for an item (letters in the item's order): its key
        when known; else, of the keys left, the one its constant runs found most often right
        in the dataset, then the one a constant answer would give (A, then B ...)."""
        options = shown.options
        assert options is not None
        prior = self.prior.get(shown.dataset, Counter())
        n = len(options.letters)
        left = [options.letters_of(key) for key in self.groups[shown.signature].candidates]
        return min(left, key=lambda k: (-prior.get(k, 0), _rank(k, shown.multi, n)))

    def guesses(self) -> dict[str, Key]:
        """A guess for every choice item of the first download."""
        return {s.item_id: self.guess(s) for s in self.first_view if s.choice}


# -- the adversaries ---------------------------------------------------------------------------


class Adversary:
    """One tenant's attack: plan() the answers of a round, learn() from what came back."""

    name = "adversary"
    rotates_wording = False

    def __init__(self, tenant: str, rounds: int, use_item_results: bool = True) -> None:
        self.tenant = tenant
        self.rounds = rounds
        self.use_item_results = use_item_results
        self.knowledge = Knowledge()

    def plan(self, view: View, round_: int) -> dict[str, Texts]:
        raise NotImplementedError

    def learn(self, obs: Observation) -> None:
        self.knowledge.learn_report(obs)
        if self.use_item_results:
            self.knowledge.learn_items(obs)

    def finished(self) -> bool:
        return not self.knowledge.live_groups()

    def no_option(self, round_: int) -> str:
        return NO_OPTION[round_ % len(NO_OPTION)] if self.rotates_wording else NO_OPTION[0]

    def answers(self, view: View, round_: int) -> tuple[dict[str, Texts], list[tuple[str, str]]]:
        """The round's plan and the answer text of every shown item."""
        self.knowledge.see(view)
        plan = self.plan(view, round_)
        out = []
        for shown in view:
            key = plan.get(shown.item_id)
            if key is None or shown.options is None:
                out.append((shown.item_id, self.no_option(round_)))
            else:
                out.append((shown.item_id, key_text(shown.options.letters_of(key), shown.multi)))
        return plan, out


def _multi_constants(most: int) -> list[Key]:
    """Letter sets a constant run answers multiple-choice items with, in order."""
    letters = LETTERS[:most]
    return [frozenset(c) for s in _sizes(most) for c in itertools.combinations(letters, s)]


class ConstantLetters(Adversary):
    name = "constant letters"

    def __init__(self, tenant: str, rounds: int, use_item_results: bool = True) -> None:
        super().__init__(tenant, rounds, use_item_results)
        self._constants: list[tuple[str | None, Key | None]] = []
        self._last_round = -1

    def _constant(self, round_: int, view: View) -> tuple[str | None, Key | None]:
        """Round r's constants: the r-th letter, the r-th letter set (None past the last)."""
        counts = [(s.multi, len(s.options.letters)) for s in view if s.choice and s.options]
        most_single = max((n for multi, n in counts if not multi), default=0)
        most_multi = max((n for multi, n in counts if multi), default=0)
        multi = _multi_constants(most_multi)[: self.rounds]
        single = LETTERS[round_] if round_ < most_single else None
        return single, (multi[round_] if round_ < len(multi) else None)

    def plan(self, view: View, round_: int) -> dict[str, Texts]:
        single, multi = self._constant(round_, view)
        self._constants.append((single, multi))
        plan: dict[str, Texts] = {}
        for shown in view:
            if not shown.choice:
                continue
            assert shown.options is not None
            letters: Key | None = multi if shown.multi else (frozenset(single) if single else None)
            if letters and letters <= set(shown.options.letters):
                plan[shown.item_id] = shown.options.texts_of(letters)
        self._last_round = round_
        return plan

    def learn(self, obs: Observation) -> None:
        super().learn(obs)
        single, multi = self._constants[obs.round]
        for dataset in {s.dataset for s in obs.view if s.item_id in obs.plan}:
            found = obs.right_items(dataset)
            if found is None:
                continue
            right = sum(found) / 2  # the middle of what the report allows
            prior = self.knowledge.prior.setdefault(dataset, Counter())
            for letters in (frozenset(single) if single else None, multi):
                if letters:
                    prior[letters] += right

    def finished(self) -> bool:
        single, multi = self._constant(self._last_round + 1, self.knowledge.latest_view)
        return super().finished() or (single is None and multi is None)


def _next_probe(
    groups: Sequence[Group], inconclusive: set[tuple[Signature, Texts]]
) -> tuple[Group, Texts] | None:
    """The first (group, candidate) not yet probed without a conclusion; when every one was,
    the first candidate of the first group again (a new dither may tell)."""
    for group in groups:
        for key in group.candidates:
            if (group.signature, key) not in inconclusive:
                return group, key
    if not groups:
        return None
    inconclusive.clear()
    return groups[0], groups[0].candidates[0]


Probes = dict[str, tuple[Group, Texts]]
"""dataset -> the group probed in it and the candidate its items were answered with."""


def _plan_probes(
    knowledge: Knowledge, pick: Callable[[str], tuple[Group, Texts] | None]
) -> tuple[dict[str, Texts], Probes]:
    """One probe per dataset (``pick`` chooses it): the group's items answered with the
    candidate, everything else with no option."""
    plan: dict[str, Texts] = {}
    probes: Probes = {}
    for dataset in knowledge.datasets():
        probe = pick(dataset)
        if probe is None:
            continue
        group, key = probe
        probes[dataset] = (group, key)
        plan.update({s.item_id: key for s in group.items})
    return plan, probes


def _read_probes(
    obs: Observation, probes: Probes, inconclusive: set[tuple[Signature, Texts]]
) -> None:
    """What a report says of each dataset's probe: only the probe can be right (the rest named
    no option), so a count above 0 is the key and a count of 0 (exact) rules it out; a live
    view that cannot tell leaves it inconclusive (another candidate is tried next)."""
    for dataset, (group, key) in probes.items():
        items, units = obs.right_items(dataset), obs.right_units(dataset)
        if items is None:
            continue
        if items[0] > 0 or (units is not None and units[0] > 0):
            group.confirm(key)
        elif items[1] == 0:
            group.eliminate([key])
        else:
            inconclusive.add((group.signature, key))


class GroupDifferencing(Adversary):
    """One question group per dataset per round, read from the dataset's right-item count."""

    name = "group differencing"

    def __init__(self, tenant: str, rounds: int, use_item_results: bool = False) -> None:
        super().__init__(tenant, rounds, use_item_results)
        self._probes: dict[int, Probes] = {}
        self._inconclusive: set[tuple[Signature, Texts]] = set()

    def plan(self, view: View, round_: int) -> dict[str, Texts]:
        plan, self._probes[round_] = _plan_probes(
            self.knowledge,
            lambda dataset: _next_probe(self.knowledge.live_groups(dataset), self._inconclusive),
        )
        return plan

    def learn(self, obs: Observation) -> None:
        super().learn(obs)
        _read_probes(obs, self._probes[obs.round], self._inconclusive)


class DimensionDifferencing(Adversary):
    """One question group per dimension per round, read from the dimension score alone."""

    name = "dimension differencing"

    def __init__(self, tenant: str, rounds: int, use_item_results: bool = False) -> None:
        super().__init__(tenant, rounds, use_item_results)
        self._probes: dict[int, list[tuple[Group, Texts]]] = {}
        self._turn: Counter[str] = Counter()
        self._inconclusive: set[tuple[Signature, Texts]] = set()

    def plan(self, view: View, round_: int) -> dict[str, Texts]:
        known = self.knowledge.dimension_of
        by_dimension: dict[str, list[str]] = {}
        for dataset in self.knowledge.datasets():
            if not self.knowledge.live_groups(dataset):
                continue
            # Before the first report names the dimensions, one probe in all.
            by_dimension.setdefault(known.get(dataset, "?"), []).append(dataset)
        if not known:
            by_dimension = dict(itertools.islice(by_dimension.items(), 1))
            by_dimension = {k: v[:1] for k, v in by_dimension.items()}
        plan: dict[str, Texts] = {}
        probes = []
        for dimension, datasets in by_dimension.items():
            dataset = datasets[self._turn[dimension] % len(datasets)]
            self._turn[dimension] += 1
            probe = _next_probe(self.knowledge.live_groups(dataset), self._inconclusive)
            if probe is None:
                continue
            group, key = probe
            probes.append((group, key))
            plan.update({s.item_id: key for s in group.items})
        self._probes[round_] = probes
        return plan

    def learn(self, obs: Observation) -> None:
        super().learn(obs)
        for group, key in self._probes[obs.round]:
            score = obs.dimension_score(self.knowledge.dimension_of.get(group.dataset, ""))
            if score is None:
                continue
            # A count of 0 shows 0 in a live view too (a dither never lifts it a whole step).
            if score > 1e-9:
                group.confirm(key)
            elif not obs.live:
                group.eliminate([key])
            else:  # a live view's 0 may hide a right probe: try another candidate next
                self._inconclusive.add((group.signature, key))


@dataclass(frozen=True)
class _Test:
    """Candidates of one group, each answered in `weight` of its items."""

    group: Group
    keys: tuple[Texts, ...]
    weight: int
    whole: bool = False
    """All the group's items answered with one key: read from the all-permutations score."""


class Combined(Adversary):
    """Per-item results while GetItemResults answers; else weighted group tests per dataset."""

    name = "combined"
    rotates_wording = True

    def __init__(self, tenant: str, rounds: int, use_item_results: bool = True) -> None:
        super().__init__(tenant, rounds, use_item_results)
        self._items_answer: bool | None = None
        self._tests: dict[int, dict[str, list[_Test]]] = {}

    def plan(self, view: View, round_: int) -> dict[str, Texts]:
        if self._items_answer and self.use_item_results:
            return self._plan_per_item()
        return self._plan_weighted(round_)

    def _plan_per_item(self) -> dict[str, Texts]:
        plan: dict[str, Texts] = {}
        for group in self.knowledge.live_groups():
            items = [s for s in group.items if s.item_id not in self.knowledge.unscored]
            for shown, key in zip(items, group.candidates, strict=False):
                plan[shown.item_id] = key
        return plan

    def _plan_weighted(self, round_: int) -> dict[str, Texts]:
        plan: dict[str, Texts] = {}
        tests_by_dataset: dict[str, list[_Test]] = {}
        for dataset in self.knowledge.datasets():
            groups = self.knowledge.live_groups(dataset)
            rule = self.knowledge.rule_of.get(dataset)
            # Unknown rule: cover no group whole (it would count in an all-permutations score).
            strict = rule != "mean"
            tests: list[_Test] = []
            if rule == "all_permutations":
                whole = next((g for g in groups if len(g.items) >= 2), None)
                if whole is not None:
                    tests.append(_Test(whole, (whole.candidates[0],), len(whole.items), True))
            total = 0
            for group in groups:
                if any(t.group is group for t in tests):
                    continue
                weight = total + 1
                n = len(group.items)
                room = (n - 1 if strict else n) // weight
                k = min(max(1, len(group.candidates) // 2), room, len(group.candidates) - 1)
                if k < 1:
                    continue
                tests.append(_Test(group, tuple(group.candidates[:k]), weight))
                total += weight
            for test in tests:
                items = iter(test.group.items)
                for key in test.keys:
                    for _ in range(test.weight):
                        plan[next(items).item_id] = key
            if tests:
                tests_by_dataset[dataset] = tests
        self._tests[round_] = tests_by_dataset
        return plan

    def learn(self, obs: Observation) -> None:
        super().learn(obs)
        self._items_answer = obs.item_results is not None
        tests_by_dataset = self._tests.pop(obs.round, None)
        if not tests_by_dataset or (obs.item_results is not None and self.use_item_results):
            return
        for dataset, tests in tests_by_dataset.items():
            right = obs.right_items(dataset)
            if right is None:
                continue
            wholes = sum(1 for t in tests if t.whole)
            units = (obs.right_units(dataset) or (0, 0)) if wholes else (0, 0)
            # Every outcome of the tests (a bit each: one of its keys is the key) that gives a
            # count the report allows; a test is learnt when all of them agree on its bit.
            # Only a whole group can have every permutation right: its bit is the units'.
            agreed: dict[int, set[bool]] = {}
            for bits in itertools.product((False, True), repeat=len(tests)):
                count = sum(t.weight for t, bit in zip(tests, bits, strict=True) if bit)
                whole = sum(1 for t, bit in zip(tests, bits, strict=True) if bit and t.whole)
                if right[0] <= count <= right[1] and units[0] <= whole <= units[1]:
                    for n, bit in enumerate(bits):
                        agreed.setdefault(n, set()).add(bit)
            for n, test in enumerate(tests):
                if agreed.get(n) == {True}:
                    test.group.restrict(test.keys)
                elif agreed.get(n) == {False}:
                    test.group.eliminate(test.keys)


class LiveProbing(ConstantLetters):
    """Against a live view's dithered rounding: constant-letter rounds first (a third of its
    rounds: which constant each dataset favours), then per dataset and round one question group
    answered in all its items with its likeliest candidate other than the one it would bet on
    anyway, the rest with no option. A probe can only show above 0 if it is the key (a count of
    0 always shows 0); a right probe shows in the item mean or the score with a chance each (a
    third of a step: about 5 in 9 for both), so a 0 proves nothing and the next round tries the
    next candidate. Each confirmed key is a gain over the constant."""

    name = "live probing"

    def __init__(self, tenant: str, rounds: int, use_item_results: bool = False) -> None:
        super().__init__(tenant, rounds, use_item_results)
        self._constant_rounds = max(1, rounds // 3)
        self._probes: dict[int, Probes] = {}
        self._inconclusive: set[tuple[Signature, Texts]] = set()

    def plan(self, view: View, round_: int) -> dict[str, Texts]:
        if round_ < self._constant_rounds:
            return super().plan(view, round_)
        plan, self._probes[round_] = _plan_probes(self.knowledge, self._probe)
        return plan

    def _probe(self, dataset: str) -> tuple[Group, Texts] | None:
        """The first group (in view order) with an untried candidate other than its bet."""
        for group in self.knowledge.live_groups(dataset):
            if not group.items or group.items[0].options is None:
                continue
            options = group.items[0].options
            bet = options.texts_of(self.knowledge.guess(group.items[0]))
            for key in group.candidates:
                if key != bet and (group.signature, key) not in self._inconclusive:
                    return group, key
        return None

    def learn(self, obs: Observation) -> None:
        if obs.round < self._constant_rounds:
            super().learn(obs)
            return
        Adversary.learn(self, obs)
        _read_probes(obs, self._probes.pop(obs.round, {}), self._inconclusive)

    def finished(self) -> bool:
        return Adversary.finished(self)


ADVERSARIES: tuple[type[Adversary], ...] = (
    ConstantLetters,
    GroupDifferencing,
    DimensionDifferencing,
    Combined,
    LiveProbing,
)


# -- playing through the API -------------------------------------------------------------------


@dataclass
class Played:
    """An adversary after its rounds: what it used and why it stopped."""

    adversary: Adversary
    submissions: list[str] = field(default_factory=list)
    stopped: str = ""
    """Why it stopped: "finished", "rounds", or the refusal (status, message, retry-after)."""
    item_results: str = ""
    """GetItemResults in its last round: "read", "not asked", or the refusal."""
    seconds: float = 0.0


async def _completed(client: PartnerClient, submission_id: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        sub = await client.get(submission_id)
        if sub.state == COMPLETED:
            return
        if sub.state in TERMINAL:
            raise AssertionError(f"{submission_id} ended {sub.state}: {sub.state_reason}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{submission_id} not COMPLETED after {timeout_s} s ({sub.state})")
        await asyncio.sleep(0.15)


def _refusal(exc: grpc.aio.AioRpcError) -> str:
    retry = dict(exc.trailing_metadata() or ()).get("retry-after", "")
    return f"{exc.code().name}: {exc.details()}" + (f" (retry-after {retry} s)" if retry else "")


async def play(
    adversary: Adversary,
    gateway: str,
    key: str,
    run: str = "",
    timeout_s: float = 180,
    batch: int = 2000,
) -> Played:
    """Plays an adversary's rounds as its tenant (key) on the gateway, one submission at a time,
    until it has learnt all it can, its rounds are spent or the platform refuses a create."""
    run = run or uuid.uuid4().hex[:8]
    played = Played(adversary)
    started = time.perf_counter()
    chan = channel(gateway, key)
    client = PartnerClient(chan)
    try:
        for round_ in range(adversary.rounds):
            try:
                created = await client.create(f"kr-{run}-{round_:04d}", f"probe-{adversary.name}")
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                played.stopped = _refusal(exc)
                break
            sid = created.submission.submission_id
            played.submissions.append(sid)
            view = view_of(await client.prompts(sid))
            plan, answers = adversary.answers(view, round_)
            await client.upload(sid, chunked(answers, batch))
            await _completed(client, sid, timeout_s)
            report = await client.report(sid)
            items: dict[str, float | None] | None = None
            refusal = "not asked"
            if adversary.use_item_results:
                try:
                    items = {
                        r.item_id: (r.score if r.HasField("score") else None)
                        for r in await client.item_results(sid)
                    }
                    refusal = ""
                except grpc.aio.AioRpcError as exc:
                    refusal = _refusal(exc)
            played.item_results = "read" if items is not None else refusal
            submission = await client.get(sid)
            adversary.learn(
                Observation(round_, sid, view, plan, report, items, refusal, submission)
            )
            if adversary.finished():
                played.stopped = "finished: nothing left to learn"
                break
        else:
            played.stopped = f"its {adversary.rounds} rounds"
    finally:
        await chan.close()
        played.seconds = time.perf_counter() - started
    return played


# -- the truth and the measure -----------------------------------------------------------------


@dataclass(frozen=True)
class _Keyed:
    item_id: str
    dataset: str
    question: str
    reference: tuple[str, ...]
    options: Options
    key_texts: Texts


class Truth:
    """The keys of the bank rows a test imported, as shown in any download (never read from the
    platform)."""

    def __init__(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self._by_id: dict[str, _Keyed] = {}
        self._by_question: dict[tuple[str, tuple[str, tuple[str, ...]]], list[_Keyed]] = {}
        for row in rows:
            if row.get("answer_format") not in CHOICE_FORMATS:
                continue
            options = read_options(row["question"])
            if options is None:
                raise ValueError(f"{row['item_id']}: no option list to read")
            reference = tuple(row["reference"])
            keyed = _Keyed(
                row["item_id"],
                row["dataset"],
                row["question"],
                reference,
                options,
                options.texts_of(reference),
            )
            self._by_id[keyed.item_id] = keyed
            self._by_question.setdefault((keyed.dataset, options.exact), []).append(keyed)

    def _row(self, shown: Shown) -> _Keyed | None:
        """The bank row a shown item is: by id, the same question character for character but
        for the option order; without the id (ids the bank does not know), the same question
        in the same dataset. Anything else is not a bank item (e.g. a canary: an altered copy)."""
        if shown.options is None:
            return None
        row = self._by_id.get(shown.item_id)
        if row is not None:
            return row if row.options.exact == shown.options.exact else None
        same = self._by_question.get((shown.dataset, shown.options.exact), [])
        return same[0] if same else None

    def key(self, shown: Shown) -> Key | None:
        """The item's key in the order shown; None for an item the bank does not hold."""
        row = self._row(shown)
        if row is None or shown.options is None:
            return None
        via_texts = shown.options.letters_of(row.key_texts)
        moved = _letters_in(translate(key_text(row.reference, True), row.question, shown.question))
        if moved != via_texts:
            raise AssertionError(
                f"{shown.item_id}: translate gives {sorted(moved)}, the option texts "
                f"{sorted(via_texts)}"
            )
        return via_texts


@dataclass(frozen=True)
class DatasetFigure:
    """One adversary on one dataset."""

    dataset: str
    items: int
    accuracy: float
    """Share of the dataset's items whose key the adversary guessed right (0-1)."""
    chance: float
    """The best constant answer's accuracy, 0-1: the most common shown key's share (per answer
    format in a dataset with both)."""

    @property
    def beyond(self) -> float:
        """Recovered beyond chance, in percentage points."""
        return 100 * (self.accuracy - self.chance)


@dataclass(frozen=True)
class Result:
    """What one adversary recovered, per dataset."""

    adversary: str
    tenant: str
    submissions: int
    stopped: str
    item_results: str
    seconds: float
    datasets: tuple[DatasetFigure, ...]
    ruled_out_true_keys: int = 0
    """Items whose true key the adversary ruled out although it never mixed them up with an
    item the bank does not hold: a fault of the harness's reading, never of the platform."""

    @property
    def worst(self) -> DatasetFigure | None:
        return max(self.datasets, key=lambda d: d.beyond, default=None)


def chance_of(keys: Sequence[tuple[bool, Key]]) -> float:
    """The accuracy of the best constant answer over items (multi, shown key): the most common
    shown key's share, per answer format (a dataset with single- and multiple-choice items is
    best answered with one letter for the ones and one letter set for the others; the format is
    shown with each item)."""
    by_format: dict[bool, Counter[Key]] = {}
    for multi, key in keys:
        by_format.setdefault(multi, Counter())[key] += 1
    best = sum(c.most_common(1)[0][1] for c in by_format.values())
    return best / len(keys) if keys else 0.0


def measure(truth: Truth, played: Played) -> Result:
    """The adversary's final guesses against the keys of its first download."""
    knowledge = played.adversary.knowledge
    guesses = knowledge.guesses()
    keys: dict[str, list[tuple[bool, Key, Key]]] = {}
    ruled_out = 0
    for shown in knowledge.first_view:
        key = truth.key(shown) if shown.choice else None
        if key is None or shown.options is None:
            continue
        keys.setdefault(shown.dataset, []).append((shown.multi, key, guesses[shown.item_id]))
        group = knowledge.groups[shown.signature]
        # A group the adversary merged with an item the bank does not hold (a canary made to
        # look like a bank item) may mislead it, which is no fault of its reading.
        pure = all(truth.key(s) is not None for s in group.seen.values())
        if pure and shown.options.texts_of(key) not in group.candidates:
            ruled_out += 1
    figures = []
    for dataset, items in keys.items():
        right = sum(1 for _, k, g in items if k == g)
        chance = chance_of([(multi, k) for multi, k, _ in items])
        figures.append(DatasetFigure(dataset, len(items), right / len(items), chance))
    return Result(
        played.adversary.name,
        played.adversary.tenant,
        len(played.submissions),
        played.stopped,
        played.item_results,
        played.seconds,
        tuple(sorted(figures, key=lambda f: f.dataset)),
        ruled_out,
    )


@dataclass(frozen=True)
class Worst:
    """Per dataset, the adversary that recovered the most beyond chance."""

    by_dataset: dict[str, tuple[DatasetFigure, str]]

    @property
    def overall(self) -> tuple[DatasetFigure, str] | None:
        return max(self.by_dataset.values(), key=lambda x: x[0].beyond, default=None)


def worst(results: Sequence[Result]) -> Worst:
    by_dataset: dict[str, tuple[DatasetFigure, str]] = {}
    for result in results:
        for figure in result.datasets:
            best = by_dataset.get(figure.dataset)
            if best is None or figure.beyond > best[0].beyond:
                by_dataset[figure.dataset] = (figure, result.adversary)
    return Worst(dict(sorted(by_dataset.items())))


def table(results: Sequence[Result]) -> str:
    """Per adversary and dataset: items, key accuracy, chance, beyond chance; then the worst."""
    lines = [
        "key recovery: per-item key accuracy against the best constant answer (chance)",
        f"{'adversary':<24} {'dataset':<14} {'items':>5} {'accuracy':>9} {'chance':>7} "
        f"{'beyond':>8}",
    ]
    for r in results:
        for f in r.datasets:
            lines.append(
                f"{r.adversary:<24} {f.dataset:<14} {f.items:>5} {100 * f.accuracy:>8.1f}% "
                f"{100 * f.chance:>6.1f}% {f.beyond:>+7.1f}"
            )
        lines.append(
            f"  {r.adversary} ({r.tenant}): {r.submissions} submissions in {r.seconds:.0f} s, "
            f"GetItemResults: {r.item_results}; stopped: {r.stopped}"
            + (f"; RULED OUT {r.ruled_out_true_keys} TRUE KEYS" if r.ruled_out_true_keys else "")
        )
    w = worst(results)
    lines.append("worst case per dataset (recovered beyond chance, points; target <= 5):")
    for dataset, (figure, who) in w.by_dataset.items():
        lines.append(
            f"  {dataset:<14} {figure.beyond:>+7.1f} ({who}: {100 * figure.accuracy:.1f}% of "
            f"{figure.items} items, chance {100 * figure.chance:.1f}%)"
        )
    if w.overall is not None:
        figure, who = w.overall
        lines.append(f"worst: {figure.beyond:+.1f} points ({figure.dataset}, {who})")
    return "\n".join(lines)


async def attack(
    truth: Truth,
    gateway: str,
    keys: Mapping[str, str],
    adversaries: Sequence[Adversary],
    run: str = "",
    timeout_s: float = 180,
) -> list[Result]:
    """Plays the adversaries side by side (each its own tenant, keys: tenant -> partner key) and
    measures each."""
    played = await asyncio.gather(
        *(play(a, gateway, keys[a.tenant], run=run, timeout_s=timeout_s) for a in adversaries)
    )
    return [measure(truth, p) for p in played]


def right_answers(truth: Truth, view: View) -> list[tuple[str, str]]:
    """The right answer of every bank item of a download (a check of the truth itself); items
    the bank does not hold name no option."""
    out = []
    for shown in view:
        key = truth.key(shown) if shown.choice else None
        out.append((shown.item_id, key_text(key, shown.multi) if key else NO_OPTION[0]))
    return out


def make_adversaries(
    prefix: str,
    rounds: int | Mapping[str, int],
    kinds: Sequence[type[Adversary]] = ADVERSARIES,
    use_item_results: bool = True,
) -> list[Adversary]:
    """One adversary of each kind, tenant `<prefix>-<n>`; rounds per kind name or for all.
    use_item_results=False: adversaries that never read GetItemResults (what aggregates alone
    give)."""
    out: list[Adversary] = []
    for n, kind in enumerate(kinds):
        r = rounds if isinstance(rounds, int) else rounds[kind.name]
        adversary = kind(f"{prefix}-{n}", r)
        adversary.use_item_results = use_item_results and adversary.use_item_results
        out.append(adversary)
    return out


async def synthetic_pool(
    rotator: str, admin_key: str, n_items: int, seed: int, cycle: str = "keyrec"
) -> tuple[list[dict[str, Any]], taskpool_pb2.Pool]:
    """A synthetic multiple-choice bank of n_items (rotator.core.synthetic) imported and
    rotated into the LLM track's upload-board pool of `cycle`, the way a real cycle's pool is
    built (30 question groups per dataset): the bank rows and the pool."""
    rows = list(synthetic_items(n_items, seed=seed))
    chan = channel(rotator, admin_key)
    try:
        imported = await AdminClient(chan).import_items([import_item(r) for r in rows], 5000)
        if imported.rejected:
            raise AssertionError(f"bank import rejected {imported.rejected[:3]}")
        stub = service_stub(taskpool_service_pb2_grpc.TaskPoolServiceStub, chan)
        rotated: taskpool_service_pb2.RotatePoolResponse = await stub.RotatePool(
            taskpool_service_pb2.RotatePoolRequest(
                track=common_pb2.TRACK_LLM, board=taskpool_pb2.BOARD_UPLOAD, cycle=cycle
            )
        )
        datasets = {r["dataset"] for r in rows}
        short = [s for s in rotated.shortfalls if s.split(":")[0] in datasets]
        if short:
            raise AssertionError(f"the bank is too small for a whole pool: {short}")
        return rows, rotated.pool
    finally:
        await chan.close()


@dataclass(frozen=True)
class HonestDataset:
    """One dataset of an honest run: what the report says and what the harness expected."""

    dataset: str
    right: int
    """Items scored right, from the report (item mean x items)."""
    bank_items: int
    """Items of the download the harness knows the key of (all answered with it)."""
    score: float


async def honest_run(
    gateway: str, key: str, truth: Truth, aggregator: str, admin_key: str, timeout_s: float = 180
) -> list[HonestDataset]:
    """One tenant answers every shown bank item with the key the harness knows (and every other
    item, e.g. a canary, with no option): per dataset, the items the report counts right must
    be exactly the bank items, i.e. the harness's keys are the platform's in this tenant's
    option order (every dataset scores 100 when no canary is scored). The tenant sees the live
    view; the exact count is read as maintainers read it (the aggregator's exact report)."""
    chan = channel(gateway, key)
    client = PartnerClient(chan)
    admin = channel(aggregator, admin_key)
    try:
        sid = (await client.create("honest", "honest-model")).submission.submission_id
        view = view_of(await client.prompts(sid))
        await client.upload(sid, chunked(right_answers(truth, view), 2000))
        await _completed(client, sid, timeout_s)
        seen = await client.report(sid)
        if not seen.live:
            raise AssertionError("a live pool's report reached its tenant exact")
        stub = service_stub(report_service_pb2_grpc.ReportServiceStub, admin)
        response: report_service_pb2.GetReportResponse = await stub.GetReport(
            report_service_pb2.GetReportRequest(submission_id=sid, exact=True)
        )
        known = Counter(s.dataset for s in view if s.choice and truth.key(s) is not None)
        return [
            HonestDataset(
                d.dataset, round(d.item_mean * d.items / 100), known.get(d.dataset, 0), d.score
            )
            for d in response.report.datasets
        ]
    finally:
        await chan.close()
        await admin.close()


async def whole_cycle(gateway: str, admin_key: str, tenants: Iterable[str]) -> int:
    """Lets each tenant make a whole cycle's runs on the hidden pool in one day: its per-day
    cap raised to the platform's per-pool cap (hidden_per_cycle, left as it is), in its quota
    record. A cycle lasts longer than hidden_per_cycle / hidden_per_day days, so this is what a
    partner can do over the cycle, played without waiting for the days. Returns the per-pool
    cap."""
    chan = channel(gateway, admin_key)
    admin = IdentityAdmin(chan)
    per_cycle = 0
    try:
        for tenant in tenants:
            await admin.ensure_tenant(tenant)
            usage = await admin.stub.GetUsage(
                identity_service_pb2.GetUsageRequest(tenant_id=tenant)
            )
            per_cycle = usage.quotas.hidden_per_cycle  # in effect: the default
            await admin.stub.UpdateTenant(
                identity_service_pb2.UpdateTenantRequest(
                    tenant_id=tenant, quotas=identity_pb2.Quotas(hidden_per_day=per_cycle)
                )
            )
    finally:
        await chan.close()
    return per_cycle
