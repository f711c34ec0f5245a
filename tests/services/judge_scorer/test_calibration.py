"""The calibration gate and report (core/calibration.py): minimum n, the interval's lower bound,
which kappa gates, the interval method against the analytic one, and what the report holds."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from judge_scorer.core.agreement import cohen_kappa
from judge_scorer.core.calibration import (
    PhysicianScore,
    RatedPair,
    agreement,
    calibration_report,
    gate,
)

SCALE = list(range(11))  # the generic rubric's 0-10 points


def noisy_pairs(
    n: int, p_err: float, spread: int, seed: int, dimension: str = ""
) -> list[RatedPair]:
    """n answers rated 0-10 by a physician; the judge agrees except, with probability p_err, it
    is off by up to ``spread`` points (clipped to the scale). One rating per answer."""
    rng = np.random.default_rng(seed)
    physician = rng.integers(0, 11, n)
    noise = np.where(rng.random(n) < p_err, rng.integers(-spread, spread + 1, n), 0)
    judge = np.clip(physician + noise, 0, 10)
    return [
        RatedPair(int(j), int(p), f"{dimension}answer-{i}", dimension)
        for i, (j, p) in enumerate(zip(judge, physician, strict=True))
    ]


def report(pairs: list[RatedPair], min_ratings: int = 200, **kw: object) -> dict[str, object]:
    physicians = [PhysicianScore(p.case, "dr-1", p.physician) for p in pairs]
    return calibration_report(
        pairs,
        physicians,
        SCALE,
        min_ratings=min_ratings,
        threshold=0.80,
        **kw,  # type: ignore[arg-type]
    )


def test_a_perfect_kappa_on_too_few_answers_is_not_calibrated_and_says_why() -> None:
    pairs = [RatedPair(s, s, f"a{i}") for i, s in enumerate([0, 3, 7, 10, 3, 7])]
    result = report(pairs)
    assert result["quadratic"] == {"kappa": 1.0, "low": 1.0, "high": 1.0}
    assert result["calibrated"] is False
    assert result["reason"] == "n=6 rated answers < 200 required (MEDBENCH_JUDGE__MIN_RATINGS)"


def test_an_interval_straddling_the_threshold_is_not_calibrated() -> None:
    result = report(noisy_pairs(200, 0.4, 6, seed=1))
    quadratic = result["quadratic"]
    assert isinstance(quadratic, dict)
    # The point estimate passes; the interval does not rule out a judge below the threshold.
    assert quadratic["kappa"] >= 0.80 > quadratic["low"]
    assert quadratic["high"] > 0.80
    assert result["calibrated"] is False
    assert str(result["reason"]).startswith(f"kappa lower bound {quadratic['low']:.3f} < 0.80")


def test_a_judge_comfortably_above_the_threshold_on_enough_answers_is_calibrated() -> None:
    result = report(noisy_pairs(240, 0.2, 1, seed=3))
    quadratic = result["quadratic"]
    assert isinstance(quadratic, dict) and quadratic["low"] > 0.95
    assert result["calibrated"] is True
    assert result["reason"] == (
        f"n=240 rated answers >= 200 and kappa lower bound {quadratic['low']:.3f} >= 0.80"
    )
    assert (result["n"], result["answers"], result["min_ratings"]) == (240, 240, 200)


def test_quadratic_kappa_gates_where_unweighted_would_fail_a_judge_one_point_off() -> None:
    # The judge is always one point off on an 11-point ordinal scale: unweighted kappa calls
    # every answer a miss (below chance), quadratic kappa sees near misses.
    physician = [i % 10 for i in range(200)]
    pairs = [RatedPair(p + 1, p, f"a{i}") for i, p in enumerate(physician)]
    result = report(pairs)
    quadratic, unweighted = result["quadratic"], result["unweighted"]
    assert isinstance(quadratic, dict) and isinstance(unweighted, dict)
    assert unweighted["kappa"] < 0.0 and unweighted["high"] < 0.80
    assert quadratic["kappa"] == pytest.approx(
        cohen_kappa(physician, [p + 1 for p in physician], weights="quadratic", labels=SCALE)
    )
    assert quadratic["low"] > 0.9 and result["calibrated"] is True
    assert result["gated_on"] == "quadratic"
    # ...and the other way round: a judge that is exactly right on most answers but reverses
    # the rest (0 <-> 10) has a fair unweighted kappa and fails on quadratic.
    reversed_ = [RatedPair(10 - p if i % 5 == 0 else p, p, f"a{i}") for i, p in
                 enumerate(q % 11 for q in range(200))]  # fmt: skip
    result = report(reversed_)
    assert result["unweighted"]["kappa"] > result["quadratic"]["kappa"]  # type: ignore[index]
    assert result["calibrated"] is False


def test_every_rated_dimension_needs_the_minimum_and_the_lower_bound() -> None:
    pairs = noisy_pairs(220, 0.2, 1, 4, "knowledge_qa") + noisy_pairs(80, 0.2, 1, 5, "safety")
    result = report(pairs)
    assert result["answers"] == 300
    dims = {d["dimension"]: d for d in result["dimensions"]}  # type: ignore[attr-defined]
    assert (dims["knowledge_qa"]["answers"], dims["knowledge_qa"]["passed"]) == (220, True)
    assert (dims["safety"]["answers"], dims["safety"]["passed"]) == (80, False)
    assert result["calibrated"] is False
    assert result["reason"] == (
        "dimension safety: n=80 rated answers < 200 required (MEDBENCH_JUDGE__MIN_RATINGS)"
    )
    # With the minimum set lower on purpose, both dimensions pass and so does the rubric.
    lower = report(pairs, min_ratings=50)
    assert lower["calibrated"] is True
    assert str(lower["reason"]).endswith(" >= 0.80 in dimensions knowledge_qa, safety")


def test_gate_names_every_failed_condition() -> None:
    weak = {"answers": 6, "quadratic": {"kappa": 0.74, "low": 0.712, "high": 0.9}}
    calibrated, reason = gate(weak, [], min_ratings=200, threshold=0.80)
    assert not calibrated
    assert reason == (
        "n=6 rated answers < 200 required (MEDBENCH_JUDGE__MIN_RATINGS); kappa lower bound "
        "0.712 < 0.80 (quadratic kappa 0.740, 95% interval [0.712, 0.900])"
    )


def analytic_interval(
    a: npt.NDArray[np.int_], b: npt.NDArray[np.int_], k: int, quadratic: bool
) -> tuple[float, float, float]:
    """Cohen's kappa and kappa +/- 1.96 SE, the large-sample standard error of Fleiss, Cohen &
    Everitt (1969, Psychological Bulletin 72:323), written from the paper's formula with
    agreement weights w_ij = 1 - (i - j)^2 / (k - 1)^2 (identity when unweighted)."""
    n = a.size
    p = np.zeros((k, k))
    np.add.at(p, (a, b), 1.0)
    p /= n
    i, j = np.indices((k, k))
    w = 1.0 - (i - j) ** 2 / (k - 1) ** 2 if quadratic else (i == j).astype(float)
    row, col = p.sum(axis=1), p.sum(axis=0)
    p_o = float((w * p).sum())
    p_e = float((w * np.outer(row, col)).sum())
    kappa = (p_o - p_e) / (1.0 - p_e)
    w_row = w @ col  # w-bar_i. = sum_j p_.j w_ij
    w_col = row @ w  # w-bar_.j = sum_i p_i. w_ij
    inner = (p * (w - (w_row[:, None] + w_col[None, :]) * (1.0 - kappa)) ** 2).sum()
    var = (inner - (kappa - p_e * (1.0 - kappa)) ** 2) / (n * (1.0 - p_e) ** 2)
    se = float(np.sqrt(var))
    return kappa, kappa - 1.96 * se, kappa + 1.96 * se


@pytest.mark.parametrize("quadratic", [True, False])
def test_the_bootstrap_interval_matches_the_analytic_one_on_a_large_sample(quadratic: bool) -> None:
    # 2,000 independent single-rated answers with kappa well inside (0, 1): the regime where
    # the analytic large-sample interval is valid, so the two methods must agree.
    pairs = noisy_pairs(2000, 0.4, 4, seed=7)
    ours = agreement(pairs, SCALE, n_resamples=2000)["quadratic" if quadratic else "unweighted"]
    physician = np.array([p.physician for p in pairs])
    judge = np.array([p.judge for p in pairs])
    kappa, low, high = analytic_interval(physician, judge, 11, quadratic)
    assert ours["kappa"] == pytest.approx(kappa, abs=1e-12)
    assert ours["low"] == pytest.approx(low, abs=0.003)
    assert ours["high"] == pytest.approx(high, abs=0.003)
    assert 0.005 < high - low < 0.1


def test_the_interval_resamples_answers_not_ratings() -> None:
    # The same 100 answers each rated twice (both ratings agree with each other): treating
    # the 200 ratings as independent would narrow the interval; resampling answers does not.
    single = noisy_pairs(100, 0.5, 6, seed=11)
    double = single + [RatedPair(p.judge, p.physician, p.case) for p in single]
    one, two = agreement(single, SCALE, 1000), agreement(double, SCALE, 1000)
    assert (two["n"], two["answers"]) == (200, 100)
    assert two["quadratic"]["kappa"] == pytest.approx(one["quadratic"]["kappa"])
    assert two["quadratic"]["low"] == pytest.approx(one["quadratic"]["low"], abs=1e-9)


def test_the_report_holds_the_confusion_matrix_the_ceiling_and_the_method() -> None:
    pairs = [
        RatedPair(7, 7, "a", "knowledge_qa"),
        RatedPair(7, 6, "a", "knowledge_qa"),  # a second physician rated answer a
        RatedPair(3, 3, "b", "knowledge_qa"),
        RatedPair(10, 0, "c", "safety"),
    ]
    physicians = [
        PhysicianScore("a", "dr-1", 7),
        PhysicianScore("a", "dr-2", 6),
        PhysicianScore("b", "dr-1", 3),
        PhysicianScore("c", "dr-1", 0),
        PhysicianScore("d", "dr-1", 9),  # the judge failed on d: still in the ceiling's data
        PhysicianScore("d", "dr-2", 9),
    ]
    result = calibration_report(
        pairs, physicians, SCALE, min_ratings=200, threshold=0.8, n_resamples=200
    )
    confusion = result["confusion"]
    assert result["score_bins"] == SCALE and len(confusion) == 11
    assert all(len(row) == 11 for row in confusion)
    assert sum(map(sum, confusion)) == 4
    assert (confusion[7][7], confusion[7][6], confusion[3][3], confusion[10][0]) == (1, 1, 1, 1)
    assert (result["n"], result["answers"]) == (4, 3)
    assert [(d["dimension"], d["n"], d["answers"]) for d in result["dimensions"]] == [
        ("knowledge_qa", 3, 2),
        ("safety", 1, 1),
    ]
    ceiling = result["physician_ceiling"]
    # Answers a (7 vs 6) and d (9 vs 9), each as two ordered pairs.
    assert (ceiling["answers"], ceiling["pairs"]) == (2, 4)
    assert ceiling["kappa"] == pytest.approx(
        cohen_kappa([7, 6, 9, 9], [6, 7, 9, 9], weights="quadratic", labels=SCALE)
    )
    assert ceiling["low"] <= ceiling["kappa"] <= ceiling["high"]
    assert result["interval_method"] == (
        "percentile bootstrap over rated answers, 95%, seed 0, 200 resamples"
    )
    assert result["calibrated"] is False and result["reason"].startswith("n=3 rated answers")
    single = calibration_report(
        pairs[2:], physicians[2:4], SCALE, min_ratings=1, threshold=0.8, n_resamples=10
    )
    assert single["physician_ceiling"] is None


def test_the_same_ratings_always_give_the_same_decision() -> None:
    pairs = noisy_pairs(200, 0.4, 6, seed=1)
    assert report(pairs) == report(list(reversed(pairs)))


def test_nothing_to_measure_is_an_error() -> None:
    with pytest.raises(ValueError, match="nothing to measure"):
        calibration_report([], [], SCALE, min_ratings=200, threshold=0.8)
