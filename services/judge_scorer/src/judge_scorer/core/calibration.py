"""The calibration gate and report: how far a judge agrees with physicians on one rubric (pure).

The gate admits a judge + rubric version for official scoring only when both hold:

* **enough evidence**: at least ``min_ratings`` physician-rated answers the judge scored, for the
  rubric and for every dimension the ratings name (``MEDBENCH_JUDGE__MIN_RATINGS``, 200);
* **agreement beyond doubt**: the *lower* bound of the 95% interval of quadratic-weighted
  Cohen's kappa is at least the threshold (``MEDBENCH_JUDGE__KAPPA_THRESHOLD``, 0.80), for the
  rubric and for every dimension the ratings name. A point estimate at the threshold is a coin
  toss of being below it; six perfect ratings have kappa 1.0 and prove nothing.

Which kappa gates: **quadratic-weighted**. Rubric scores are ordinal points (0-10 for most
rubrics), and a judge that says 7 where the physician says 8 is nearly right while one that says
0 is dangerously wrong. Unweighted kappa counts both as the same miss, so on an 11-point scale it
rates even a good judge low and cannot tell near misses from reversals; quadratic weights charge
disagreement by its squared distance, which makes the statistic the intraclass correlation of the
two raters' scores (Fleiss & Cohen 1973), the usual measure for ordinal scores (essay scoring,
HealthBench-style rubric grading). Unweighted kappa is reported beside it, with its own interval,
so exact agreement is visible too.

The interval: a **percentile bootstrap over rated answers** (clusters), 1,000 resamples by
default, seed 0. A resample draws answers with replacement and takes every rating of a drawn
answer along, so the two ratings of a double-rated answer (which share the judge's verdict) stay
together. The analytic large-sample standard error of Fleiss, Cohen & Everitt (1969) was not
chosen: it assumes independent pairs (double-rated answers are not) and a normal sampling
distribution, which fails near kappa = 1, where the gate operates (kappa is bounded by 1 and its
distribution skews); the percentile bootstrap respects the bound. The fixed seed makes the
decision a function of the ratings: the same ratings always give the same gate. The tests check
the bootstrap against the analytic interval on a large sample where both are valid, and against
HealthBench's published item-resampled interval.

The report also gives **agreement per criterion** (``criterion_agreement``): for each criterion of
the rubric, the physicians' scores of that criterion against the judge's, over the ratings where
both scored the criteria, with the same kappas and intervals. It is reported, never gated: the
overall score is what the judge is calibrated on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from judge_scorer.core.agreement import (
    KappaEstimate,
    Weights,
    bootstrap_kappa_ci,
    pairs_among_raters,
)

INTERVAL_METHOD = "percentile bootstrap over rated answers, 95%, seed 0"
GATED_ON = "quadratic"
MIN_RATINGS_SETTING = "MEDBENCH_JUDGE__MIN_RATINGS"
THRESHOLD_SETTING = "MEDBENCH_JUDGE__KAPPA_THRESHOLD"


@dataclass(frozen=True)
class RatedPair:
    """One physician rating of an answer and the judge's score of that answer, both as the
    rubric's integer points."""

    judge: int
    physician: int
    case: str
    """The rated answer (``core.ratings.rating_case``): ratings of one answer share it."""
    dimension: str = ""


@dataclass(frozen=True)
class CriterionPair:
    """One physician's score of one criterion of an answer and the judge's score of the same
    criterion, both as the rubric's integer points."""

    criterion: str
    judge: int
    physician: int
    case: str


@dataclass(frozen=True)
class PhysicianScore:
    """One physician's score of one answer (for the physician-physician ceiling)."""

    case: str
    rater_id: str
    score: int


def _estimate(
    first: Sequence[int],
    second: Sequence[int],
    clusters: Sequence[str],
    labels: Sequence[int],
    weights: Weights | None,
    n_resamples: int,
) -> KappaEstimate:
    return bootstrap_kappa_ci(
        first,
        second,
        weights=weights,
        labels=labels,
        clusters=clusters,
        n_resamples=n_resamples,
        seed=0,
    )


def _interval(estimate: KappaEstimate) -> dict[str, float]:
    return {"kappa": estimate.kappa, "low": estimate.low, "high": estimate.high}


def agreement(
    pairs: Sequence[RatedPair], labels: Sequence[int], n_resamples: int
) -> dict[str, Any]:
    """Judge-vs-physician agreement of a set of pairs: kappas with intervals, n and answers.

    ``physician`` is the first rater, ``judge`` the second (kappa is symmetric either way).
    """
    physician = [p.physician for p in pairs]
    judge = [p.judge for p in pairs]
    cases = [p.case for p in pairs]
    quadratic = _estimate(physician, judge, cases, labels, "quadratic", n_resamples)
    unweighted = _estimate(physician, judge, cases, labels, None, n_resamples)
    return {
        "n": len(pairs),
        "answers": len(set(cases)),
        "quadratic": _interval(quadratic),
        "unweighted": _interval(unweighted),
    }


def confusion(pairs: Sequence[RatedPair], labels: Sequence[int]) -> list[list[int]]:
    """Counts of (judge bin, physician bin): row i is the judge's ``labels[i]``."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for p in pairs:
        matrix[index[p.judge]][index[p.physician]] += 1
    return matrix


def physician_ceiling(
    scores: Sequence[PhysicianScore], labels: Sequence[int], n_resamples: int
) -> dict[str, Any] | None:
    """Quadratic kappa between physicians on the answers two or more of them rated (every
    ordered pair of two raters' scores, resampled by answer); None when no answer was."""
    by_case: dict[str, dict[str, int]] = defaultdict(dict)
    for s in scores:
        by_case[s.case][s.rater_id] = s.score
    double = {case: list(raters.values()) for case, raters in by_case.items() if len(raters) > 1}
    if not double:
        return None
    first, second = pairs_among_raters(double)
    clusters = [
        case for case, given in double.items() for _ in range(len(given) * (len(given) - 1))
    ]
    estimate = _estimate(first, second, clusters, labels, "quadratic", n_resamples)
    return {**_interval(estimate), "answers": len(double), "pairs": len(first)}


def criterion_agreement(
    pairs: Sequence[CriterionPair],
    names: Sequence[str],
    labels: Sequence[int],
    n_resamples: int,
) -> list[dict[str, Any]]:
    """Judge-vs-physician agreement per criterion, one entry per name in ``names`` order:
    ``{"criterion", "n", "answers"}`` and, when n > 0, ``"quadratic"`` and ``"unweighted"``
    (as ``agreement``). Pairs of criteria not in ``names`` are left out."""
    by_name: dict[str, list[RatedPair]] = defaultdict(list)
    for p in pairs:
        by_name[p.criterion].append(RatedPair(p.judge, p.physician, p.case))
    rows: list[dict[str, Any]] = []
    for name in names:
        rated = by_name.get(name, [])
        rows.append(
            {"criterion": name, **agreement(rated, labels, n_resamples)}
            if rated
            else {"criterion": name, "n": 0, "answers": 0}
        )
    return rows


def gate(
    overall: dict[str, Any],
    dimensions: Sequence[dict[str, Any]],
    *,
    min_ratings: int,
    threshold: float,
) -> tuple[bool, str]:
    """The decision and its reason in words, e.g. ``"n=6 rated answers < 200 required
    (MEDBENCH_JUDGE__MIN_RATINGS)"`` or ``"kappa lower bound 0.712 < 0.80"``.

    ``overall`` and each dimension are ``agreement`` results (a dimension also has its name
    under ``"dimension"``). Every failing condition is named, the rubric's first.
    """
    failures: list[str] = []
    # A dimension holding every pair is the rubric itself: its failures are not repeated.
    own = [d for d in dimensions if d["n"] != overall["n"]]
    for scope, result in [("", overall), *((f"dimension {d['dimension']}: ", d) for d in own)]:
        answers, low = result["answers"], result["quadratic"]["low"]
        if answers < min_ratings:
            failures.append(
                f"{scope}n={answers} rated answers < {min_ratings} required ({MIN_RATINGS_SETTING})"
            )
        if low < threshold:
            failures.append(
                f"{scope}kappa lower bound {low:.3f} < {threshold:.2f} "
                f"(quadratic kappa {result['quadratic']['kappa']:.3f}, 95% interval "
                f"[{low:.3f}, {result['quadratic']['high']:.3f}])"
            )
    if failures:
        return False, "; ".join(failures)
    names = [d["dimension"] for d in own]
    every = f" in dimensions {', '.join(names)}" if len(names) > 1 else ""
    every = f" in dimension {names[0]} too" if len(names) == 1 else every
    return True, (
        f"n={overall['answers']} rated answers >= {min_ratings} and kappa lower bound "
        f"{overall['quadratic']['low']:.3f} >= {threshold:.2f}{every}"
    )


def calibration_report(
    pairs: Sequence[RatedPair],
    physicians: Sequence[PhysicianScore],
    labels: Sequence[int],
    *,
    min_ratings: int,
    threshold: float,
    n_resamples: int = 1000,
    criteria: Sequence[CriterionPair] = (),
    criterion_names: Sequence[str] = (),
) -> dict[str, Any]:
    """Everything a calibration records (and the gate's decision), as a storable record.

    Args:
        pairs: one per physician rating the judge could score.
        criteria: one per criterion of a physician rating that scored the criteria, where the
            judge scored them too (reported per criterion, not gated).
        criterion_names: the rubric's criteria, in its order (one report row each).
        physicians: every physician rating of the rubric (the judge's failures included), for
            the physician-physician ceiling.
        labels: the rubric's integer scale points, ascending.

    Raises:
        ValueError: on no pairs (nothing to measure), or a score outside ``labels``.
    """
    if not pairs:
        raise ValueError("no rated answer was scored by the judge: nothing to measure")
    overall = agreement(pairs, labels, n_resamples)
    dimensions = []
    by_dimension: dict[str, list[RatedPair]] = defaultdict(list)
    for p in pairs:
        if p.dimension:
            by_dimension[p.dimension].append(p)
    for name in sorted(by_dimension):
        dimensions.append({"dimension": name, **agreement(by_dimension[name], labels, n_resamples)})
    for d in dimensions:
        d["passed"], _ = gate(d, [], min_ratings=min_ratings, threshold=threshold)
    calibrated, reason = gate(overall, dimensions, min_ratings=min_ratings, threshold=threshold)
    return {
        **overall,
        "dimensions": dimensions,
        "score_bins": list(labels),
        "confusion": confusion(pairs, labels),
        "physician_ceiling": physician_ceiling(physicians, labels, n_resamples),
        "criteria": criterion_agreement(criteria, criterion_names, labels, n_resamples),
        "min_ratings": min_ratings,
        "threshold": threshold,
        "gated_on": GATED_ON,
        "interval_method": f"{INTERVAL_METHOD}, {n_resamples} resamples",
        "calibrated": calibrated,
        "reason": reason,
    }
