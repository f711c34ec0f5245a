"""Agreement statistics for judge calibration: Cohen's kappa, Krippendorff's alpha, panel rules.

Two conventions differ from scikit-learn's ``cohen_kappa_score`` on purpose; both are pinned by
tests:

* When kappa (or alpha) is 0/0, we return 1.0. scikit-learn returns nan here, the default of
  its ``replace_undefined_by``. This happens only when both raters put every item in the same
  single category. The observed disagreement is then 0 too, so "they agree on everything" is the
  honest summary. A nan would spread through dashboards and thresholds.
* Linear and quadratic weights use the numeric distance between labels. scikit-learn uses their
  position in the label list. The two agree whenever the categories are evenly spaced, such as
  the usual 0..10 or 1..5 scales when every point is listed or observed. Ours stays right when a
  scale point is never observed.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

Weights = Literal["linear", "quadratic"]
Level = Literal["nominal", "ordinal", "interval"]
PanelRule = Literal["mean", "median", "majority"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

K = TypeVar("K", bound=Hashable)
L = TypeVar("L")

_NUMERIC_KINDS = "biuf"


@dataclass(frozen=True)
class KappaEstimate:
    """Cohen's kappa with a percentile-bootstrap confidence interval."""

    kappa: float
    low: float
    """Lower bound of the interval (the ``(1 - confidence) / 2`` bootstrap quantile)."""
    high: float
    """Upper bound of the interval (the ``(1 + confidence) / 2`` bootstrap quantile)."""
    n: int
    """Number of rated pairs the point estimate uses."""


def cohen_kappa(
    a: Sequence[Hashable] | npt.ArrayLike,
    b: Sequence[Hashable] | npt.ArrayLike,
    *,
    weights: Weights | None = None,
    labels: Sequence[Hashable] | npt.ArrayLike | None = None,
) -> float:
    """Cohen's kappa between two raters who labelled the same items, in the same order.

    Args:
        a: First rater's labels.
        b: Second rater's labels.
        weights: None for nominal categories. ``"linear"`` or ``"quadratic"`` for ordinal
            scales, whose labels must be numbers. Disagreement then grows with ``|x - y|`` or
            ``(x - y) ** 2``.
        labels: The category set. Defaults to the sorted union of the observed labels. Raises
            ValueError if a rating falls outside it. (scikit-learn silently drops such items.)

    Returns:
        ``1 - observed disagreement / chance disagreement``. Returns 1.0 when both raters use one
        single category throughout, because the ratio is then 0/0 (see the module docstring).

    Raises:
        ValueError: If the inputs differ in length or are empty, the weights are unknown, a
            label is missing from ``labels``, or weighted labels are not numeric.
    """
    codes_a, codes_b, disagreement = _encode(a, b, weights=weights, labels=labels)
    k = disagreement.shape[0]
    confusion = np.bincount(codes_a * k + codes_b, minlength=k * k).astype(np.float64)
    return float(_kappa_from_confusions(confusion[np.newaxis, :], disagreement)[0])


def bootstrap_indices(n_units: int, *, n_resamples: int, seed: int) -> IntArray:
    """Return the ``(n_resamples, n_units)`` resampling matrix, drawn with replacement.

    Row ``r`` lists the units that make up resample ``r``. It is deterministic for a given seed.
    """
    if n_units < 1:
        raise ValueError("cannot resample an empty set of units")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_units, size=(n_resamples, n_units), dtype=np.intp)


def bootstrap_kappas(
    a: Sequence[Hashable] | npt.ArrayLike,
    b: Sequence[Hashable] | npt.ArrayLike,
    *,
    weights: Weights | None = None,
    labels: Sequence[Hashable] | npt.ArrayLike | None = None,
    clusters: Sequence[Hashable] | npt.ArrayLike | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> FloatArray:
    """Compute the kappa of every bootstrap resample, all at once.

    The resampling units come from ``bootstrap_indices``. A unit is one pair by default. When
    ``clusters`` is given, a unit is every pair that shares a cluster id, such as all
    (judge, physician) pairs of one item. The unit's pairs are then drawn together, which keeps
    the correlation between them.

    All confusion matrices are built together in three steps. First, a bincount of the
    combined code ``resample * n_units + unit`` counts how often each unit was drawn. Next,
    that count matrix is multiplied by the unit-by-cell table of pair counts. Finally,
    ``_kappa_from_confusions`` reduces the stack. The category set is fixed from the full
    sample, so each resample is scored on the same scale as the point estimate. Cluster ids are
    numbered in sorted order. Memory grows as ``n_resamples * n_units``.
    """
    codes_a, codes_b, disagreement = _encode(a, b, weights=weights, labels=labels)
    k = disagreement.shape[0]
    unit_of_pair = _cluster_codes(clusters, len(codes_a))
    n_units = int(unit_of_pair.max()) + 1
    cells_per_unit = np.bincount(
        unit_of_pair * (k * k) + codes_a * k + codes_b, minlength=n_units * k * k
    ).reshape(n_units, k * k)

    idx = bootstrap_indices(n_units, n_resamples=n_resamples, seed=seed)
    offsets = np.arange(n_resamples, dtype=np.intp)[:, np.newaxis] * n_units
    draws = np.bincount((idx + offsets).ravel(), minlength=n_resamples * n_units).reshape(
        n_resamples, n_units
    )
    confusions = draws.astype(np.float64) @ cells_per_unit.astype(np.float64)
    return _kappa_from_confusions(confusions, disagreement)


def bootstrap_kappa_ci(
    a: Sequence[Hashable] | npt.ArrayLike,
    b: Sequence[Hashable] | npt.ArrayLike,
    *,
    weights: Weights | None = None,
    labels: Sequence[Hashable] | npt.ArrayLike | None = None,
    clusters: Sequence[Hashable] | npt.ArrayLike | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> KappaEstimate:
    """Cohen's kappa with a percentile-bootstrap interval, deterministic for a seed.

    Pass ``clusters`` (for example the item id of each pair from ``pairs_against_raters``) to
    resample whole items rather than single pairs. See ``bootstrap_kappas``.

    Raises:
        ValueError: As ``cohen_kappa``, if ``confidence`` is not strictly between 0 and 1, or
            if ``clusters`` has a different length from the pairs.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    kappa = cohen_kappa(a, b, weights=weights, labels=labels)
    samples = bootstrap_kappas(
        a,
        b,
        weights=weights,
        labels=labels,
        clusters=clusters,
        n_resamples=n_resamples,
        seed=seed,
    )
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return KappaEstimate(kappa=kappa, low=float(low), high=float(high), n=len(np.asarray(a)))


def pairs_against_raters(
    judge: Mapping[K, L], raters: Mapping[K, Sequence[L]]
) -> tuple[list[L], list[L]]:
    """Expand one judge label per item against several rater labels per item.

    This gives one ``(judge, rater)`` pair per rater label, as the HealthBench meta-eval
    reports "judge vs physicians". Pairs come in ``raters`` iteration order, then label order.
    A judge label for an item with no rater labels is ignored, because there is nothing to
    compare it with.

    Raises:
        ValueError: If the judge has no label for an item the raters labelled. An incomplete
            judge run should be filtered on purpose, not shrink the sample without notice.
    """
    missing = [item for item in raters if item not in judge]
    if missing:
        raise ValueError(
            f"judge has no label for {len(missing)} rated item(s), e.g. {missing[0]!r}"
        )
    judge_labels: list[L] = []
    rater_labels: list[L] = []
    for item, labels in raters.items():
        judge_labels.extend(judge[item] for _ in labels)
        rater_labels.extend(labels)
    return judge_labels, rater_labels


def pairs_among_raters(raters: Mapping[K, Sequence[L]]) -> tuple[list[L], list[L]]:
    """Return every ordered pair of two different raters' labels on the same item.

    An item with m labels gives m * (m - 1) pairs. The pair table is therefore symmetric, and
    kappa does not depend on which rater is called "first". HealthBench's physician-physician
    ceiling is computed this way (282 pairs over its 120 items).
    """
    first: list[L] = []
    second: list[L] = []
    for labels in raters.values():
        for i, x in enumerate(labels):
            for j, y in enumerate(labels):
                if i != j:
                    first.append(x)
                    second.append(y)
    return first, second


def krippendorff_alpha(
    units: Sequence[Sequence[float | None]] | FloatArray, *, level: Level = "interval"
) -> float:
    """Krippendorff's alpha for any number of raters, with missing ratings allowed.

    Args:
        units: Ratings matrix with one row per unit and one column per rater. None or NaN
            marks a missing rating. Units with fewer than two ratings cannot be paired and are
            dropped.
        level: Metric of the difference function: ``"nominal"``, ``"ordinal"`` (ranks, as in
            Krippendorff 2011) or ``"interval"``.

    Returns:
        ``1 - (n - 1) * sum(o_ck * d_ck) / sum(n_c * n_k * d_ck)``. Here ``o`` is the
        coincidence matrix, ``n_c`` its marginals and ``d`` the squared difference at
        ``level``. Returns 1.0 when all pairable values are equal (0/0, as for kappa).

    Raises:
        ValueError: If the level is unknown or no unit has two ratings.
    """
    if level not in ("nominal", "ordinal", "interval"):
        raise ValueError(f"unknown level {level!r}; expected nominal, ordinal or interval")
    ratings = _ratings_matrix(units)
    present = ~np.isnan(ratings)
    pairable = present.sum(axis=1) >= 2
    ratings, present = ratings[pairable], present[pairable]
    if ratings.shape[0] == 0:
        raise ValueError("no unit has at least two ratings")

    values, codes = np.unique(ratings[present], return_inverse=True)
    v = values.size
    unit_of_value = np.nonzero(present)[0]
    per_unit = np.bincount(unit_of_value * v + codes, minlength=ratings.shape[0] * v)
    counts = per_unit.reshape(ratings.shape[0], v).astype(np.float64)
    m = counts.sum(axis=1)

    # Each ordered pair of values within a unit adds 1 / (m_u - 1) to the coincidence matrix.
    # A value is never paired with itself, hence the diagonal correction.
    scaled = counts / (m - 1.0)[:, np.newaxis]
    coincidence = scaled.T @ counts - np.diag(scaled.sum(axis=0))
    n_c = coincidence.sum(axis=1)
    n = float(n_c.sum())

    delta = _alpha_differences(values, n_c, level)
    observed = float(np.sum(coincidence * delta))
    expected = float(n_c @ delta @ n_c)
    if expected == 0.0:
        return 1.0
    return 1.0 - (n - 1.0) * observed / expected


def aggregate_panel(scores: Sequence[float] | npt.ArrayLike, rule: PanelRule) -> float:
    """Combine a panel of judge scores for one item into one score.

    ``"majority"`` takes the most common score. A tie goes to the lowest tied score: when the
    panel is split, we would rather under-credit an answer than over-credit it.

    Raises:
        ValueError: On an empty panel, a non-finite score or an unknown rule.
    """
    panel = _panel(scores)
    if rule == "mean":
        return float(panel.mean())
    if rule == "median":
        return float(np.median(panel))
    if rule == "majority":
        values, counts = np.unique(panel, return_counts=True)
        return float(values[np.argmax(counts)])  # unique sorts ascending; argmax takes the first
    raise ValueError(f"unknown panel rule {rule!r}; expected mean, median or majority")


def panel_spread(scores: Sequence[float] | npt.ArrayLike) -> float:
    """Return the highest panel score minus the lowest (0.0 when the panel agrees)."""
    panel = _panel(scores)
    return float(panel.max() - panel.min())


def _encode(
    a: Sequence[Hashable] | npt.ArrayLike,
    b: Sequence[Hashable] | npt.ArrayLike,
    *,
    weights: Weights | None,
    labels: Sequence[Hashable] | npt.ArrayLike | None,
) -> tuple[IntArray, IntArray, FloatArray]:
    """Check two label vectors. Return their category codes and the disagreement weights."""
    if weights not in (None, "linear", "quadratic"):
        raise ValueError(f"unknown weights {weights!r}; expected None, 'linear' or 'quadratic'")
    arr_a, arr_b = _label_array(a, "a"), _label_array(b, "b")
    if arr_a.shape[0] != arr_b.shape[0]:
        raise ValueError(f"raters differ in length: {arr_a.shape[0]} vs {arr_b.shape[0]}")
    if arr_a.shape[0] == 0:
        raise ValueError("cannot compute agreement on zero items")
    observed = np.concatenate([arr_a, arr_b])
    if labels is None:
        categories = np.unique(observed)
    else:
        categories = _label_array(labels, "labels")
        if categories.shape[0] == 0:
            raise ValueError("labels must not be empty")
        if np.unique(categories).shape[0] != categories.shape[0]:
            raise ValueError("labels must not repeat")

    order = np.argsort(categories, kind="stable")
    sorted_categories = categories[order]
    positions = np.clip(np.searchsorted(sorted_categories, observed), 0, categories.shape[0] - 1)
    unknown = sorted_categories[positions] != observed
    if np.any(unknown):
        raise ValueError(f"label {observed[unknown][0].item()!r} is not in labels")
    codes = order[positions].astype(np.intp)
    n = arr_a.shape[0]
    return codes[:n], codes[n:], _kappa_disagreement(categories, weights)


def _label_array(values: Sequence[Hashable] | npt.ArrayLike, name: str) -> npt.NDArray[Any]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN; drop unrated items before computing kappa")
    return arr


def _kappa_disagreement(categories: npt.NDArray[Any], weights: Weights | None) -> FloatArray:
    k = categories.shape[0]
    if weights is None:
        return 1.0 - np.eye(k, dtype=np.float64)
    if categories.dtype.kind not in _NUMERIC_KINDS:
        raise ValueError(f"{weights} weights need numeric labels, got dtype {categories.dtype}")
    points = categories.astype(np.float64)
    distance = np.abs(points[:, np.newaxis] - points[np.newaxis, :])
    return distance if weights == "linear" else distance**2


def _kappa_from_confusions(confusions: FloatArray, disagreement: FloatArray) -> FloatArray:
    """Compute kappa for each row of a ``(R, k * k)`` stack of confusion-matrix counts."""
    k = disagreement.shape[0]
    totals = confusions.sum(axis=1)
    joint = confusions.reshape(-1, k, k) / totals[:, np.newaxis, np.newaxis]
    row, col = joint.sum(axis=2), joint.sum(axis=1)
    observed = np.einsum("rij,ij->r", joint, disagreement)
    expected = np.einsum("ri,ij,rj->r", row, disagreement, col)
    # Chance disagreement is 0 only if both raters sit in one category, where observed is 0 too.
    degenerate = expected == 0.0
    safe = np.where(degenerate, 1.0, expected)
    return np.where(degenerate, 1.0, 1.0 - observed / safe)


def _cluster_codes(clusters: Sequence[Hashable] | npt.ArrayLike | None, n_pairs: int) -> IntArray:
    if clusters is None:
        return np.arange(n_pairs, dtype=np.intp)
    ids = _label_array(clusters, "clusters")
    if ids.shape[0] != n_pairs:
        raise ValueError(f"clusters has {ids.shape[0]} entries for {n_pairs} pairs")
    _, codes = np.unique(ids, return_inverse=True)
    return codes.astype(np.intp)


def _ratings_matrix(units: Sequence[Sequence[float | None]] | FloatArray) -> FloatArray:
    rows = [[np.nan if x is None else x for x in unit] for unit in units]
    if not rows:
        raise ValueError("no unit has at least two ratings")
    if len({len(row) for row in rows}) > 1:
        raise ValueError("every unit must have one entry per rater (use None for missing)")
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)


def _alpha_differences(values: FloatArray, n_c: FloatArray, level: Level) -> FloatArray:
    """Return the squared difference ``d_ck`` between every two observed values."""
    if level == "nominal":
        return 1.0 - np.eye(values.size, dtype=np.float64)
    if level == "interval":
        return (values[:, np.newaxis] - values[np.newaxis, :]) ** 2
    # Ordinal: the distance between ranks c < k counts every value from c to k. The two end
    # categories count half each, so the distance is cum[k] - cum[c-1] - (n_c + n_k) / 2.
    cum = np.cumsum(n_c)
    below = cum - n_c
    span = cum[np.newaxis, :] - below[:, np.newaxis]
    ordinal = span - (n_c[:, np.newaxis] + n_c[np.newaxis, :]) / 2.0
    upper = np.triu(ordinal)
    return (upper + upper.T) ** 2


def _panel(scores: Sequence[float] | npt.ArrayLike) -> FloatArray:
    panel = np.asarray(scores, dtype=np.float64)
    if panel.ndim != 1 or panel.size == 0:
        raise ValueError("a panel needs at least one score")
    if not np.all(np.isfinite(panel)):
        raise ValueError("panel scores must be finite")
    return panel
