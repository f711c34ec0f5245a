"""Tests for score equating across rotated pools (concurrent Rasch calibration).

The equating claim prints one line (format_equating_check) for the README; see it with
`pytest tests/services/aggregator/test_equating.py -q -rP`. The benchmark is not a test:
`.venv/bin/python -m tests.services.aggregator.test_equating` runs bench().
"""

from __future__ import annotations

import math
import random
import time

import numpy as np
import pytest

from aggregator.core.equating import (
    ItemResult,
    RaschFit,
    SimulatedCycles,
    check_equating,
    equated_score_details,
    equated_scores,
    fit_rasch,
    format_equating_check,
    raw_scores,
    simulate,
)

RECOVERY = {
    "n_models": 300,
    "n_pools": 4,
    "items_per_pool": 200,
    "n_anchors": 40,
    "difficulty_sd": 1.5,
    "seed": 3,
}
"""75 submissions per item: enough for item difficulties to be recovered, not only abilities."""


def _true_on_fitted_scale(sim: SimulatedCycles, fit: RaschFit) -> tuple[np.ndarray, np.ndarray]:
    """True theta and b, index-aligned with the fit, shifted to the fit's origin."""
    theta = np.array([sim.true_ability[sim.model_of[sid]] for sid in fit.submission_ids])
    b = np.array([sim.true_difficulty[iid] for iid in fit.item_ids])
    reference = fit.pool_items[fit.reference_pool] if fit.reference_pool else fit.item_ids
    origin = float(np.mean([sim.true_difficulty[iid] for iid in reference]))
    return theta - origin, b - origin


@pytest.fixture(scope="module")
def recovery() -> tuple[SimulatedCycles, RaschFit]:
    sim = simulate(**RECOVERY)
    return sim, fit_rasch(sim.results, sim.pool_of, reference_pool="p0")


@pytest.fixture(scope="module")
def rotated() -> SimulatedCycles:
    """Default simulation: 40 models, 5 pools of 400 items, 50 anchors, shifts 0.5-1 logit."""
    return simulate(seed=0)


def test_fit_recovers_abilities_and_difficulties(
    recovery: tuple[SimulatedCycles, RaschFit],
) -> None:
    sim, fit = recovery
    true_theta, true_b = _true_on_fitted_scale(sim, fit)
    assert fit.converged
    assert np.corrcoef(fit.theta, true_theta)[0, 1] > 0.95
    assert np.corrcoef(fit.difficulty, true_b)[0, 1] > 0.95
    # Aligned on the reference pool, the scales agree in level as well as in order.
    assert abs(float(np.mean(fit.theta - true_theta))) < 0.15
    assert float(np.sqrt(np.mean((fit.difficulty - true_b) ** 2))) < 0.5


def test_abilities_are_recovered_with_one_cycle_of_submissions_per_item(
    rotated: SimulatedCycles,
) -> None:
    fit = fit_rasch(rotated.results, rotated.pool_of, reference_pool="p0")
    true_theta, _ = _true_on_fitted_scale(rotated, fit)
    assert np.corrcoef(fit.theta, true_theta)[0, 1] > 0.95


def test_reference_pool_has_mean_difficulty_zero_and_equated_scores_ignore_the_choice(
    rotated: SimulatedCycles,
) -> None:
    on_p0 = fit_rasch(rotated.results, rotated.pool_of, reference_pool="p0")
    on_all = fit_rasch(rotated.results, rotated.pool_of)
    p0 = on_p0.difficulties()
    assert abs(math.fsum(p0[i] for i in on_p0.pool_items["p0"])) < 1e-9
    assert abs(math.fsum(on_all.difficulty)) < 1e-9
    reference = rotated.pool_items["p2"]
    a, b = equated_scores(on_p0, reference), equated_scores(on_all, reference)
    assert max(abs(a[sid] - b[sid]) for sid in a) < 1e-9


def test_equated_score_on_the_reference_pool_is_the_raw_score_up_to_the_prior(
    rotated: SimulatedCycles,
) -> None:
    # The Rasch estimating equation for theta is sum_i sigmoid(theta - b_i) = raw total minus the
    # prior's pull, theta / theta_prior_sd^2, which a wide prior makes negligible.
    fit = fit_rasch(rotated.results, rotated.pool_of, reference_pool="p0", theta_prior_sd=100.0)
    equated = equated_scores(fit, rotated.pool_items["p0"])
    raw = raw_scores(rotated.results)
    on_p0 = [sid for sid, pool in rotated.pool_of.items() if pool == "p0"]
    assert len(on_p0) == 8
    for sid in on_p0:
        assert equated[sid] == pytest.approx(raw[sid], abs=1e-3)


def test_equated_scores_recover_cross_pool_differences_that_raw_scores_miss(
    rotated: SimulatedCycles,
) -> None:
    check = check_equating(rotated)
    print(format_equating_check(rotated, check))
    assert check.n_pairs == 640
    assert check.rmse_raw > 12.0, "raw scores should be visibly biased by pool difficulty"
    assert check.rmse_equated < 5.0
    assert check.rmse_equated < 0.5 * check.rmse_raw


def test_equating_holds_with_partial_credit_scores() -> None:
    sim = simulate(partial_credit_share=0.5, seed=1)
    assert any(0.0 < score < 1.0 for _, _, score in sim.results)
    check = check_equating(sim)
    print(format_equating_check(sim, check))
    assert check.rmse_raw > 12.0
    assert check.rmse_equated < 0.5 * check.rmse_raw


def test_on_one_pool_equated_order_is_raw_order() -> None:
    # With every submission on the same items the raw total is sufficient for Rasch theta.
    sim = simulate(n_models=30, n_pools=1, items_per_pool=300, partial_credit_share=0.3, seed=4)
    fit = fit_rasch(sim.results, sim.pool_of)
    raw = raw_scores(sim.results)
    equated = equated_scores(fit, sim.pool_items["p0"])
    ids = sorted(raw)
    assert len(set(raw.values())) > 20
    for first in ids:
        for second in ids:
            if raw[first] > raw[second] + 1e-9:
                assert equated[first] > equated[second]
            elif raw[first] == pytest.approx(raw[second], abs=1e-9):
                assert equated[first] == pytest.approx(equated[second], abs=1e-6)


def test_perfect_and_zero_submissions_and_items_get_finite_estimates() -> None:
    sim = simulate(n_models=12, n_pools=2, items_per_pool=100, n_anchors=20, seed=5)
    items = sim.pool_items["p0"]
    extra = [ItemResult("all-right", i, 1.0) for i in items]
    extra += [ItemResult("all-wrong", i, 0.0) for i in items]
    # An item only the two extremes answered: one right, one wrong, so it is still linked.
    extra += [ItemResult("all-right", "lonely", 1.0), ItemResult("all-wrong", "lonely", 0.0)]
    pool_of = {**sim.pool_of, "all-right": "p0", "all-wrong": "p0"}
    fit = fit_rasch([*sim.results, *extra], pool_of, reference_pool="p0")
    theta = fit.thetas()
    assert np.all(np.isfinite(fit.theta)) and np.all(np.isfinite(fit.difficulty))
    assert np.all(np.isfinite(fit.theta_se)) and np.all(fit.theta_se > 0)
    others = [t for sid, t in theta.items() if sid not in ("all-right", "all-wrong")]
    assert max(others) < theta["all-right"] < 20.0
    assert -20.0 < theta["all-wrong"] < min(others)
    details = equated_score_details(fit, items)
    assert 99.0 < details["all-right"].score < 100.0
    assert 0.0 < details["all-wrong"].score < 1.0


def test_an_item_everyone_got_right_gets_a_finite_difficulty() -> None:
    rows = [ItemResult(f"s{k}", "easy", 1.0) for k in range(5)]
    rows += [ItemResult(f"s{k}", f"q{j}", float((k + j) % 2)) for k in range(5) for j in range(6)]
    fit = fit_rasch(rows, {f"s{k}": "p" for k in range(5)})
    easy = fit.difficulties()["easy"]
    assert math.isfinite(easy)
    assert easy < min(b for iid, b in fit.difficulties().items() if iid != "easy")


def test_pools_without_anchors_raise_naming_the_disconnected_pools() -> None:
    sim = simulate(n_models=6, n_pools=3, items_per_pool=50, n_anchors=0, seed=6)
    expected = r"not linked .* 3 disconnected groups of pools: \{p0\} \| \{p1\} \| \{p2\}"
    with pytest.raises(ValueError, match=expected):
        fit_rasch(sim.results, sim.pool_of)


def test_one_isolated_pool_is_named_apart_from_the_linked_ones() -> None:
    sim = simulate(n_models=6, n_pools=2, items_per_pool=50, n_anchors=10, seed=7)
    island = [ItemResult("x", f"island-{j}", float(j % 2)) for j in range(10)]
    with pytest.raises(ValueError, match=r"\{p0, p1\} \| \{p9\}"):
        fit_rasch([*sim.results, *island], {**sim.pool_of, "x": "p9"})


@pytest.mark.parametrize(
    ("rows", "pool_of", "message"),
    [
        ([], {}, "no item results"),
        ([("s", "i", 1.5)], {"s": "p"}, r"must lie in \[0, 1\], got 1.5"),
        ([("s", "i", float("nan"))], {"s": "p"}, r"must lie in \[0, 1\]"),
        ([("s", "i", 1.0), ("s", "i", 0.0)], {"s": "p"}, "'i' scored twice for submission 's'"),
        ([("s", "i", 1.0)], {}, "have no pool"),
    ],
)
def test_invalid_input_raises(
    rows: list[tuple[str, str, float]], pool_of: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        fit_rasch(rows, pool_of)


def test_unknown_reference_pool_or_items_raise() -> None:
    rows = [("s1", "i1", 1.0), ("s1", "i2", 0.0), ("s2", "i1", 0.0), ("s2", "i2", 1.0)]
    pool_of = {"s1": "p", "s2": "p"}
    with pytest.raises(ValueError, match="reference pool 'q'"):
        fit_rasch(rows, pool_of, reference_pool="q")
    fit = fit_rasch(rows, pool_of)
    with pytest.raises(ValueError, match=r"1 reference items were not in the fit, e\.g\. \['i9'\]"):
        equated_scores(fit, ["i1", "i9"])
    with pytest.raises(ValueError, match="empty"):
        equated_scores(fit, [])


def test_same_data_gives_the_same_fit_in_any_row_order(rotated: SimulatedCycles) -> None:
    first = fit_rasch(rotated.results, rotated.pool_of, reference_pool="p0")
    again = fit_rasch(rotated.results, rotated.pool_of, reference_pool="p0")
    shuffled_rows = list(rotated.results)
    random.Random(0).shuffle(shuffled_rows)
    shuffled = fit_rasch(shuffled_rows, rotated.pool_of, reference_pool="p0")
    for other in (again, shuffled):
        assert other.submission_ids == first.submission_ids
        assert np.array_equal(other.theta, first.theta)
        assert np.array_equal(other.difficulty, first.difficulty)
        assert np.array_equal(other.theta_se, first.theta_se)


def test_simulation_is_deterministic_by_seed() -> None:
    assert (
        simulate(n_models=4, items_per_pool=120, n_anchors=20, seed=8).results
        == simulate(n_models=4, items_per_pool=120, n_anchors=20, seed=8).results
    )
    assert simulate(n_models=4, seed=8).results != simulate(n_models=4, seed=9).results


def test_simulated_pools_share_anchors_with_their_neighbours_only() -> None:
    sim = simulate(n_models=5, n_pools=4, items_per_pool=100, n_anchors=15, seed=2)
    items = {pool: set(ids) for pool, ids in sim.pool_items.items()}
    assert len(items["p0"] & items["p1"]) == len(items["p2"] & items["p3"]) == 15
    assert not items["p0"] & items["p2"]
    assert all(len(ids) == 100 for ids in items.values())


def test_theta_standard_errors_cover_the_truth(recovery: tuple[SimulatedCycles, RaschFit]) -> None:
    sim, fit = recovery
    true_theta, _ = _true_on_fitted_scale(sim, fit)
    covered = np.abs(fit.theta - true_theta) < 1.96 * fit.theta_se
    assert 0.85 < float(np.mean(covered)) <= 1.0


def test_two_parameter_model_recovers_abilities_and_fixes_the_slope_scale(
    recovery: tuple[SimulatedCycles, RaschFit],
) -> None:
    sim, _ = recovery
    fit = fit_rasch(sim.results, sim.pool_of, reference_pool="p0", discrimination=True)
    true_theta, _ = _true_on_fitted_scale(sim, fit)
    reference = np.searchsorted(fit.item_ids, fit.pool_items["p0"])
    assert np.corrcoef(fit.theta, true_theta)[0, 1] > 0.95
    assert float(np.mean(np.log(fit.discrimination[reference]))) == pytest.approx(0.0, abs=1e-9)
    assert float(np.mean(fit.difficulty[reference])) == pytest.approx(0.0, abs=1e-9)
    assert set(equated_scores(fit, sim.pool_items["p0"])) == set(sim.pool_of)


def test_raw_scores_are_mean_item_scores_on_0_to_100() -> None:
    rows = [("a", "1", 1.0), ("a", "2", 0.5), ("b", "1", 0.0)]
    assert raw_scores(rows) == {"a": 75.0, "b": 0.0}


def test_bench_runs_on_a_small_problem() -> None:
    timings = bench(n_submissions=10, n_items=200)
    assert set(timings) == {"one pool", "five pools"}


def bench(n_submissions: int = 50, n_items: int = 2_000) -> dict[str, float]:
    """Fit time in seconds for n_submissions x n_items, two designs; prints them.

    "one pool": every submission answers all n_items (n_submissions * n_items results).
    "five pools": 5 pools, neighbours sharing n_items / 40 anchors, sized so the pools hold
    n_items distinct items; each submission answers one pool (a fifth of the submissions each).
    """
    anchors = n_items // 40
    per_pool = (n_items + 4 * anchors) // 5
    designs = {
        "one pool": simulate(n_models=n_submissions, n_pools=1, items_per_pool=n_items),
        "five pools": simulate(
            n_models=n_submissions, n_pools=5, items_per_pool=per_pool, n_anchors=anchors
        ),
    }
    timings: dict[str, float] = {}
    for name, sim in designs.items():
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            fit = fit_rasch(sim.results, sim.pool_of, reference_pool="p0")
            best = min(best, time.perf_counter() - start)
        timings[name] = best
        print(
            f"{name}: {len(fit.submission_ids)} submissions x {len(fit.item_ids)} items,"
            f" {fit.n_observations} results, {fit.n_iterations} iterations:"
            f" {best * 1000:.0f} ms (best of 3)"
        )
    return timings


if __name__ == "__main__":
    bench()
