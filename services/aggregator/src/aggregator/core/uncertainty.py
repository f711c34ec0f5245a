"""Uncertainty for reports and leaderboards: bootstrap intervals and rank groups (pure, no I/O).

The point estimates are the leaderboard arithmetic of ``report.py`` (dataset = 100 x mean of its
scoring units, dimension = unweighted mean of its datasets, overall = unweighted mean of the
dimensions); the intervals come from a stratified bootstrap that also propagates the
disagreement of judge panels. In a micro-F1 dataset (``pooling.py``) each resample pools the
counts of the items it drew, so its statistic is the pooled F1 of the resample, as the point
estimate is the pooled F1 of the dataset.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from aggregator.core.pooling import Pooled, pooled_scores

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]


# Not frozen: a report builds one per item (700,000 for a full pool), and a frozen
# dataclass costs three times as much to construct. Treat it as immutable.
@dataclass(slots=True)
class Unit:
    """One scoring unit: an item under rule "mean", a permutation group under "all_permutations"."""

    dataset: str
    dimension: str
    score: float
    """In [0, 1]."""
    panel: tuple[float, ...] = ()
    """When the score came from a judge panel: the unit score each single judge of the panel
    would have given (already merged with the item's other components), each in [0, 1].
    Empty: no judge disagreement to propagate."""
    pooled: Pooled | None = None
    """Set for items of a micro-F1 dataset: ``score`` and ``panel`` hold the item's own F1,
    which each resample replaces with its pooled F1 (``Pooled.at``)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"unit score must lie in [0, 1], got {self.score}")
        if self.panel and not all(0.0 <= value <= 1.0 for value in self.panel):
            raise ValueError(f"panel scores must lie in [0, 1], got {self.panel}")


@dataclass(frozen=True)
class Interval:
    """A point estimate on 0-100 and its bootstrap percentile interval."""

    score: float
    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low


@dataclass(frozen=True)
class ReportIntervals:
    datasets: Mapping[str, Interval]
    """By dataset name, in name order."""
    dimensions: Mapping[str, Interval]
    """By dimension name, in name order."""
    overall: Interval
    confidence: float
    n_resamples: int


@dataclass(frozen=True)
class DatasetDraws:
    """The random draws of one dataset's bootstrap, exposed so that they can be replayed.

    In resample ``r``, position ``p`` holds unit ``units[indices[r, p]]``, which contributes
    ``units[indices[r, p]].panel[judges[r, p]]`` when it has a panel and its score otherwise;
    a pooled unit contributes that value with the resample's pooled F1 in place of its own.
    """

    dataset: str
    dimension: str
    units: tuple[Unit, ...]
    """The dataset's units in input order; ``indices`` point into this tuple."""
    indices: IndexArray
    """Shape (n_resamples, len(units))."""
    judges: IndexArray | None
    """Same shape; the judge drawn for each position (0 for units without a panel).
    None when no unit of the dataset has a panel."""


def _group_by_dataset(units: Sequence[Unit]) -> list[tuple[str, str, tuple[Unit, ...]]]:
    if not units:
        raise ValueError("cannot bootstrap a report from no units")
    by_dataset: dict[str, list[Unit]] = {}
    for unit in units:
        by_dataset.setdefault(unit.dataset, []).append(unit)
    groups = []
    for name in sorted(by_dataset):
        members = by_dataset[name]
        dimensions = sorted({unit.dimension for unit in members})
        if len(dimensions) != 1:
            raise ValueError(f"dataset {name!r} has units in several dimensions: {dimensions}")
        groups.append((name, dimensions[0], tuple(members)))
    return groups


def resample_draws(
    units: Sequence[Unit], *, n_resamples: int = 1000, seed: int = 0
) -> tuple[DatasetDraws, ...]:
    """The draws ``bootstrap_report`` makes for these arguments, one entry per dataset by name.

    Unit indices come from one generator and judge draws from an independent one (both
    spawned from ``seed``), so giving units panels never changes which units are resampled.
    A judge is drawn for every resampled position, so a unit drawn twice in a resample may
    contribute two different judges.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    index_seed, judge_seed = np.random.SeedSequence(seed).spawn(2)
    index_rng = np.random.default_rng(index_seed)
    judge_rng = np.random.default_rng(judge_seed)
    draws = []
    for name, dimension, members in _group_by_dataset(units):
        size = len(members)
        indices = index_rng.integers(0, size, size=(n_resamples, size), dtype=np.intp)
        judges: IndexArray | None = None
        if any(unit.panel for unit in members):
            panel_sizes = np.fromiter(
                (max(len(unit.panel), 1) for unit in members), dtype=np.float64, count=size
            )
            # floor(u * k) with u in [0, 1) is uniform on 0 .. k-1.
            uniform = judge_rng.random((n_resamples, size))
            judges = (uniform * panel_sizes[indices]).astype(np.intp)
        draws.append(DatasetDraws(name, dimension, members, indices, judges))
    return tuple(draws)


def _unit_values(members: Sequence[Unit]) -> tuple[FloatArray, int]:
    """A (len(members), width) table of each unit's panel scores (its score when it has none)."""
    width = max(max(len(unit.panel), 1) for unit in members)
    table = np.empty((len(members), width), dtype=np.float64)
    table[:, 0] = [unit.score for unit in members]
    for row, unit in enumerate(members):
        if unit.panel:
            table[row, : len(unit.panel)] = unit.panel
    return table, width


def _resampled_means(draws: DatasetDraws) -> FloatArray:
    """Mean unit score of each resample of one dataset, on 0-1; shape (n_resamples,)."""
    table, width = _unit_values(draws.units)
    size = len(draws.units)
    if draws.judges is None:
        values = table[:, 0][draws.indices]
    else:
        values = table.ravel()[draws.indices * width + draws.judges]
    if any(unit.pooled is not None for unit in draws.units):
        values = _pooled_values(draws.units, draws.indices, values)
    means: FloatArray = values.sum(axis=1) / size
    return means


def _pooled_values(units: Sequence[Unit], indices: IndexArray, values: FloatArray) -> FloatArray:
    """The drawn values with each resample's pooled F1 (over the counts it drew) in place of
    the pooled units' own F1: ``Pooled.at``, vectorised."""
    pooled = [unit.pooled for unit in units]
    counts = np.array([(p.tp, p.fp, p.fn) if p else (0, 0, 0) for p in pooled], dtype=np.int64)
    tp, fp, fn = (counts[:, k][indices].sum(axis=1) for k in range(3))
    denominator = 2 * tp + fp + fn
    f1 = np.where(denominator == 0, 1.0, 2 * tp / np.maximum(denominator, 1))[:, None]
    is_pooled = np.array([p is not None for p in pooled])[indices]
    own = np.array([p.own if p else 0.0 for p in pooled])[indices]
    share = np.array([p.share if p else 0.0 for p in pooled])[indices]
    has_cap = np.array([p is not None and p.cap is not None for p in pooled])[indices]
    cap = np.array([p.cap if p and p.cap is not None else 1.0 for p in pooled])[indices]
    shifted = np.clip(values + share * (f1 - own), 0.0, 1.0)
    adjusted = np.where(has_cap, np.minimum(f1, cap), shifted)
    out: FloatArray = np.where(is_pooled, adjusted, values)
    return out


EXACT_LIMIT = 2000
"""Datasets up to this many units are resampled unit by unit (``resample_draws``, replayable);
larger ones by the equivalent draw over distinct unit values (``_large_resampled_means``),
whose memory does not grow with the dataset."""


def _large_resampled_means(
    members: Sequence[Unit], n_resamples: int, rng: np.random.Generator
) -> FloatArray:
    """Resample means of a large dataset, drawn over its distinct (score, panel) values.

    Resampling n units with replacement only matters through how often each distinct value
    is drawn, which is Multinomial(n, share of each value); a value with a panel of k judges
    then splits its count over the judges by Multinomial(count, 1/k each). The same
    distribution as unit-by-unit resampling, in O(resamples x distinct values) time and memory.
    """
    kinds: dict[tuple[float, tuple[float, ...]], int] = {}
    for unit in members:
        key = (unit.score, unit.panel)
        kinds[key] = kinds.get(key, 0) + 1
    size = len(members)
    keys = list(kinds)
    shares = np.fromiter(kinds.values(), dtype=np.float64, count=len(keys)) / size
    plain = np.array([score if not panel else 0.0 for score, panel in keys])
    paneled = [(column, panel) for column, (_, panel) in enumerate(keys) if panel]
    totals = np.empty(n_resamples)
    # Rows in chunks, so the count matrix stays small even when every value is distinct.
    rows = max(1, 4_000_000 // len(keys))
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        counts = rng.multinomial(size, shares, size=stop - start)
        chunk = counts @ plain
        for column, panel in paneled:
            per_judge = rng.multinomial(counts[:, column], [1.0 / len(panel)] * len(panel))
            chunk += per_judge @ np.asarray(panel, dtype=np.float64)
        totals[start:stop] = chunk
    means: FloatArray = totals / size
    return means


def _fmean(values: Sequence[float]) -> float:
    # As report.py: fsum is exactly rounded, so the point estimates equal its scores bit for bit.
    return math.fsum(values) / len(values)


def bootstrap_report(
    units: Sequence[Unit], *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> ReportIntervals:
    """Point estimates and percentile bootstrap intervals (0-100) for a report.

    Each resample draws, within every dataset, as many units as it has, with replacement
    (stratified, so datasets keep their sizes and their equal weight); every resampled unit
    with a panel contributes the score of one of its judges drawn uniformly, so a panel that
    disagrees widens the intervals and one that agrees changes nothing. Dataset, dimension and
    overall scores of each resample are computed with the leaderboard arithmetic, and the
    interval is their (1 - confidence) / 2 and (1 + confidence) / 2 quantiles (numpy "linear").
    Deterministic for a given seed and unit order; the draws are those of ``resample_draws``.

    When a panel's judges do not average to the unit's score (e.g. a majority vote), the
    interval is centred on the panel, not necessarily on the point estimate.

    Raises:
        ValueError: no units, a dataset spread over several dimensions, n_resamples < 1 or a
            confidence outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    groups = _group_by_dataset(units)
    # Pooled datasets go unit by unit whatever their size: the pooled F1 of a resample depends
    # on which items it drew, not only on how many of each value.
    exact = {
        name
        for name, _, members in groups
        if len(members) <= EXACT_LIMIT or any(u.pooled is not None for u in members)
    }
    small = [u for name, _, members in groups if name in exact for u in members]
    draws = resample_draws(small, n_resamples=n_resamples, seed=seed) if small else ()
    large_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])

    dataset_scores = {
        name: 100.0 * _fmean(pooled_scores([u.score for u in members], [u.pooled for u in members]))
        for name, _, members in groups
    }
    dataset_samples = {d.dataset: 100.0 * _resampled_means(d) for d in draws}
    for name, _, members in groups:
        if name not in exact:
            dataset_samples[name] = 100.0 * _large_resampled_means(members, n_resamples, large_rng)
    dataset_samples = {name: dataset_samples[name] for name, _, _ in groups}
    datasets_of: dict[str, list[str]] = {}
    for name, dimension, _ in groups:
        datasets_of.setdefault(dimension, []).append(name)
    dimension_names = sorted(datasets_of)

    dimension_scores = {
        name: _fmean([dataset_scores[d] for d in datasets_of[name]]) for name in dimension_names
    }
    dimension_samples = {}
    for name in dimension_names:
        total = np.zeros(n_resamples)
        for dataset in datasets_of[name]:
            total = total + dataset_samples[dataset]
        dimension_samples[name] = total / len(datasets_of[name])
    overall_score = _fmean([dimension_scores[name] for name in dimension_names])
    overall_total = np.zeros(n_resamples)
    for name in dimension_names:
        overall_total = overall_total + dimension_samples[name]
    overall_samples = overall_total / len(dimension_names)

    stacked = np.vstack(
        [*dataset_samples.values(), *(dimension_samples[n] for n in dimension_names)]
        + [overall_samples]
    )
    alpha = 1.0 - confidence
    lows, highs = np.quantile(stacked, [alpha / 2, 1.0 - alpha / 2], axis=1)
    bounds = iter(zip(lows.tolist(), highs.tolist(), strict=True))

    def interval(score: float) -> Interval:
        low, high = next(bounds)
        return Interval(score=score, low=low, high=high)

    datasets = {name: interval(dataset_scores[name]) for name in dataset_samples}
    dimensions = {name: interval(dimension_scores[name]) for name in dimension_names}
    return ReportIntervals(
        datasets=datasets,
        dimensions=dimensions,
        overall=interval(overall_score),
        confidence=confidence,
        n_resamples=n_resamples,
    )


@dataclass(frozen=True)
class RankedEntry:
    name: str
    score: float
    low: float
    high: float
    rank: int
    """1 + the number of models whose whole interval lies above this one's."""
    group: int
    """1 for the best rank present, 2 for the next, ...; equal ranks share a group."""


def rank_groups(entries: Sequence[tuple[str, float, float, float]]) -> list[RankedEntry]:
    """Leaderboard ranks that only separate models whose intervals do not overlap.

    Each entry is (name, score, low, high). A model's rank is 1 + the number of models that
    are statistically better, i.e. whose interval lies entirely above its own
    (``other.low > this.high``; intervals that merely touch overlap). Models whose intervals
    overlap can therefore share a rank: three clearly separated models rank 1, 2, 3; two
    overlapping leaders both rank 1; a model overlapping both of two separated models ranks
    with the upper one, 1, since neither is entirely above it. The rank groups number the
    distinct ranks in order (group 1 holds the best rank present). Since intervals need not be
    symmetric, a higher score does not guarantee a better rank.

    Returns:
        The entries sorted by score, highest first (ties by name), with rank and group.

    Raises:
        ValueError: a repeated name, a non-finite value or low > high.
    """
    names = [entry[0] for entry in entries]
    if len(set(names)) != len(names):
        raise ValueError("model names must be unique")
    if not entries:
        return []
    numbers = np.array([entry[1:] for entry in entries], dtype=np.float64).reshape(-1, 3)
    if not np.isfinite(numbers).all():
        raise ValueError("scores and interval bounds must be finite")
    lows, highs = numbers[:, 1], numbers[:, 2]
    if (lows > highs).any():
        raise ValueError("every interval needs low <= high")
    sorted_lows = np.sort(lows)
    better = len(entries) - np.searchsorted(sorted_lows, highs, side="right")
    ranks = (1 + better).tolist()
    group_of = {rank: group for group, rank in enumerate(sorted(set(ranks)), start=1)}
    ranked = [
        RankedEntry(name, float(score), float(low), float(high), rank, group_of[rank])
        for (name, score, low, high), rank in zip(entries, ranks, strict=True)
    ]
    return sorted(ranked, key=lambda entry: (-entry.score, entry.name))


def bench(n_units: int = 10_000, n_resamples: int = 1000, panel_fraction: float = 0.0) -> float:
    """Times ``bootstrap_report`` on synthetic data (40 datasets, 5 dimensions); returns seconds.

    ``panel_fraction`` of the units get a 3-judge panel.
    """
    rng = np.random.default_rng(1)
    scores = rng.random(n_units).round(2)
    with_panel = rng.random(n_units) < panel_fraction
    panels = rng.random((n_units, 3)).round(2)
    units = [
        Unit(
            dataset=f"D{i % 40:02d}",
            dimension=f"dim{i % 40 % 5}",
            score=float(scores[i]),
            panel=tuple(panels[i].tolist()) if with_panel[i] else (),
        )
        for i in range(n_units)
    ]
    start = time.perf_counter()
    bootstrap_report(units, n_resamples=n_resamples)
    elapsed = time.perf_counter() - start
    print(
        f"bootstrap_report: {n_resamples} resamples x {n_units} units "
        f"({panel_fraction:.0%} with panels): {elapsed:.3f} s"
    )
    return elapsed


if __name__ == "__main__":
    bench()
    bench(panel_fraction=0.3)
    bench(panel_fraction=1.0)
