"""Tests for the bootstrap intervals and rank groups of the aggregator."""

from __future__ import annotations

import random

import numpy as np
import pytest

from aggregator.core import uncertainty
from aggregator.core.report import ScoredItem, build_report
from aggregator.core.uncertainty import (
    Interval,
    RankedEntry,
    ReportIntervals,
    Unit,
    bootstrap_report,
    rank_groups,
    resample_draws,
)


def _random_units(seed: int, n: int = 300) -> list[Unit]:
    rng = random.Random(seed)
    datasets = {f"D{i}": f"dim{i % 3}" for i in range(7)}
    units = []
    for _ in range(n):
        dataset = rng.choice(sorted(datasets))
        units.append(Unit(dataset, datasets[dataset], rng.random()))
    return units


def _dyadic_units() -> list[Unit]:
    """Scores and panels in multiples of 1/8, so every sum is exact whatever its order."""
    rng = random.Random(7)
    layout = {"A": ("x", 9), "B": ("x", 4), "C": ("y", 6), "D": ("z", 1), "E": ("z", 5)}
    units = []
    for dataset, (dimension, size) in layout.items():
        for _ in range(size):
            panel: tuple[float, ...] = ()
            if rng.random() < 0.5:
                panel = tuple(rng.randrange(9) / 8 for _ in range(rng.choice([1, 2, 3, 5])))
            units.append(Unit(dataset, dimension, rng.randrange(9) / 8, panel))
    rng.shuffle(units)
    return units


def _reference_bootstrap(
    units: list[Unit], n_resamples: int, confidence: float, seed: int
) -> dict[str, tuple[float, float]]:
    """A slow, loop-by-loop bootstrap over the same draws as bootstrap_report."""
    draws = resample_draws(units, n_resamples=n_resamples, seed=seed)
    samples: dict[str, list[float]] = {}
    for r in range(n_resamples):
        dataset_score = {}
        for d in draws:
            total = 0.0
            for p in range(len(d.units)):
                unit = d.units[int(d.indices[r, p])]
                if unit.panel:
                    assert d.judges is not None
                    total += unit.panel[int(d.judges[r, p])]
                else:
                    total += unit.score
            dataset_score[d.dataset] = 100.0 * (total / len(d.units))
        dimension_score = {}
        for dimension in sorted({d.dimension for d in draws}):
            members = [d.dataset for d in draws if d.dimension == dimension]
            acc = 0.0
            for dataset in members:
                acc += dataset_score[dataset]
            dimension_score[dimension] = acc / len(members)
        acc = 0.0
        for score in dimension_score.values():
            acc += score
        for name, value in [*dataset_score.items(), *dimension_score.items()]:
            samples.setdefault(name, []).append(value)
        samples.setdefault("overall", []).append(acc / len(dimension_score))
    alpha = 1.0 - confidence
    return {
        name: tuple(np.quantile(np.array(values), [alpha / 2, 1 - alpha / 2]).tolist())
        for name, values in samples.items()
    }


def _widths(result: ReportIntervals) -> list[float]:
    return [
        *(i.width for i in result.datasets.values()),
        *(i.width for i in result.dimensions.values()),
        result.overall.width,
    ]


def test_point_estimates_equal_the_report() -> None:
    units = _random_units(1)
    items = [
        ScoredItem(f"i{n}", unit.dataset, unit.dimension, f"i{n}", unit.score)
        for n, unit in enumerate(units)
    ]
    report = build_report(items, {name: "mean" for name in {unit.dataset for unit in units}})
    result = bootstrap_report(units, n_resamples=50)
    assert [(d.dataset, d.score) for d in report.datasets] == [
        (name, interval.score) for name, interval in result.datasets.items()
    ]
    assert [(d.dimension, d.score) for d in report.dimensions] == [
        (name, interval.score) for name, interval in result.dimensions.items()
    ]
    assert result.overall.score == report.overall


def test_intervals_match_a_loop_by_loop_reference_on_the_same_draws() -> None:
    units = _dyadic_units()
    result = bootstrap_report(units, n_resamples=200, confidence=0.9, seed=11)
    reference = _reference_bootstrap(units, n_resamples=200, confidence=0.9, seed=11)
    got = {
        **{name: (i.low, i.high) for name, i in result.datasets.items()},
        **{name: (i.low, i.high) for name, i in result.dimensions.items()},
        "overall": (result.overall.low, result.overall.high),
    }
    assert got == reference
    assert result.confidence == 0.9
    assert result.n_resamples == 200


def test_draws_are_deterministic_and_judges_stay_within_each_panel() -> None:
    units = _dyadic_units()
    first = resample_draws(units, n_resamples=100, seed=3)
    second = resample_draws(units, n_resamples=100, seed=3)
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a.indices, b.indices)
        assert (a.judges is None and b.judges is None) or np.array_equal(a.judges, b.judges)
        assert a.indices.shape == (100, len(a.units))
        if a.judges is not None:
            sizes = np.array([max(len(u.panel), 1) for u in a.units])
            assert ((a.judges >= 0) & (a.judges < sizes[a.indices])).all()
    assert bootstrap_report(units, seed=3) == bootstrap_report(units, seed=3)
    assert bootstrap_report(units, seed=3) != bootstrap_report(units, seed=4)


def test_giving_units_panels_does_not_change_which_units_are_resampled() -> None:
    plain = [Unit("D", "d", s / 8) for s in range(9)]
    paneled = [Unit(u.dataset, u.dimension, u.score, (0.0, 1.0)) for u in plain]
    (a,) = resample_draws(plain, n_resamples=50, seed=5)
    (b,) = resample_draws(paneled, n_resamples=50, seed=5)
    assert a.judges is None and b.judges is not None
    assert np.array_equal(a.indices, b.indices)


def test_the_95_percent_interval_covers_the_true_rate_about_95_percent_of_the_time() -> None:
    # 200 datasets of 150 Bernoulli(0.3) units: the stratified bootstrap treats each as an
    # independent repetition.
    rng = np.random.default_rng(2024)
    p = 0.3
    outcomes = rng.random((200, 150)) < p
    units = [
        Unit(f"rep{r:03d}", "dim", float(outcomes[r, i]))
        for r in range(outcomes.shape[0])
        for i in range(outcomes.shape[1])
    ]
    result = bootstrap_report(units, n_resamples=1000, seed=1)
    covered = sum(i.low <= 100 * p <= i.high for i in result.datasets.values())
    assert 0.90 <= covered / 200 <= 0.98


def test_an_agreeing_panel_changes_nothing() -> None:
    units = _random_units(2, n=200)
    agreeing = [Unit(u.dataset, u.dimension, u.score, (u.score,) * 3) for u in units]
    assert bootstrap_report(agreeing, seed=9) == bootstrap_report(units, seed=9)


def test_a_disagreeing_panel_widens_every_interval() -> None:
    rng = random.Random(3)
    plain, disagreeing = [], []
    for dataset, dimension in [("A", "x"), ("B", "x"), ("C", "y")]:
        for _ in range(40):
            score = rng.choice([0.25, 0.75])
            plain.append(Unit(dataset, dimension, score))
            disagreeing.append(Unit(dataset, dimension, score, (score - 0.25, score + 0.25)))
    narrow, wide = bootstrap_report(plain, seed=2), bootstrap_report(disagreeing, seed=2)
    assert narrow.overall.score == wide.overall.score
    for a, b in zip(_widths(narrow), _widths(wide), strict=True):
        assert b > a


def test_a_disagreeing_panel_gives_width_to_units_that_all_agree_on_the_score() -> None:
    plain = [Unit("D", "d", 0.5) for _ in range(30)]
    paneled = [Unit("D", "d", 0.5, (0.0, 1.0)) for _ in range(30)]
    assert bootstrap_report(plain).datasets["D"].width == 0.0
    assert bootstrap_report(paneled).datasets["D"].width > 10.0


def test_intervals_narrow_as_datasets_grow() -> None:
    widths = []
    for n in (25, 100, 400, 1600):
        units = [Unit("D", "d", 1.0 if i % 5 < 2 else 0.0) for i in range(n)]
        interval = bootstrap_report(units, seed=0).datasets["D"]
        assert interval.score == pytest.approx(40.0)
        assert interval.low < 40.0 < interval.high
        widths.append(interval.width)
    assert widths == sorted(widths, reverse=True)
    assert widths[0] > 3 * widths[-1]


def test_a_single_unit_dataset_has_a_zero_width_interval() -> None:
    units = [Unit("solo", "d", 0.7), *(Unit("D", "d", s / 10) for s in range(11))]
    result = bootstrap_report(units)
    assert result.datasets["solo"] == Interval(score=70.0, low=70.0, high=70.0)
    assert result.datasets["D"].width > 0


def test_invalid_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="no units"):
        bootstrap_report([])
    with pytest.raises(ValueError, match="several dimensions"):
        bootstrap_report([Unit("D", "x", 1.0), Unit("D", "y", 0.0)])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_report([Unit("D", "x", 1.0)], confidence=1.0)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_report([Unit("D", "x", 1.0)], n_resamples=0)
    with pytest.raises(ValueError, match="score"):
        Unit("D", "x", 1.5)
    with pytest.raises(ValueError, match="panel"):
        Unit("D", "x", 0.5, (0.5, -0.1))


def _ranks(entries: list[tuple[str, float, float, float]]) -> list[tuple[str, int, int]]:
    return [(e.name, e.rank, e.group) for e in rank_groups(entries)]


def test_clearly_separated_models_rank_one_two_three() -> None:
    entries = [("c", 50.0, 45.0, 55.0), ("a", 90.0, 85.0, 95.0), ("b", 70.0, 65.0, 75.0)]
    assert _ranks(entries) == [("a", 1, 1), ("b", 2, 2), ("c", 3, 3)]
    assert rank_groups(entries)[0] == RankedEntry("a", 90.0, 85.0, 95.0, rank=1, group=1)


def test_overlapping_pairs_share_a_rank() -> None:
    entries = [
        ("a", 90.0, 86.0, 94.0),
        ("b", 88.0, 84.0, 92.0),
        ("c", 70.0, 66.0, 74.0),
        ("d", 69.0, 65.0, 73.0),
    ]
    assert _ranks(entries) == [("a", 1, 1), ("b", 1, 1), ("c", 3, 2), ("d", 3, 2)]


def test_a_model_overlapping_two_separated_models_ranks_with_the_upper_one() -> None:
    entries = [("a", 92.0, 90.0, 95.0), ("m", 82.0, 74.0, 91.0), ("b", 72.0, 70.0, 75.0)]
    # Nobody lies entirely above m; a lies entirely above b, m does not.
    assert _ranks(entries) == [("a", 1, 1), ("m", 1, 1), ("b", 2, 2)]


def test_touching_intervals_overlap_and_equal_scores_sort_by_name() -> None:
    entries = [("b", 80.0, 75.0, 85.0), ("a", 80.0, 75.0, 85.0), ("c", 60.0, 55.0, 75.0)]
    assert _ranks(entries) == [("a", 1, 1), ("b", 1, 1), ("c", 1, 1)]
    entries[2] = ("c", 60.0, 55.0, 74.9)
    assert _ranks(entries) == [("a", 1, 1), ("b", 1, 1), ("c", 3, 2)]


def test_rank_groups_handles_edge_cases() -> None:
    assert rank_groups([]) == []
    assert _ranks([("only", 50.0, 50.0, 50.0)]) == [("only", 1, 1)]
    with pytest.raises(ValueError, match="unique"):
        rank_groups([("a", 1.0, 0.0, 2.0), ("a", 1.0, 0.0, 2.0)])
    with pytest.raises(ValueError, match="low <= high"):
        rank_groups([("a", 1.0, 2.0, 0.0)])
    with pytest.raises(ValueError, match="finite"):
        rank_groups([("a", float("nan"), 0.0, 2.0)])


def test_rank_groups_on_bootstrapped_intervals() -> None:
    rng = np.random.default_rng(5)
    entries = []
    for name, p in [("strong", 0.9), ("twin-1", 0.6), ("twin-2", 0.6), ("weak", 0.2)]:
        units = [Unit("D", "d", float(x)) for x in rng.random(300) < p]
        overall = bootstrap_report(units, seed=1).overall
        entries.append((name, overall.score, overall.low, overall.high))
    ranked = {e.name: e.rank for e in rank_groups(entries)}
    assert ranked["strong"] == 1
    assert ranked["twin-1"] == ranked["twin-2"] == 2
    assert ranked["weak"] == 4


def _big(n: int, with_panel: bool) -> list[Unit]:
    rng = random.Random(7)
    units = []
    for i in range(n):
        score = float(rng.random() < 0.3)
        panel = (score, 1.0 - score) if with_panel and i % 4 == 0 else ()
        units.append(Unit("Big", "dim", score, panel))
    return units


@pytest.mark.parametrize("with_panel", [False, True])
def test_large_datasets_draw_over_distinct_values_with_the_same_distribution(
    with_panel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    units = _big(12_000, with_panel)
    fast = bootstrap_report(units, n_resamples=2000).datasets["Big"]
    monkeypatch.setattr(uncertainty, "EXACT_LIMIT", 10**9)
    exact = bootstrap_report(units, n_resamples=2000).datasets["Big"]
    assert fast.score == exact.score
    assert fast.low == pytest.approx(exact.low, abs=0.15)
    assert fast.high == pytest.approx(exact.high, abs=0.15)
    assert fast.width == pytest.approx(exact.width, rel=0.1)


def test_a_disagreeing_panel_widens_a_large_dataset_too() -> None:
    plain = bootstrap_report(_big(12_000, False)).datasets["Big"]
    paneled = bootstrap_report(_big(12_000, True)).datasets["Big"]
    assert paneled.width > plain.width
