"""Leaderboard arithmetic: item scores -> dataset, dimension and overall scores (pure, no I/O)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from aggregator.core.pooling import Pooled, dataset_f1, pooled_scores


class DatasetRule(StrEnum):
    """How a dataset's item scores become its score."""

    MEAN = "mean"
    """Mean of the item scores (in a micro-F1 dataset, with its pooled F1 in place of each
    item's own: core/pooling.py)."""
    ALL_PERMUTATIONS = "all_permutations"
    """Items grouped by group_id; a group scores its lowest item, so with 0/1 items a question
    counts only when every option-order permutation was answered correctly; mean over groups."""


class ConflictingScores(ValueError):
    """The same item_id arrived twice with different content."""


# Not frozen: a report builds one per item (700,000 for a full pool), and a frozen
# dataclass costs three times as much to construct. Treat it as immutable.
@dataclass(slots=True)
class ScoredItem:
    """One scored answer, as the aggregator receives it."""

    item_id: str
    dataset: str
    dimension: str
    group_id: str
    score: float
    """In [0, 1]; for an item of a pooled micro-F1 dataset, with the item's own F1."""
    pooled: Pooled | None = None
    """Set for items of a micro-F1 dataset: their counts and how the pooled F1 replaces their
    own (core/pooling.py)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score of {self.item_id} must lie in [0, 1], got {self.score}")


@dataclass(frozen=True)
class DatasetScore:
    dataset: str
    dimension: str
    score: float
    """0-100, unrounded."""
    n_items: int
    n_units: int
    """Scoring units: items under "mean", permutation groups under "all_permutations"."""
    item_mean: float = 0.0
    """0-100 mean over items: for shuffled-option sets, the per-permutation accuracy; for
    micro-F1 datasets, the mean with each item's own F1 (the score pools the counts)."""
    pooled_f1: float | None = None
    """0-100 pooled micro-F1 of a micro-F1 dataset (its tp, fp, fn summed over its items)."""


@dataclass(frozen=True)
class DimensionScore:
    dimension: str
    score: float
    """0-100, unweighted mean of the dimension's dataset scores."""
    n_datasets: int


@dataclass(frozen=True)
class Report:
    datasets: tuple[DatasetScore, ...]
    dimensions: tuple[DimensionScore, ...]
    overall: float
    """0-100, unweighted mean of the dimension scores (not of the datasets); in a partial
    report, of the dimensions it has."""
    missing_datasets: tuple[str, ...] = ()
    """Datasets of the coverage with no scored item, sorted."""
    missing_dimensions: tuple[str, ...] = ()
    """Dimensions of the coverage with no scored item in any of their datasets, sorted."""

    @property
    def partial(self) -> bool:
        """Some dataset the report should cover has no scored item: the scores are those of
        what is present, and the overall is not comparable with a complete report's."""
        return bool(self.missing_datasets)


def coverage_gaps(
    present: Iterable[DatasetScore], coverage: Mapping[str, str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(missing datasets, missing dimensions), each sorted: the datasets of ``coverage``
    (dataset -> dimension) with no score among ``present``, and the dimensions none of whose
    datasets has one. A present dataset the coverage does not name changes nothing."""
    scored = list(present)
    datasets = tuple(sorted(set(coverage) - {d.dataset for d in scored}))
    dimensions = {coverage[name] for name in datasets} - {d.dimension for d in scored}
    return datasets, tuple(sorted(dimensions))


def _mean(values: Sequence[float]) -> float:
    # fsum is exactly rounded, so the result does not depend on the order items arrived in.
    return math.fsum(values) / len(values)


def _unique_items(items: Iterable[ScoredItem]) -> list[ScoredItem]:
    by_id: dict[str, ScoredItem] = {}
    for item in items:
        seen = by_id.setdefault(item.item_id, item)
        if seen is not item and seen != item:
            raise ConflictingScores(f"item {item.item_id!r} reported twice: {seen} vs {item}")
    return [by_id[item_id] for item_id in sorted(by_id)]


def _dataset_score(dataset: str, items: Sequence[ScoredItem], rule: DatasetRule) -> DatasetScore:
    dimensions = sorted({item.dimension for item in items})
    if len(dimensions) != 1:
        raise ValueError(f"dataset {dataset!r} has items in several dimensions: {dimensions}")
    scores = pooled_scores([item.score for item in items], [item.pooled for item in items])
    if rule is DatasetRule.MEAN:
        units = scores
    else:
        groups: dict[str, list[float]] = defaultdict(list)
        for item, score in zip(items, scores, strict=True):
            groups[item.group_id].append(score)
        units = [min(group) for _, group in sorted(groups.items())]
    f1 = dataset_f1([item.pooled for item in items])
    return DatasetScore(
        dataset=dataset,
        dimension=dimensions[0],
        score=100.0 * _mean(units),
        n_items=len(items),
        n_units=len(units),
        item_mean=100.0 * _mean([item.score for item in items]),
        pooled_f1=None if f1 is None else 100.0 * f1,
    )


def build_report(
    items: Iterable[ScoredItem],
    rules: Mapping[str, str] | None = None,
    coverage: Mapping[str, str] | None = None,
) -> Report:
    """Aggregates item scores the way the MedBench leaderboard does.

    Args:
        items: scored items; an item_id repeated with identical content counts once.
        rules: dataset name -> DatasetRule value; datasets not named use "mean".
        coverage: dataset -> dimension of every dataset the report should cover (the track's);
            those without a scored item make the report partial. None or empty: not checked.

    Raises:
        ValueError: no items, an unknown rule, or a dataset spread over several dimensions.
        ConflictingScores: an item_id repeated with different content.
    """
    unique = _unique_items(items)
    if not unique:
        raise ValueError("cannot build a report from no items")
    rule_of = {dataset: DatasetRule(rule) for dataset, rule in (rules or {}).items()}
    by_dataset: dict[str, list[ScoredItem]] = defaultdict(list)
    for item in unique:
        by_dataset[item.dataset].append(item)
    datasets = tuple(
        _dataset_score(name, by_dataset[name], rule_of.get(name, DatasetRule.MEAN))
        for name in sorted(by_dataset)
    )
    by_dimension: dict[str, list[float]] = defaultdict(list)
    for dataset in datasets:
        by_dimension[dataset.dimension].append(dataset.score)
    dimensions = tuple(
        DimensionScore(dimension=name, score=_mean(scores), n_datasets=len(scores))
        for name, scores in sorted(by_dimension.items())
    )
    missing_datasets, missing_dimensions = coverage_gaps(datasets, coverage or {})
    return Report(
        datasets=datasets,
        dimensions=dimensions,
        overall=_mean([dimension.score for dimension in dimensions]),
        missing_datasets=missing_datasets,
        missing_dimensions=missing_dimensions,
    )


def merge(scores: Sequence[float], rule: str = "mean") -> float:
    """An item's score from its component scores: "mean" (default) or "min"."""
    if not scores:
        raise ValueError("no component scores to merge")
    if rule == "mean":
        return math.fsum(scores) / len(scores)
    if rule == "min":
        return min(scores)
    raise ValueError(f"unknown merge rule {rule!r}")
