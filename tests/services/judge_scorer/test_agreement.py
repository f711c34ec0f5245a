"""Agreement statistics: kappa against scikit-learn, alpha against Krippendorff's examples."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import defaultdict

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.metrics import cohen_kappa_score

from judge_scorer.core.agreement import (
    KappaEstimate,
    aggregate_panel,
    bootstrap_indices,
    bootstrap_kappa_ci,
    bootstrap_kappas,
    cohen_kappa,
    krippendorff_alpha,
    pairs_against_raters,
    pairs_among_raters,
    panel_spread,
)


def noisy_copy(
    rng: np.random.Generator, n: int, k: int, agree: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Two raters on a 0..k-1 scale. The second copies the first with probability ``agree``."""
    a = rng.integers(0, k, size=n)
    b = np.where(rng.random(n) < agree, a, rng.integers(0, k, size=n))
    return a, b


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_kappa_matches_sklearn_on_random_ordinal_labels(seed: int, weights: str | None) -> None:
    rng = np.random.default_rng(seed)
    a, b = noisy_copy(rng, n=int(rng.integers(20, 300)), k=int(rng.integers(2, 8)), agree=0.5)

    ours = cohen_kappa(a, b, weights=weights)  # type: ignore[arg-type]

    assert ours == pytest.approx(cohen_kappa_score(a, b, weights=weights), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_kappa_matches_sklearn_with_an_explicit_0_to_10_scale(
    seed: int, weights: str | None
) -> None:
    rng = np.random.default_rng(100 + seed)
    a, b = noisy_copy(rng, n=80, k=7, agree=0.6)
    a, b = a + 2, b + 2  # scores 2..8 on a 0..10 scale, so both ends are never used
    scale = list(range(11))

    ours = cohen_kappa(a, b, weights=weights, labels=scale)  # type: ignore[arg-type]

    assert ours == pytest.approx(cohen_kappa_score(a, b, weights=weights, labels=scale), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_nominal_kappa_matches_sklearn_on_string_labels(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    names = np.array(["met", "unmet", "unsure"])
    a, b = noisy_copy(rng, n=150, k=3, agree=0.4)

    ours = cohen_kappa(list(names[a]), list(names[b]))

    assert ours == pytest.approx(cohen_kappa_score(names[a], names[b]), abs=1e-12)


def test_nominal_kappa_does_not_depend_on_the_order_of_labels() -> None:
    a = ["x", "y", "z", "x", "y", "x", "z"]
    b = ["x", "y", "y", "x", "z", "x", "z"]

    assert cohen_kappa(a, b, labels=["z", "x", "y"]) == pytest.approx(cohen_kappa(a, b))


def test_weighted_kappa_uses_score_distance_when_a_scale_point_is_unobserved() -> None:
    # Scores on a 0..10 scale, but only 0, 3 and 10 were given. scikit-learn weights by position
    # in the label list. Given only the observed set, it treats 0-3 and 3-10 as equally far apart.
    # Our numeric distances agree with scikit-learn once it is given the whole scale.
    a = [0, 0, 3, 10, 10, 3, 0, 3]
    b = [3, 0, 3, 10, 3, 10, 10, 0]
    full_scale = list(range(11))

    ours = cohen_kappa(a, b, weights="quadratic")

    assert ours == pytest.approx(
        cohen_kappa_score(a, b, weights="quadratic", labels=full_scale), abs=1e-12
    )
    assert ours != pytest.approx(cohen_kappa_score(a, b, weights="quadratic"), abs=1e-3)


def test_hand_worked_two_by_two_kappa() -> None:
    # Table [[20, 5], [10, 15]] of 50 items: po = 35/50 = 0.7. Rater a says "yes" 25/50 times,
    # rater b 30/50 times, so pe = 0.5*0.6 + 0.5*0.4 = 0.5. kappa = (0.7 - 0.5) / 0.5 = 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15

    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_perfect_and_opposite_agreement() -> None:
    assert cohen_kappa([1, 2, 3, 1], [1, 2, 3, 1]) == 1.0
    assert cohen_kappa([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_one_shared_category_counts_as_agreement_where_sklearn_gives_nan(
    weights: str | None,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns that the metric is undefined
        assert math.isnan(cohen_kappa_score([3, 3, 3], [3, 3, 3], weights=weights))
        assert cohen_kappa_score([3, 3], [3, 3], weights=weights, replace_undefined_by=1.0) == 1.0

    assert cohen_kappa([3, 3, 3], [3, 3, 3], weights=weights) == 1.0  # type: ignore[arg-type]
    assert cohen_kappa([3, 3], [3, 3], weights=weights, labels=[1, 2, 3]) == 1.0  # type: ignore[arg-type]


def test_raters_each_stuck_on_a_different_category_get_zero() -> None:
    # Chance disagreement is 1 here, not 0, so the ratio is defined: kappa = 1 - 1/1 = 0.
    assert cohen_kappa([1, 1, 1], [2, 2, 2]) == 0.0


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        ([1, 2], [1], {}, "differ in length"),
        ([], [], {}, "zero items"),
        ([1, 2], [1, 2], {"weights": "cubic"}, "unknown weights"),
        ([1, 5], [1, 2], {"labels": [1, 2, 3]}, "not in labels"),
        (["lo", "hi"], ["lo", "lo"], {"weights": "linear"}, "numeric labels"),
        ([1.0, float("nan")], [1.0, 2.0], {}, "NaN"),
        ([1, 2], [1, 2], {"labels": [1, 2, 2]}, "must not repeat"),
        ([1, 2], [1, 2], {"labels": []}, "must not be empty"),
        ([[1, 2]], [[1, 2]], {}, "one-dimensional"),
    ],
)
def test_kappa_rejects_bad_input(
    a: list[object], b: list[object], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        cohen_kappa(a, b, **kwargs)  # type: ignore[arg-type]


def test_bootstrap_indices_are_deterministic_and_in_range() -> None:
    first = bootstrap_indices(7, n_resamples=50, seed=11)
    again = bootstrap_indices(7, n_resamples=50, seed=11)
    other = bootstrap_indices(7, n_resamples=50, seed=12)

    assert first.shape == (50, 7)
    assert first.min() >= 0 and first.max() <= 6
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize(("n_units", "n_resamples"), [(0, 10), (5, 0)])
def test_bootstrap_indices_reject_empty_shapes(n_units: int, n_resamples: int) -> None:
    with pytest.raises(ValueError):
        bootstrap_indices(n_units, n_resamples=n_resamples, seed=0)


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    a, b = noisy_copy(np.random.default_rng(1), n=120, k=4, agree=0.6)

    first = bootstrap_kappa_ci(a, b, seed=5)
    again = bootstrap_kappa_ci(a, b, seed=5)
    other = bootstrap_kappa_ci(a, b, seed=6)

    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    assert first.kappa == other.kappa


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_vectorised_bootstrap_equals_a_loop_over_the_same_index_matrix(
    weights: str | None,
) -> None:
    a, b = noisy_copy(np.random.default_rng(2), n=40, k=5, agree=0.5)
    scale = list(range(5))
    idx = bootstrap_indices(len(a), n_resamples=200, seed=9)

    fast = bootstrap_kappas(a, b, weights=weights, n_resamples=200, seed=9)  # type: ignore[arg-type]
    slow = [cohen_kappa(a[row], b[row], weights=weights, labels=scale) for row in idx]  # type: ignore[arg-type]

    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


def test_clustered_bootstrap_equals_a_loop_that_draws_whole_items() -> None:
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 5, size=30)
    items = np.repeat(np.arange(30), sizes)
    a, b = noisy_copy(rng, n=items.size, k=2, agree=0.5)
    pairs_of = [np.flatnonzero(items == item) for item in range(30)]
    idx = bootstrap_indices(30, n_resamples=200, seed=4)

    fast = bootstrap_kappas(
        a, b, clusters=[f"item-{i:02d}" for i in items], n_resamples=200, seed=4
    )
    slow = []
    for row in idx:
        chosen = np.concatenate([pairs_of[item] for item in row])
        slow.append(cohen_kappa(a[chosen], b[chosen], labels=[0, 1]))

    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


def test_one_pair_per_cluster_is_the_plain_pair_bootstrap() -> None:
    a, b = noisy_copy(np.random.default_rng(4), n=60, k=3, agree=0.5)

    plain = bootstrap_kappas(a, b, n_resamples=100, seed=1)
    clustered = bootstrap_kappas(a, b, clusters=list(range(60)), n_resamples=100, seed=1)

    np.testing.assert_array_equal(plain, clustered)


@pytest.mark.parametrize("seed", range(5))
def test_interval_contains_the_point_estimate(seed: int) -> None:
    a, b = noisy_copy(np.random.default_rng(seed), n=100, k=3, agree=0.5)

    est = bootstrap_kappa_ci(a, b, n_resamples=500, seed=seed)

    assert est.low < est.kappa < est.high
    assert est.kappa == pytest.approx(cohen_kappa(a, b))
    assert est.n == 100


def test_interval_narrows_as_items_grow() -> None:
    rng = np.random.default_rng(8)
    small = bootstrap_kappa_ci(*noisy_copy(rng, n=50, k=3, agree=0.6), seed=1)
    large = bootstrap_kappa_ci(*noisy_copy(rng, n=2000, k=3, agree=0.6), seed=1)

    # The width shrinks like 1/sqrt(n): 40x the items should give roughly 1/6 of the width.
    assert (large.high - large.low) < 0.3 * (small.high - small.low)


def test_higher_confidence_gives_a_wider_interval() -> None:
    a, b = noisy_copy(np.random.default_rng(9), n=150, k=2, agree=0.5)

    narrow = bootstrap_kappa_ci(a, b, confidence=0.5, seed=2)
    wide = bootstrap_kappa_ci(a, b, confidence=0.99, seed=2)

    assert wide.low < narrow.low < narrow.high < wide.high


def test_kappa_estimate_is_frozen() -> None:
    est = KappaEstimate(kappa=0.5, low=0.4, high=0.6, n=10)

    with pytest.raises(dataclasses.FrozenInstanceError):
        est.kappa = 0.9  # type: ignore[misc]


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95.0])
def test_bootstrap_rejects_a_confidence_outside_zero_one(confidence: float) -> None:
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_kappa_ci([1, 2], [1, 2], confidence=confidence)


def test_bootstrap_rejects_clusters_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="clusters"):
        bootstrap_kappas([1, 2, 1], [1, 2, 2], clusters=["a", "b"])


def test_judge_is_paired_with_each_rater_label_in_order() -> None:
    judge = {"q1": "met", "q2": "unmet", "q3": "met", "extra": "met"}
    raters = {"q1": ["met", "unmet"], "q2": ["unmet"], "q3": ["met", "met", "unmet"]}

    judge_labels, rater_labels = pairs_against_raters(judge, raters)

    assert judge_labels == ["met", "met", "unmet", "met", "met", "met"]
    assert rater_labels == ["met", "unmet", "unmet", "met", "met", "unmet"]


def test_a_rated_item_without_a_judge_label_is_an_error() -> None:
    with pytest.raises(ValueError, match="no label for 1 rated item"):
        pairs_against_raters({"q1": True}, {"q1": [True], "q2": [False, True]})


def test_rater_pairs_are_ordered_and_symmetric() -> None:
    raters = {"q1": ["a", "b"], "q2": ["a", "a", "b"], "q3": ["c"]}

    first, second = pairs_among_raters(raters)

    assert len(first) == 2 * 1 + 3 * 2 + 0
    assert sorted(zip(first, second, strict=True)) == sorted(zip(second, first, strict=True))


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers x 12
# units, nominal to interval data, with missing values.
#
#   unit:  1  2  3  4  5  6  7  8  9 10 11 12
#   A:     1  2  3  3  2  1  4  1  2  .  .  .
#   B:     1  2  3  3  2  2  4  1  2  5  .  3
#   C:     .  3  3  3  2  3  4  2  2  5  1  .
#   D:     1  2  3  3  2  4  4  1  2  5  1  .
#
# Worked by hand. Unit 12 has one value and is dropped, which leaves 40 pairable values:
# n_1 = 9, n_2 = 13, n_3 = 10, n_4 = 5, n_5 = 3. Only units 2, 6 and 8 disagree. A unit with m
# values adds 1/(m - 1) per ordered pair, and all three have m = 4:
#   unit 2 {2,2,2,3}: 6 ordered (2,3)/(3,2) pairs  -> o_23 + o_32 = 6/3 = 2
#   unit 6 {1,2,3,4}: 12 ordered pairs, one per cell -> each off-diagonal o_ck += 1/3
#   unit 8 {1,1,1,2}: 6 ordered (1,2)/(2,1) pairs  -> o_12 + o_21 = 2
# alpha = 1 - (n - 1) * sum(o_ck d_ck) / sum(n_c n_k d_ck), with n - 1 = 39:
#   nominal:  sum o d = 2 + 12/3 + 2 = 8
#             sum n n d = 40^2 - (81 + 169 + 100 + 25 + 9) = 1216
#             alpha = 1 - 39 * 8 / 1216 = 0.7434
#   interval: sum o d = 2*1 + (2/3) * (1+4+9+1+4+1) + 2*1 = 52/3
#             sum n n d = 2 * 40 * sum(n_c c^2) - 2 * (sum n_c c)^2 = 2*40*306 - 2*100^2 = 4480
#             alpha = 1 - 39 * (52/3) / 4480 = 0.8491
#   ordinal:  d_ck = (n_c + ... + n_k - (n_c + n_k)/2)^2, e.g. d_12 = (22 - 11)^2 = 121,
#             d_23 = (23 - 11.5)^2 = 132.25. The other pairs of 1..4 give 506.25, 900, 361, 56.25.
#             sum o d = 2*132.25 + (2/3)*(121 + 506.25 + 900 + 132.25 + 361 + 56.25) + 2*121 = 1891
#             sum n n d = 2 * sum_{c<k} n_c n_k d_ck = 2 * 199740 = 399480
#             alpha = 1 - 39 * 1891 / 399480 = 0.8154
# These agree with the published 0.743, 0.849 and 0.815. No discrepancy needed resolving.
KRIPPENDORFF_2011: list[list[float | None]] = [
    [1, 1, None, 1],
    [2, 2, 3, 2],
    [3, 3, 3, 3],
    [3, 3, 3, 3],
    [2, 2, 2, 2],
    [1, 2, 3, 4],
    [4, 4, 4, 4],
    [1, 1, 2, 1],
    [2, 2, 2, 2],
    [None, 5, 5, 5],
    [None, None, 1, 1],
    [None, 3, None, None],
]


@pytest.mark.parametrize(
    ("level", "hand_worked", "published"),
    [
        ("nominal", 1 - 39 * 8 / 1216, 0.743),
        ("interval", 1 - 39 * (52 / 3) / 4480, 0.849),
        ("ordinal", 1 - 39 * 1891 / 399480, 0.815),
    ],
)
def test_alpha_reproduces_krippendorff_2011_worked_example(
    level: str, hand_worked: float, published: float
) -> None:
    alpha = krippendorff_alpha(KRIPPENDORFF_2011, level=level)  # type: ignore[arg-type]

    assert alpha == pytest.approx(hand_worked, abs=1e-12)
    assert round(alpha, 3) == published


def test_alpha_reproduces_krippendorff_2011_binary_two_observer_example() -> None:
    # Section A: 10 units and 2 observers. Of the 20 values, 14 are 0 and 6 are 1. Four units
    # disagree, so o_01 + o_10 = 8, and alpha = 1 - 19 * 8 / (2 * 14 * 6) = 0.095.
    first = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    second = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    units = [[x, y] for x, y in zip(first, second, strict=True)]

    alpha = krippendorff_alpha(units, level="nominal")

    assert alpha == pytest.approx(1 - 19 * 8 / 168, abs=1e-12)
    assert round(alpha, 3) == 0.095


def test_alpha_accepts_nan_as_missing_and_numpy_input() -> None:
    as_nan = np.array(
        [[np.nan if x is None else x for x in row] for row in KRIPPENDORFF_2011], dtype=np.float64
    )

    assert krippendorff_alpha(as_nan, level="ordinal") == pytest.approx(
        krippendorff_alpha(KRIPPENDORFF_2011, level="ordinal")
    )


def brute_force_alpha(units: list[list[float | None]], level: str) -> float:
    """Alpha built pair by pair from the definitions, as a reference for the vectorised code."""
    coincidence: dict[tuple[float, float], float] = defaultdict(float)
    for unit in units:
        values = [v for v in unit if v is not None]
        for i, x in enumerate(values):
            for j, y in enumerate(values):
                if i != j:
                    coincidence[(x, y)] += 1 / (len(values) - 1)
    n_c: dict[float, float] = defaultdict(float)
    for (x, _), count in coincidence.items():
        n_c[x] += count
    cats = sorted(n_c)
    n = sum(n_c.values())

    def d(x: float, y: float) -> float:
        if level == "nominal":
            return float(x != y)
        if level == "interval":
            return (x - y) ** 2
        lo, hi = sorted((x, y))
        between = sum(n_c[g] for g in cats if lo <= g <= hi)
        return (between - (n_c[lo] + n_c[hi]) / 2) ** 2

    observed = sum(count * d(x, y) for (x, y), count in coincidence.items())
    expected = sum(n_c[x] * n_c[y] * d(x, y) for x in cats for y in cats)
    return 1 - (n - 1) * observed / expected


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_alpha_matches_a_pair_by_pair_reference(seed: int, level: str) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, 6, size=(25, 1))
    ratings = np.where(rng.random((25, 4)) < 0.6, truth, rng.integers(1, 6, size=(25, 4)))
    missing = rng.random((25, 4)) < 0.25
    units = [
        [None if gone else float(v) for v, gone in zip(r, m, strict=True)]
        for r, m in zip(ratings, missing, strict=True)
    ]

    assert krippendorff_alpha(units, level=level) == pytest.approx(  # type: ignore[arg-type]
        brute_force_alpha(units, level), abs=1e-12
    )


def test_alpha_is_invariant_to_the_transforms_its_level_allows() -> None:
    data = np.array(
        [[np.nan if x is None else x for x in row] for row in KRIPPENDORFF_2011], dtype=np.float64
    )

    assert krippendorff_alpha(3 * data - 7, level="interval") == pytest.approx(
        krippendorff_alpha(data, level="interval")
    )
    assert krippendorff_alpha(np.exp(data), level="ordinal") == pytest.approx(
        krippendorff_alpha(data, level="ordinal")
    )
    relabelled = np.choose(np.nan_to_num(data, nan=0).astype(int), [np.nan, 40, 10, 50, 20, 30])
    assert krippendorff_alpha(relabelled, level="nominal") == pytest.approx(
        krippendorff_alpha(data, level="nominal")
    )
    assert krippendorff_alpha(np.exp(data), level="interval") != pytest.approx(
        krippendorff_alpha(data, level="interval")
    )


def test_units_with_one_rating_are_dropped() -> None:
    base: list[list[float | None]] = [[1, 1, 2], [2, 2, 2], [3, 1, None]]

    with_singletons: list[list[float | None]] = [*base, [5, None, None], [None, None, None]]

    assert krippendorff_alpha(with_singletons) == krippendorff_alpha(base)


def test_alpha_is_one_for_perfect_and_for_constant_data() -> None:
    assert krippendorff_alpha([[1, 1], [2, 2], [3, 3]], level="nominal") == 1.0
    assert krippendorff_alpha([[4, 4, None], [4, 4, 4]], level="interval") == 1.0


@pytest.mark.parametrize(
    ("units", "level", "message"),
    [
        ([[1, 2]], "ratio", "unknown level"),
        ([[1, None], [None, 2]], "nominal", "at least two ratings"),
        ([], "nominal", "at least two ratings"),
        ([[1, 2], [1]], "nominal", "one entry per rater"),
    ],
)
def test_alpha_rejects_bad_input(units: list[list[float | None]], level: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        krippendorff_alpha(units, level=level)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("scores", "rule", "expected"),
    [
        ([7, 8, 9], "mean", 8.0),
        ([1, 2, 10], "median", 2.0),
        ([1, 2, 9, 10], "median", 5.5),
        ([3, 5, 5, 4], "majority", 5.0),
        ([8, 6, 8, 6], "majority", 6.0),  # a tie goes to the lower score
        ([9, 2, 7], "majority", 2.0),  # all tied at one vote each
        ([4.5], "majority", 4.5),
    ],
)
def test_panel_rules(scores: list[float], rule: str, expected: float) -> None:
    assert aggregate_panel(scores, rule) == pytest.approx(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("scores", "rule", "message"),
    [
        ([], "mean", "at least one score"),
        ([1.0, float("nan")], "median", "finite"),
        ([1.0, 2.0], "mode", "unknown panel rule"),
    ],
)
def test_panel_rejects_bad_input(scores: list[float], rule: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        aggregate_panel(scores, rule)  # type: ignore[arg-type]


def test_panel_spread_is_max_minus_min() -> None:
    assert panel_spread([6, 9, 7]) == 3.0
    assert panel_spread([5]) == 0.0
    with pytest.raises(ValueError):
        panel_spread([])
