"""Score equating across rotated test pools by concurrent Rasch calibration (pure, no I/O).

Every cycle serves a different test pool, so a raw score of 70 on a hard pool and 70 on an
easy one do not mean the same thing. Consecutive pools share anchor items; fitting one Rasch
model, P(correct) = sigmoid(theta_s - b_i), jointly on every submission and item puts all pools
on one logit scale, and a submission's *equated score* is the score it is expected to get on a
fixed reference item set: 100 * mean_i sigmoid(theta_s - b_i).

Fit: penalised joint maximum likelihood (JML with Gaussian priors, i.e. a MAP estimate), by
L-BFGS with an analytic gradient. Fractional (partial-credit) scores enter as fractional
successes, y*log(p) + (1-y)*log(1-p): a Bernoulli quasi-likelihood whose estimating equations
are those of the binary model with y replaced by its expectation.

Priors, which keep every estimate finite when a submission or an item has all scores 1 (or 0):

- theta_s ~ N(0, theta_prior_sd^2), default sd 3 logits. A submission answers hundreds of items,
  so this moves a theta by well under 1% of its distance from 0.
- b_i ~ N(mean of mu_p over the pools p holding item i, difficulty_prior_sd^2), default sd 3,
  with a free mean mu_p per pool (itself ~ N(0, 10^2), only so it stays finite). An item is
  answered by few submissions (one cycle's), so its prior weighs; centred on one global 0, the
  priors of a pool's few hundred items would add up to pull the whole pool's level toward 0 as
  hard as its anchors tie it to its neighbours, and undo the equating. Centred on the pool's
  own mean they shrink items within a pool and leave the pool's level to the anchors.

The likelihood only sees theta - b, so after the fit both are shifted so that the mean
difficulty of the reference pool's items (or of all items) is 0; equated scores do not depend on
that shift.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, sparse
from scipy.sparse import csgraph
from scipy.special import expit

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

_POOL_MEAN_PRIOR_SD = 10.0
"""Logits; only keeps the pool means finite when two pools share all their items."""


class ItemResult(NamedTuple):
    """One scored answer; a plain (submission_id, item_id, score) tuple works as well."""

    submission_id: str
    item_id: str
    score: float
    """In [0, 1]; fractional for partial credit."""


class EquatedScore(NamedTuple):
    """A submission's equated score with the ability behind it."""

    score: float
    """0-100: expected score on the reference items."""
    score_se: float
    """Delta-method standard error of score, from theta_se (item difficulties held fixed)."""
    theta: float
    """Ability in logits on the common scale."""
    theta_se: float


@dataclass(frozen=True, eq=False)
class RaschFit:
    """Parameters of a concurrent calibration; arrays are read-only and index-aligned with ids.

    Standard errors come from the diagonal of the Hessian of the penalised negative log
    likelihood: each parameter's error with the others held at their estimates. They leave out
    the linking error (uncertainty of the anchor difficulties), and for partial-credit scores,
    whose variance is below p(1-p), they are conservative.
    """

    submission_ids: tuple[str, ...]
    """Sorted."""
    item_ids: tuple[str, ...]
    """Sorted."""
    theta: FloatArray
    theta_se: FloatArray
    difficulty: FloatArray
    difficulty_se: FloatArray
    discrimination: FloatArray
    """All 1.0 for the Rasch model; fitted slopes (geometric mean 1 on the reference) for 2PL."""
    pool_of: Mapping[str, str]
    """submission_id -> pool, for the fitted submissions."""
    pool_items: Mapping[str, tuple[str, ...]]
    """pool -> sorted ids of the items its submissions answered."""
    reference_pool: str | None
    """Pool whose mean difficulty is 0 (and, for 2PL, mean log-discrimination); None: all items."""
    n_observations: int
    n_iterations: int
    converged: bool
    neg_log_posterior: float

    def thetas(self) -> dict[str, float]:
        return {sid: float(t) for sid, t in zip(self.submission_ids, self.theta, strict=True)}

    def difficulties(self) -> dict[str, float]:
        return {iid: float(b) for iid, b in zip(self.item_ids, self.difficulty, strict=True)}


def raw_scores(results: Iterable[tuple[str, str, float]]) -> dict[str, float]:
    """0-100 mean score of each submission over the items it answered."""
    totals: dict[str, list[float]] = defaultdict(list)
    for submission_id, _, score in results:
        totals[submission_id].append(float(score))
    return {sid: 100.0 * math.fsum(s) / len(s) for sid, s in sorted(totals.items())}


class _Data(NamedTuple):
    submission_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    sub: IntArray
    item: IntArray
    score: FloatArray


def _encode(results: Iterable[tuple[str, str, float]]) -> _Data:
    sids: list[str] = []
    iids: list[str] = []
    values: list[float] = []
    for submission_id, item_id, value in results:
        sids.append(submission_id)
        iids.append(item_id)
        values.append(float(value))
    if not values:
        raise ValueError("cannot fit a Rasch model to no item results")
    score = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~((score >= 0.0) & (score <= 1.0)))
    if bad.size:
        k = int(bad[0])
        raise ValueError(
            f"score of ({sids[k]!r}, {iids[k]!r}) must lie in [0, 1], got {values[k]}"
            f" ({bad.size} such rows)"
        )
    sub_names, sub = np.unique(np.asarray(sids, dtype=str), return_inverse=True)
    item_names, item = np.unique(np.asarray(iids, dtype=str), return_inverse=True)
    # A canonical row order makes the fit independent of the order results arrived in.
    order = np.lexsort((item, sub))
    sub, item, score = sub[order], item[order], score[order]
    repeated = np.flatnonzero((np.diff(sub) == 0) & (np.diff(item) == 0))
    if repeated.size:
        k = int(repeated[0])
        raise ValueError(
            f"item {str(item_names[item[k]])!r} scored twice for submission"
            f" {str(sub_names[sub[k]])!r} ({repeated.size} repeated pairs)"
        )
    return _Data(
        tuple(str(s) for s in sub_names),
        tuple(str(i) for i in item_names),
        sub.astype(np.intp),
        item.astype(np.intp),
        score,
    )


def _check_connected(data: _Data, pool_of: Mapping[str, str]) -> None:
    """Raises unless the submission-item graph is one piece: otherwise no common scale exists."""
    n_sub, n_item = len(data.submission_ids), len(data.item_ids)
    edges = sparse.coo_matrix(
        (np.ones(data.sub.size, dtype=np.int8), (data.sub, n_sub + data.item)),
        shape=(n_sub + n_item, n_sub + n_item),
    )
    n_parts, label = csgraph.connected_components(edges, directed=False)
    if n_parts == 1:
        return
    pools_by_part: dict[int, set[str]] = defaultdict(set)
    for k, sid in enumerate(data.submission_ids):
        pools_by_part[int(label[k])].add(pool_of[sid])
    groups = sorted(sorted(pools) for pools in pools_by_part.values())
    described = " | ".join("{" + ", ".join(group) + "}" for group in groups)
    raise ValueError(
        f"the pools are not linked by shared anchor items, so they have no common scale;"
        f" {n_parts} disconnected groups of pools: {described}"
    )


def _pool_items(data: _Data, pool_of: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    item_sets: dict[str, set[int]] = defaultdict(set)
    pools = np.asarray([pool_of[sid] for sid in data.submission_ids], dtype=object)[data.sub]
    for pool in sorted(set(pool_of[sid] for sid in data.submission_ids)):
        item_sets[pool].update(np.unique(data.item[pools == pool]).tolist())
    return {
        pool: tuple(data.item_ids[i] for i in sorted(items)) for pool, items in item_sets.items()
    }


def _pool_centres(data: _Data, pool_items: Mapping[str, tuple[str, ...]]) -> sparse.csr_matrix:
    """(items x pools) averaging matrix: an item's prior centre is the mean of its pools' means."""
    rows: list[int] = []
    cols: list[int] = []
    for p, pool in enumerate(sorted(pool_items)):
        rows.extend(np.searchsorted(data.item_ids, pool_items[pool]).tolist())
        cols.extend([p] * len(pool_items[pool]))
    n_pools_of = np.bincount(rows, minlength=len(data.item_ids)).astype(np.float64)
    weights = 1.0 / n_pools_of[rows]
    return sparse.csr_matrix((weights, (rows, cols)), shape=(len(data.item_ids), len(pool_items)))


def _start(data: _Data, n_sub: int, n_item: int) -> tuple[FloatArray, FloatArray]:
    """Logits of smoothed proportions: a start close to the optimum for well-targeted tests."""
    per_sub = np.bincount(data.sub, minlength=n_sub).astype(np.float64)
    per_item = np.bincount(data.item, minlength=n_item).astype(np.float64)
    p_sub = (np.bincount(data.sub, data.score, n_sub) + 0.5) / (per_sub + 1.0)
    p_item = (np.bincount(data.item, data.score, n_item) + 0.5) / (per_item + 1.0)
    difficulty = np.log((1.0 - p_item) / p_item)
    difficulty -= difficulty.mean()
    theta = (
        np.log(p_sub / (1.0 - p_sub))
        + np.bincount(data.sub, difficulty[data.item], n_sub) / per_sub
    )
    return theta, difficulty


def fit_rasch(
    results: Iterable[tuple[str, str, float]],
    pool_of: Mapping[str, str],
    *,
    reference_pool: str | None = None,
    discrimination: bool = False,
    theta_prior_sd: float = 3.0,
    difficulty_prior_sd: float = 3.0,
    log_discrimination_prior_sd: float = 0.5,
    max_iterations: int = 10_000,
    gradient_tol: float = 1e-5,
) -> RaschFit:
    """Fits one Rasch (or 2PL) model to every submission and item at once.

    Args:
        results: (submission_id, item_id, score in [0, 1]) rows, one per answered item.
        pool_of: submission_id -> the pool it answered (extra entries are ignored).
        reference_pool: the pool whose items have mean difficulty 0; None: all items.
        discrimination: fit a slope per item, P = sigmoid(a_i * (theta_s - b_i)), with
            log a_i ~ N(0, log_discrimination_prior_sd^2); the scale is then fixed by the
            reference items' geometric-mean slope being 1. Needs many submissions per item.
        theta_prior_sd: sd in logits of the Gaussian prior on abilities.
        difficulty_prior_sd: sd in logits of the Gaussian prior on difficulties.
        max_iterations: L-BFGS iteration cap.
        gradient_tol: converged when every preconditioned gradient component is below this
            (roughly the remaining error of a parameter in logits); L-BFGS is run 100 times
            tighter, or until the objective stops decreasing in floating point.

    Raises:
        ValueError: no results, a score outside [0, 1], an item scored twice for one submission,
            a submission without a pool, an unknown reference pool, or pools not linked to each
            other through shared items (the message names the disconnected groups).
    """
    data = _encode(results)
    missing = [sid for sid in data.submission_ids if sid not in pool_of]
    if missing:
        raise ValueError(f"{len(missing)} submissions have no pool, e.g. {missing[:3]}")
    _check_connected(data, pool_of)
    pool_items = _pool_items(data, pool_of)
    if reference_pool is not None and reference_pool not in pool_items:
        raise ValueError(f"reference pool {reference_pool!r} is not among {sorted(pool_items)}")
    if min(theta_prior_sd, difficulty_prior_sd, log_discrimination_prior_sd) <= 0:
        raise ValueError("prior standard deviations must be positive")

    n_sub, n_item, n_pool = len(data.submission_ids), len(data.item_ids), len(pool_items)
    sub, item, y = data.sub, data.item, data.score
    prec_theta = 1.0 / theta_prior_sd**2
    prec_b = 1.0 / difficulty_prior_sd**2
    prec_mu = 1.0 / _POOL_MEAN_PRIOR_SD**2
    prec_alpha = 1.0 / log_discrimination_prior_sd**2
    centre = _pool_centres(data, pool_items)
    per_sub = np.bincount(sub, minlength=n_sub).astype(np.float64)
    per_item = np.bincount(item, minlength=n_item).astype(np.float64)
    # Diagonal preconditioner: L-BFGS works on z = scale * params, whose Hessian is then close to
    # the identity (a submission with 2,000 answers and an item with 10 differ 200-fold).
    scale_parts = [
        np.sqrt(0.25 * per_sub + prec_theta),
        np.sqrt(0.25 * per_item + prec_b),
        np.sqrt(prec_b * np.asarray(centre.multiply(centre).sum(axis=0)).ravel() + prec_mu),
    ]
    if discrimination:
        scale_parts.append(np.sqrt(0.25 * per_item + prec_alpha))
    scale = np.concatenate(scale_parts)
    cut_b, cut_mu, cut_alpha = n_sub, n_sub + n_item, n_sub + n_item + n_pool

    def objective(z: FloatArray) -> tuple[float, FloatArray]:
        params = z / scale
        theta, b, mu = params[:cut_b], params[cut_b:cut_mu], params[cut_mu:cut_alpha]
        gap = theta[sub] - b[item]
        spread = b - centre @ mu
        penalty = prec_theta * theta @ theta + prec_b * spread @ spread + prec_mu * mu @ mu
        if discrimination:
            alpha = params[cut_alpha:]
            slope = np.exp(alpha)[item]
            eta = slope * gap
            penalty += prec_alpha * alpha @ alpha
        else:
            eta = gap
        nll = float(np.sum(np.logaddexp(0.0, eta) - y * eta) + 0.5 * penalty)
        residual = expit(eta) - y
        d_eta = residual * slope if discrimination else residual
        grads = [
            np.bincount(sub, d_eta, n_sub) + prec_theta * theta,
            -np.bincount(item, d_eta, n_item) + prec_b * spread,
            -prec_b * (centre.T @ spread) + prec_mu * mu,
        ]
        if discrimination:
            grads.append(np.bincount(item, residual * eta, n_item) + prec_alpha * alpha)
        return nll, np.concatenate(grads) / scale

    theta0, b0 = _start(data, n_sub, n_item)
    mu0 = np.asarray(centre.T @ b0) / np.maximum(np.asarray(centre.sum(axis=0)).ravel(), 1e-12)
    start = [theta0, b0, mu0] + ([np.zeros(n_item)] if discrimination else [])
    solution = optimize.minimize(
        objective,
        np.concatenate(start) * scale,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iterations, "maxcor": 20, "ftol": 0.0, "gtol": gradient_tol / 100},
    )
    final_nll, final_grad = objective(solution.x)
    # L-BFGS-B stops when f no longer decreases in floating point: judge by the gradient.
    converged = bool(np.max(np.abs(final_grad)) <= gradient_tol)

    params = solution.x / scale
    theta, b = params[:cut_b].copy(), params[cut_b:cut_mu].copy()
    slope = np.exp(params[cut_alpha:]) if discrimination else np.ones(n_item)
    eta = slope[item] * (theta[sub] - b[item])
    weight = expit(eta) * (1.0 - expit(eta)) * slope[item] ** 2
    theta_se = 1.0 / np.sqrt(np.bincount(sub, weight, n_sub) + prec_theta)
    b_se = 1.0 / np.sqrt(np.bincount(item, weight, n_item) + prec_b)

    if reference_pool is None:
        ref = np.arange(n_item)
    else:
        ref = np.searchsorted(data.item_ids, pool_items[reference_pool])
    # theta -> c*theta + d, b -> c*b + d, a -> a/c leaves a*(theta - b), the likelihood, unchanged.
    stretch = float(np.exp(np.mean(np.log(slope[ref])))) if discrimination else 1.0
    shift = -stretch * float(np.mean(b[ref]))
    theta, b = stretch * theta + shift, stretch * b + shift
    slope, theta_se, b_se = slope / stretch, stretch * theta_se, stretch * b_se

    for array in (theta, theta_se, b, b_se, slope):
        array.setflags(write=False)
    return RaschFit(
        submission_ids=data.submission_ids,
        item_ids=data.item_ids,
        theta=theta,
        theta_se=theta_se,
        difficulty=b,
        difficulty_se=b_se,
        discrimination=slope,
        pool_of={sid: pool_of[sid] for sid in data.submission_ids},
        pool_items=pool_items,
        reference_pool=reference_pool,
        n_observations=int(y.size),
        n_iterations=int(solution.nit),
        converged=converged,
        neg_log_posterior=final_nll,
    )


def equated_score_details(
    fit: RaschFit, reference_items: Collection[str]
) -> dict[str, EquatedScore]:
    """Expected 0-100 score of every submission on reference_items, with theta and errors."""
    if not reference_items:
        raise ValueError("the reference item set is empty")
    wanted = np.asarray(sorted(set(reference_items)), dtype=str)
    index = np.searchsorted(fit.item_ids, wanted)
    index = np.minimum(index, len(fit.item_ids) - 1)
    unknown = wanted[np.asarray(fit.item_ids, dtype=str)[index] != wanted]
    if unknown.size:
        raise ValueError(
            f"{unknown.size} reference items were not in the fit, e.g. {unknown[:3].tolist()}"
        )
    slope = fit.discrimination[index]
    p = expit(slope[None, :] * (fit.theta[:, None] - fit.difficulty[index][None, :]))
    score = 100.0 * p.mean(axis=1)
    d_score = 100.0 * (p * (1.0 - p) * slope[None, :]).mean(axis=1)
    score_se = d_score * fit.theta_se
    return {
        sid: EquatedScore(
            float(score[k]), float(score_se[k]), float(fit.theta[k]), float(fit.theta_se[k])
        )
        for k, sid in enumerate(fit.submission_ids)
    }


def equated_scores(fit: RaschFit, reference_items: Collection[str]) -> dict[str, float]:
    """Expected 0-100 score of every submission on reference_items: the published equated score.

    For Rasch: 100 * mean_i sigmoid(theta_s - b_i) over the reference items.
    """
    details = equated_score_details(fit, reference_items)
    return {sid: detail.score for sid, detail in details.items()}


@dataclass(frozen=True)
class SimulationSettings:
    n_models: int = 40
    n_pools: int = 5
    items_per_pool: int = 400
    n_anchors: int = 50
    """Items each pool shares with the next one (the last n_anchors of a pool's own items)."""
    pool_shift_logits: tuple[float, float] = (0.5, 1.0)
    """Each pool's mean difficulty differs from the previous one's by a size drawn uniformly
    from this range, with a random sign."""
    ability_sd: float = 1.0
    difficulty_sd: float = 1.0
    """Spread of item difficulties within a pool, in logits."""
    pools_per_model: int = 1
    """Pools each model is evaluated on (consecutive ones); one submission per model and pool."""
    partial_credit_share: float = 0.0
    """Share of items scored with partial credit: k of partial_credit_steps points."""
    partial_credit_steps: int = 4
    seed: int = 0


@dataclass(frozen=True)
class SimulatedCycles:
    """Synthetic results of models on rotated pools, with the true parameters behind them."""

    settings: SimulationSettings
    results: tuple[ItemResult, ...]
    pool_of: Mapping[str, str]
    """submission_id -> pool."""
    model_of: Mapping[str, str]
    """submission_id -> model."""
    true_ability: Mapping[str, float]
    """model -> theta."""
    true_difficulty: Mapping[str, float]
    """item_id -> b."""
    pool_items: Mapping[str, tuple[str, ...]]
    pool_mean_difficulty: Mapping[str, float]
    """The centre each pool's new items were drawn around."""

    def true_scores(self, reference_items: Collection[str]) -> dict[str, float]:
        """Expected 0-100 score of each submission's model on reference_items, true parameters."""
        b = np.asarray([self.true_difficulty[i] for i in reference_items])
        return {
            sid: 100.0 * float(np.mean(expit(self.true_ability[model] - b)))
            for sid, model in self.model_of.items()
        }


def simulate(settings: SimulationSettings | None = None, **overrides: Any) -> SimulatedCycles:
    """Deterministic synthetic cycles: models of known ability on pools of shifting difficulty.

    Pool p's items are the last n_anchors items of pool p-1 followed by new items drawn around
    the pool's mean difficulty; model k answers pools k, k+1, ... (mod n_pools), so abilities are
    not confounded with pools. Keyword overrides replace fields of settings, e.g.
    simulate(n_anchors=0, seed=3).
    """
    s = replace(settings or SimulationSettings(), **overrides)
    if s.n_models < 1 or s.n_pools < 1 or s.items_per_pool < 1:
        raise ValueError("need at least one model, one pool and one item per pool")
    if not 1 <= s.pools_per_model <= s.n_pools:
        raise ValueError("pools_per_model must lie in [1, n_pools]")
    needed = 2 * s.n_anchors if s.n_pools > 2 else s.n_anchors
    if s.n_anchors < 0 or (s.n_pools > 1 and s.items_per_pool <= needed):
        raise ValueError(
            f"items_per_pool ({s.items_per_pool}) must exceed the anchors it shares ({needed})"
        )
    rng = np.random.default_rng(s.seed)
    low, high = s.pool_shift_logits
    steps = rng.uniform(low, high, s.n_pools - 1) * rng.choice([-1.0, 1.0], s.n_pools - 1)
    centres = np.concatenate([[0.0], np.cumsum(steps)])
    pools = [f"p{p}" for p in range(s.n_pools)]

    true_difficulty: dict[str, float] = {}
    pool_items: dict[str, tuple[str, ...]] = {}
    for p, pool in enumerate(pools):
        inherited = list(pool_items[pools[p - 1]][-s.n_anchors :]) if p and s.n_anchors else []
        n_new = s.items_per_pool - len(inherited)
        new = [f"{pool}-i{j:04d}" for j in range(n_new)]
        drawn = rng.normal(centres[p], s.difficulty_sd, n_new).tolist()
        true_difficulty.update(zip(new, drawn, strict=True))
        pool_items[pool] = tuple(inherited + new)
    flags = (rng.random(len(true_difficulty)) < s.partial_credit_share).tolist()
    partial = dict(zip(true_difficulty, flags, strict=True))

    models = [f"m{k:03d}" for k in range(s.n_models)]
    true_ability = dict(
        zip(models, rng.normal(0.0, s.ability_sd, s.n_models).tolist(), strict=True)
    )
    results: list[ItemResult] = []
    pool_of: dict[str, str] = {}
    model_of: dict[str, str] = {}
    for k, model in enumerate(models):
        for j in range(s.pools_per_model):
            pool = pools[(k + j) % s.n_pools]
            sid = f"{model}@{pool}"
            pool_of[sid], model_of[sid] = pool, model
            items = pool_items[pool]
            b = np.asarray([true_difficulty[i] for i in items])
            p_correct = expit(true_ability[model] - b)
            steps_of = np.where([partial[i] for i in items], s.partial_credit_steps, 1)
            score = rng.binomial(steps_of, p_correct) / steps_of
            results.extend(ItemResult(sid, i, float(v)) for i, v in zip(items, score, strict=True))
    return SimulatedCycles(
        settings=s,
        results=tuple(results),
        pool_of=pool_of,
        model_of=model_of,
        true_ability=true_ability,
        true_difficulty=true_difficulty,
        pool_items=pool_items,
        pool_mean_difficulty=dict(zip(pools, centres.tolist(), strict=True)),
    )


class EquatingCheck(NamedTuple):
    """Errors of cross-pool score differences against the true differences on the reference."""

    rmse_raw: float
    """0-100 points: raw score differences (each on its own pool) vs the truth."""
    rmse_equated: float
    """0-100 points: equated score differences vs the truth."""
    n_pairs: int
    """Pairs of submissions evaluated on different pools."""
    reference_pool: str


def check_equating(sim: SimulatedCycles, fit: RaschFit | None = None) -> EquatingCheck:
    """Compares raw and equated scores with the truth for every pair of submissions on different
    pools; the reference is the first pool. Fits a Rasch model unless fit is given."""
    reference = next(iter(sim.pool_items))
    if fit is None:
        fit = fit_rasch(sim.results, sim.pool_of, reference_pool=reference)
    ids = sorted(sim.pool_of)
    raw_by_id = raw_scores(sim.results)
    equated_by_id = equated_scores(fit, sim.pool_items[reference])
    true_by_id = sim.true_scores(sim.pool_items[reference])
    raw = np.asarray([raw_by_id[i] for i in ids])
    equated = np.asarray([equated_by_id[i] for i in ids])
    true = np.asarray([true_by_id[i] for i in ids])
    pool = np.asarray([sim.pool_of[i] for i in ids], dtype=object)
    first, second = np.triu_indices(len(ids), k=1)
    cross = pool[first] != pool[second]
    first, second = first[cross], second[cross]
    if not first.size:
        raise ValueError("no pair of submissions was evaluated on different pools")

    def rmse(observed: FloatArray) -> float:
        error = (observed[first] - observed[second]) - (true[first] - true[second])
        return float(np.sqrt(np.mean(error**2)))

    return EquatingCheck(rmse(raw), rmse(equated), int(first.size), reference)


def format_equating_check(sim: SimulatedCycles, check: EquatingCheck) -> str:
    """One line for logs and the README: the simulation settings and both RMSEs."""
    s = sim.settings
    low, high = s.pool_shift_logits
    return (
        f"equating check: {s.n_models} models x {s.pools_per_model} pool(s), {s.n_pools} pools of"
        f" {s.items_per_pool} items, {s.n_anchors} anchors between neighbours, pool shifts"
        f" +-{low:g}..{high:g} logits, partial credit {s.partial_credit_share:.0%}, seed {s.seed}:"
        f" RMSE of {check.n_pairs} cross-pool score differences, raw {check.rmse_raw:.2f} pts,"
        f" equated {check.rmse_equated:.2f} pts (ratio {check.rmse_equated / check.rmse_raw:.2f})"
    )
