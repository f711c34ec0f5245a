"""The live view of a report (aggregator/core/live_view.py): what a partner sees of a live
pool's scores, and that it tells nothing finer than its rounded dataset scores."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from aggregator.core.live_view import (
    LIVE_UNITS,
    dithers,
    live_equated,
    live_view,
    shown,
    step_for,
    wilson,
)


def dataset(name: str, dimension: str, right: int, units: int, **extra: Any) -> dict[str, Any]:
    score = 100.0 * right / units
    return {
        "dataset": name,
        "dimension": dimension,
        "score": score,
        "items": units,
        "units": units,
        "rule": "mean",
        "metric": "choice_single",
        "item_mean": score,
        "low": max(0.0, score - 7.0),
        "high": min(100.0, score + 7.0),
        **extra,
    }


def report(*datasets: dict[str, Any]) -> dict[str, Any]:
    dims: dict[str, list[float]] = {}
    for d in datasets:
        dims.setdefault(d["dimension"], []).append(d["score"])
    dimensions = [
        {"dimension": k, "score": sum(v) / len(v), "datasets": len(v), "low": 1.0, "high": 99.0}
        for k, v in sorted(dims.items())
    ]
    overall = sum(d["score"] for d in dimensions) / len(dimensions)
    return {
        "_id": "sub-1",
        "tenant_id": "hospital-a",
        "overall": overall,
        "overall_low": overall - 3.0,
        "overall_high": overall + 3.0,
        "scored_items": sum(d["items"] for d in datasets),
        "dimensions": dimensions,
        "datasets": list(datasets),
        "lineage": {"pool_id": "pool-1"},
    }


@pytest.mark.parametrize(
    ("units", "step"), [(1, 50.0), (6, 50.0), (12, 25.0), (30, 10.0), (150, 2.0), (300, 1.0),
                        (3000, 0.1), (0, 50.0)],
)  # fmt: skip
def test_a_datasets_step_covers_at_least_three_of_its_units(units: int, step: float) -> None:
    assert step_for(units) == step
    if units:
        assert step >= 100.0 * LIVE_UNITS / units - 1e-9 or step == 50.0


def test_a_shown_score_is_a_multiple_of_its_step_within_half_a_step() -> None:
    for value in (0.0, 4.99, 5.0, 33.3333, 66.6667, 97.5, 100.0):
        for step in (0.1, 1.0, 2.0, 10.0, 25.0, 50.0):
            s = shown(value, step)
            assert 0.0 <= s <= 100.0
            assert abs(s / step - round(s / step)) < 1e-6
            assert abs(s - value) <= step / 2 + 1e-9


def test_one_question_more_or_less_moves_the_shown_score_at_a_steps_edge_only() -> None:
    """30 questions, shown at 10 points: a question answered right instead of wrong changes
    the shown score for a third of the counts at most, and never by more than a step."""
    step = step_for(30)
    changes = 0
    for right in range(30):
        before, after = shown(100 * right / 30, step), shown(100 * (right + 1) / 30, step)
        assert after - before in (0.0, step)
        changes += after != before
    assert changes == 10


def test_the_live_view_depends_on_the_shown_dataset_scores_alone() -> None:
    """Two reports whose dataset scores round alike, whatever their exact scores, item means
    and intervals, have the same live view: nothing finer leaks through dimensions, overall or
    intervals."""
    rng = random.Random(7)
    a = report(dataset("MedExam", "MedKQA", 21, 30), dataset("MedEthics", "MedKQA", 9, 30),
               dataset("MedSafety", "MedSE", 144, 300))  # fmt: skip
    b = copy.deepcopy(a)
    b["datasets"][0].update(score=100 * 22 / 30, item_mean=71.9, low=50.0, high=88.0)
    b["datasets"][1].update(score=100 * 10 / 30, item_mean=31.0, low=rng.random(), high=60.0)
    b["datasets"][2].update(score=100 * 143.6 / 300)
    b.update(overall=12.0, overall_low=0.0, overall_high=99.0)
    for d in b["dimensions"]:
        d.update(score=rng.random() * 100, low=0.0, high=100.0)
    assert live_view(a) == live_view(b)
    # ... and the stored record is not changed.
    assert "step" not in a["datasets"][0] and "live" not in a


def test_dimensions_and_overall_are_means_of_the_shown_scores_with_intervals_around_them() -> None:
    doc = live_view(
        report(
            dataset("MedExam", "MedKQA", 21, 30),
            dataset("MedEthics", "MedKQA", 9, 30),
            dataset("MedSafety", "MedSE", 144, 300),
        )  # fmt: skip
    )
    scores = {d["dataset"]: d["score"] for d in doc["datasets"]}
    assert scores == {"MedExam": 70.0, "MedEthics": 30.0, "MedSafety": 48.0}
    dims = {d["dimension"]: d for d in doc["dimensions"]}
    assert dims["MedKQA"]["score"] == pytest.approx(50.0)
    assert dims["MedSE"]["score"] == pytest.approx(48.0)
    assert doc["overall"] == pytest.approx(49.0) and doc["live"] is True
    for row in [*doc["datasets"], *doc["dimensions"]]:
        assert 0.0 <= row["low"] <= row["score"] <= row["high"] <= 100.0
    assert doc["overall_low"] < doc["overall"] < doc["overall_high"]
    exam = next(d for d in doc["datasets"] if d["dataset"] == "MedExam")
    low, high = wilson(70.0, 30)
    assert (exam["low"], exam["high"]) == pytest.approx((low - 10.0, high + 10.0))
    assert exam["item_mean"] == 70.0 and exam["items"] == 30 and exam["step"] == 10.0


def test_wilson_interval_is_honest_at_the_ends() -> None:
    low, high = wilson(0.0, 30)
    assert low == 0.0 and 10.0 < high < 12.0
    low, high = wilson(100.0, 30)
    assert 88.0 < low < 90.0 and high == 100.0
    assert wilson(50.0, 0) == (0.0, 100.0)


def test_an_equated_score_beside_a_live_view_is_rounded_to_the_overalls_resolution() -> None:
    doc = live_view(report(dataset("MedExam", "MedKQA", 21, 30), dataset("MedEthics", "MedKQA",
                                                                           9, 30)))  # fmt: skip
    assert live_equated(None, doc) is None
    assert live_equated(63.7, doc) == 65.0  # steps 10 over two datasets: 5 points
    assert live_equated(63.7, {"datasets": []}) == 64.0


KEY = b"k" * 32


def test_dithers_are_fixed_per_submission_and_unpredictable_without_the_key() -> None:
    a = dithers(KEY, "sub-1", ["MedExam", "MedEthics"])
    assert a == dithers(KEY, "sub-1", ["MedEthics", "MedExam"])  # the same on every read
    assert a != dithers(KEY, "sub-2", ["MedExam", "MedEthics"])
    assert a != dithers(b"x" * 32, "sub-1", ["MedExam", "MedEthics"])
    assert a["MedExam"] != a["MedEthics"] and a["MedExam"][0] != a["MedExam"][1]
    assert all(-0.5 <= v < 0.5 for pair in a.values() for v in pair)
    with pytest.raises(ValueError, match="secret key"):
        dithers(b"", "sub-1", ["MedExam"])


def test_a_dithered_score_is_within_a_step_and_unbiased_over_submissions() -> None:
    """Over many submissions of the same answers (21 of 30 right: 70.0 exactly would be a
    step; 23 of 30 is 76.67) the shown scores average the exact one, each within one step."""
    exact = 100 * 23 / 30
    doc = report(dataset("MedExam", "MedKQA", 23, 30))
    values = []
    for n in range(2000):
        view = live_view(doc, dithers(KEY, f"sub-{n}", ["MedExam"]))
        [d] = view["datasets"]
        assert abs(d["score"] - exact) <= 10.0 and d["score"] in (70.0, 80.0)
        assert d["low"] <= exact <= d["high"]
        values.append(d["score"])
    assert sum(values) / len(values) == pytest.approx(exact, abs=0.5)


def test_one_question_more_moves_a_dithered_score_by_chance_only() -> None:
    """Without the dither, a count at a step's edge shows one more right question for sure;
    with it, one more question changes the shown score in about a third of submissions."""
    step = step_for(30)
    assert shown(100 * 13 / 30, step) != shown(100 * 14 / 30, step)  # an edge: 43.3 -> 46.7
    changed = 0
    for n in range(3000):
        d = dithers(KEY, f"sub-{n}", ["MedExam"])["MedExam"][0]
        changed += shown(100 * 13 / 30, step, d) != shown(100 * 14 / 30, step, d)
    assert 0.28 < changed / 3000 < 0.39
