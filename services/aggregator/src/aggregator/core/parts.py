"""Item-score parts: what a scorer says about one item, and how an item's parts from every
scorer become its score (pure, no I/O).

A part is one scorer's score of one item ("metric" or "judge"), with the components behind it
and the rule that merges an item's components. The rule's names are declared once, in the
wire contract (scoring_events.proto MergeRule); their arithmetic is ``report.merge``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aggregator.core.pooling import POOLED_COMPONENT, Pooled, pooled_scores, pooling_of
from aggregator.core.report import ScoredItem, merge
from aggregator.core.uncertainty import Unit


class Entry(NamedTuple):
    """One stored item score, as the report needs it."""

    item_id: str
    dataset: str
    dimension: str
    group_id: str
    component: str
    score: float
    merge_rule: str
    components: tuple[tuple[str, float], ...]
    unscored: bool
    judge_scores: tuple[float, ...]
    """The panel's per-judge normalised scores (judge parts only)."""
    judge: dict[str, Any] | None = None
    """Judge lineage (judge parts only): models, rubric, calibration_id, hashes, flags."""
    metric: str = ""
    """The metric spec the part was scored under (the registry's, e.g. "micro_f1+judge"; a
    judge part says "judge")."""
    counts: tuple[int, int, int] = (0, 0, 0)
    """tp, fp, fn of set-valued metrics (pooled for micro-F1 datasets)."""


@dataclass(frozen=True)
class ItemPart:
    """One scorer's score of one item, as it arrives (ItemsScored) and is stored."""

    item_id: str
    dataset: str
    dimension: str
    group_id: str
    component: str
    """"metric" or "judge"."""
    metric: str
    score: float
    """The part's score: its single component's, or the merge of its components."""
    parsed: str
    prompt_hash: str
    components: tuple[tuple[str, float], ...]
    merge_rule: str
    """A rule name ("mean", "min"); "mean" when the scorer named none."""
    counts: tuple[int, int, int] = (0, 0, 0)
    """tp, fp, fn of set-valued metrics."""
    unscored: bool = False
    """The judge could not score the item: counts towards completion, not in the means."""
    judge: dict[str, Any] | None = None
    """Judge lineage (judge parts only)."""


def part_score(score: float, components: Sequence[tuple[str, float]], rule: str) -> float:
    """A part's score: the scorer's own for one component (or none), else the merge of its
    components under the item's rule (the scorers leave that arithmetic to the aggregator)."""
    if len(components) <= 1:
        return score
    return merge([c for _, c in components], rule)


@dataclass(frozen=True)
class ScoredBatch:
    """A batch of parts from one scorer (event ItemsScored), with its submission's context."""

    event_id: str
    submission_id: str
    batch_id: str
    tenant_id: str
    pool_id: str
    expected_items: int
    expected_scores: int
    """ItemScore records the submission will have in all (0: expected_items)."""
    dataset_rules: Mapping[str, str]
    scorer_version: str
    parts: tuple[ItemPart, ...] = field(default=())
    coverage: Mapping[str, str] = field(default_factory=dict)
    """Dataset -> dimension of every dataset of the pool's track: what the report must cover
    (empty: the pool predates it, nothing is checked)."""

    @property
    def key(self) -> str:
        """The stored batch's id: the producer's deterministic event id, so a redelivery hits
        the same key, and two scorers' batches for the same responses never collide."""
        component = self.parts[0].component if self.parts else "metric"
        return self.event_id or f"{self.submission_id}:{self.batch_id}:{component}"


def entry_of(s: Mapping[str, Any]) -> Entry:
    """An Entry from one per-item score record (as stored in format 1, or unpacked)."""
    judge = s.get("judge") or {}
    return Entry(
        s["item_id"],
        s["dataset"],
        s["dimension"],
        s["group_id"],
        s["component"],
        s["score"],
        s.get("merge_rule", "mean"),
        tuple((n, v) for n, v in s.get("components") or [[s["component"], s["score"]]]),
        bool(s.get("unscored")),
        tuple(judge.get("judge_scores", ())),
        judge or None,
        s.get("metric", ""),
        _counts(s.get("counts")),
    )


def _counts(raw: Sequence[int] | None) -> tuple[int, int, int]:
    if not raw:
        return (0, 0, 0)
    tp, fp, fn = raw
    return (int(tp), int(fp), int(fn))


def dataset_metrics(entries: Iterable[Entry]) -> dict[str, str]:
    """dataset -> the metric spec it was scored under: its metric parts' (the registry's whole
    spec, e.g. "micro_f1+key_point_recall+judge"), else "judge" for judge-only datasets;
    several specs (a registry revision inside one pool) are joined with " | "."""
    found: dict[str, set[str]] = {}
    judged: dict[str, set[str]] = {}
    for e in entries:
        if e.metric:
            (found if e.component == "metric" else judged).setdefault(e.dataset, set()).add(
                e.metric
            )
    names = sorted(found.keys() | judged.keys())
    return {name: " | ".join(sorted(found.get(name) or judged[name])) for name in names}


def scores_digest(items: Iterable[tuple[str, str, float]], key: bytes) -> str:
    """HMAC-SHA-256, under the platform's secret key, of the sorted (item_id, component, score)
    triples that fed a report. Keyed: an unkeyed hash let a partner who knows a dataset's
    score (so how many of its items were right) try every combination of right items until
    the hash matched, reading per-item scores of a live pool back (~1 minute for 20 items)."""
    if not key:
        raise ValueError("an item-score digest needs the platform's digest key")
    h = hmac.new(key, digestmod=hashlib.sha256)
    for item_id, component, score in sorted(items):
        h.update(f"{item_id}\t{component}\t{score!r}\n".encode())
    return h.hexdigest()


Merged = list[tuple[ScoredItem, tuple[float, ...]]]


def merged_items(scores: Iterable[Mapping[str, Any]]) -> list[ScoredItem]:
    """One ScoredItem per item: every component from every scorer, merged by the item's rule
    (default mean: "key_point_recall+judge" weighs recall and judge equally).

    A part the judge could not score (``unscored``) contributes no component; an item left
    with none is not in the means at all (a recorded failure is not a zero).
    """
    return [item for item, _ in merge_parts(scores)]


def bootstrap_units(merged: Merged, rules: Mapping[str, str]) -> list[Unit]:
    """The scoring units the intervals resample (from ``merge_parts``): items, or permutation
    groups (scored by their worst permutation) under "all_permutations". An item judged by a
    panel carries the score it would have with each single judge, so the panel's disagreement
    is resampled too; an item of a micro-F1 dataset carries its counts, so each resample pools
    them (``pooling.py``).
    """
    units: list[Unit] = []
    permuted: dict[str, list[ScoredItem]] = {}
    for item, panel in merged:
        if rules.get(item.dataset, "mean") == "all_permutations":
            permuted.setdefault(item.dataset, []).append(item)
        else:
            units.append(Unit(item.dataset, item.dimension, item.score, panel, item.pooled))
    # A permutation group is one unit, scored with its dataset's pooled F1 where it has one
    # (no micro-F1 dataset of the registry has option permutations).
    groups: dict[tuple[str, str], list[float]] = {}
    dimension_of: dict[str, str] = {}
    for dataset, members in permuted.items():
        dimension_of[dataset] = members[0].dimension
        scores = pooled_scores([m.score for m in members], [m.pooled for m in members])
        for member, score in zip(members, scores, strict=True):
            groups.setdefault((dataset, member.group_id), []).append(score)
    for (dataset, _), scores in sorted(groups.items()):
        units.append(Unit(dataset, dimension_of[dataset], min(scores)))
    return units


def merge_parts(scores: Iterable[Mapping[str, Any]]) -> Merged:
    """``merge_entries`` over per-item score records."""
    return merge_entries(map(entry_of, scores))


def merge_entries(entries: Iterable[Entry]) -> Merged:
    """Every item's merged score, with the scores it would have under each single judge of
    its panel (empty without a panel)."""
    by_item: dict[str, Entry | list[Entry]] = {}
    for e in entries:
        held = by_item.get(e.item_id)
        if held is None:
            by_item[e.item_id] = e
        elif isinstance(held, list):
            held.append(e)
        else:
            by_item[e.item_id] = [held, e]
    out: Merged = []
    for item_id in sorted(by_item):
        found = by_item[item_id]
        panel: tuple[float, ...] = ()
        if not isinstance(found, list):
            # Most items: one scorer's part, nothing to merge across scorers.
            if found.unscored:
                continue
            pairs = found.components
            score = (
                pairs[0][1] if len(pairs) == 1 else merge([c for _, c in pairs], found.merge_rule)
            )
            panel = _panel_alternatives(pairs, found, found.merge_rule)
            pooled = _pooling(pairs, found.counts, found.merge_rule)
            item = ScoredItem(
                item_id, found.dataset, found.dimension, found.group_id, score, pooled
            )
            out.append((item, panel))
            continue
        parts = sorted(found, key=lambda e: e.component)
        first = parts[0]
        scored = [p for p in parts if not p.unscored]
        named = [pair for p in scored for pair in p.components]
        components = [c for _, c in named]
        if not components:
            continue
        rule = first.merge_rule
        score = components[0] if len(components) == 1 else merge(components, rule)
        judged = [p for p in scored if len(p.judge_scores) > 1]
        if len(judged) == 1:
            panel = _panel_alternatives(named, judged[0], rule)
        counts = next((p.counts for p in scored if p.component == "metric"), (0, 0, 0))
        item = ScoredItem(
            item_id,
            first.dataset,
            first.dimension,
            first.group_id,
            score,
            _pooling(named, counts, rule),
        )
        out.append((item, panel))
    return out


def _panel_alternatives(
    components: Sequence[tuple[str, float]], judged: Entry, rule: str
) -> tuple[float, ...]:
    """The item's score under each single judge of the panel part ``judged``: its "judge"
    component replaced by that judge's score, every other component (the metric scorer's, and
    a key-point recall the judge part carries) kept. Empty without a panel."""
    if len(judged.judge_scores) <= 1:
        return ()
    if len(components) == 1:
        return judged.judge_scores
    others = [c for name, c in components if name != "judge"]
    return tuple(merge([*others, j], rule) for j in judged.judge_scores)


def _pooling(
    components: Sequence[tuple[str, float]], counts: tuple[int, int, int], rule: str
) -> Pooled | None:
    # The common case (one component, not micro_f1) decided without a call.
    if len(components) == 1 and components[0][0] != POOLED_COMPONENT:
        return None
    return pooling_of(components, counts, rule)


def judge_lineage(parts: Iterable[Entry]) -> dict[str, list[str]]:
    """The distinct judge models, rubric versions and calibrations behind a report's scores."""
    models: set[str] = set()
    rubrics: set[str] = set()
    calibrations: set[str] = set()
    for part in parts:
        if part.judge:
            models.update(part.judge.get("models", ()))
            rubrics.add(part.judge.get("rubric", ""))
            calibrations.add(part.judge.get("calibration_id", ""))
    return {
        "judge_models": sorted(models),
        "rubric_versions": sorted(rubrics - {""}),
        "calibration_ids": sorted(calibrations - {""}),
    }


def rules_from_progress(entries: Sequence[str]) -> dict[str, str]:
    """The dataset -> rule map stored as "dataset=rule" strings."""
    return dict(e.split("=", 1) for e in entries)


def coverage_record(coverage: Mapping[str, str]) -> list[list[str]]:
    """The coverage as a progress record keeps it: [dataset, dimension] pairs by dataset (a
    list, since dataset names are data, not field names)."""
    return [[dataset, coverage[dataset]] for dataset in sorted(coverage)]


def coverage_from_progress(pairs: Sequence[Sequence[str]] | None) -> dict[str, str]:
    """The dataset -> dimension map of ``coverage_record``; empty for a record without one."""
    return {dataset: dimension for dataset, dimension in pairs or ()}
