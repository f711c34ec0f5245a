"""Published judge-agreement figures, reproduced from the public labels behind them.

The data is copied into tests/data (MIT; see each folder's SOURCE.md), so these tests always run.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from judge_scorer.core.agreement import (
    bootstrap_kappa_ci,
    cohen_kappa,
    pairs_against_raters,
    pairs_among_raters,
)

DATA = Path(__file__).resolve().parents[2] / "data"
HEALTHBENCH = DATA / "healthbench_meta"
MTBENCH = DATA / "mtbench_human_pairs"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture(scope="module")
def physicians() -> dict[str, list[bool]]:
    """Each item's physician votes, in the gold file's order (the order upstream used)."""
    gold = read_jsonl(HEALTHBENCH / "healthbench_meta_gold.jsonl")
    return {row["item_id"]: row["binary_labels"] for row in gold}


@pytest.fixture(scope="module")
def judge() -> dict[str, bool]:
    labels = read_jsonl(HEALTHBENCH / "healthbench_meta_strongmodel_labels.jsonl")
    return {row["item_id"]: row["criteria_met"] for row in labels}


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    report: dict[str, Any] = json.loads((HEALTHBENCH / "calibration_report.json").read_text())
    return report


def raw_agreement(a: Sequence[object], b: Sequence[object]) -> float:
    return float(np.mean(np.asarray(a) == np.asarray(b)))


def test_healthbench_judge_vs_physicians_kappa_is_0_394_over_250_pairs(
    judge: dict[str, bool], physicians: dict[str, list[bool]], report: dict[str, Any]
) -> None:
    published = report["rater_vs_physician"]

    judge_labels, physician_labels = pairs_against_raters(judge, physicians)
    ours = cohen_kappa(judge_labels, physician_labels)

    assert len(judge_labels) == published["n_items_pairs"] == 250
    assert ours == pytest.approx(published["cohen_kappa"], abs=1e-12)
    assert cohen_kappa_score(judge_labels, physician_labels) == pytest.approx(ours, abs=1e-12)
    assert round(ours, 3) == 0.394
    assert raw_agreement(judge_labels, physician_labels) == pytest.approx(0.736)


def test_healthbench_physician_ceiling_uses_every_ordered_pair_of_physicians(
    physicians: dict[str, list[bool]], report: dict[str, Any]
) -> None:
    """The 282 pairs are ordered pairs of two different physicians on the same item.

    There are 111 items with 2 physicians, 8 with 3 and 1 with 4. Each item with m physicians
    gives m(m - 1) ordered pairs, so 111*2 + 8*6 + 1*12 = 282. Unordered pairs would give
    111 + 24 + 6 = 141. The published table is also symmetric (tf = ft = 36), as only ordered
    pairs make it.
    """
    published = report["physician_ceiling"]

    first, second = pairs_among_raters(physicians)
    ours = cohen_kappa(first, second)

    assert len(first) == published["n_items_pairs"] == 282
    assert ours == pytest.approx(published["cohen_kappa"], abs=1e-12)
    assert cohen_kappa_score(first, second) == pytest.approx(ours, abs=1e-12)
    assert round(ours, 3) == 0.437
    assert raw_agreement(first, second) == pytest.approx(published["raw_agreement"])
    unordered = sum(len(votes) * (len(votes) - 1) // 2 for votes in physicians.values())
    assert unordered == 141


def test_healthbench_kappa_interval_comes_from_resampling_items_not_pairs(
    judge: dict[str, bool], physicians: dict[str, list[bool]], report: dict[str, Any]
) -> None:
    """The published 95% CI [0.229, 0.536] resamples items, each with all its physician pairs.

    With ``clusters`` set to the item ids, our bootstrap lands within 0.03 of both bounds.
    Resampling the 250 pairs on their own ignores the fact that an item's two or three pairs
    share one judge verdict. That gives an interval much narrower than the published one.
    """
    low, high = report["rater_vs_physician"]["cohen_kappa_ci95"]
    judge_labels, physician_labels = pairs_against_raters(judge, physicians)
    items = [item for item, votes in physicians.items() for _ in votes]

    by_item = bootstrap_kappa_ci(
        judge_labels, physician_labels, clusters=items, n_resamples=2000, seed=0
    )
    by_pair = bootstrap_kappa_ci(judge_labels, physician_labels, n_resamples=2000, seed=0)

    assert by_item.low == pytest.approx(low, abs=0.03)
    assert by_item.high == pytest.approx(high, abs=0.03)
    assert by_item.n == 250
    assert (by_pair.high - by_pair.low) < (high - low) - 0.04


def test_healthbench_upstream_bootstrap_is_reproduced_exactly_by_our_kappa(
    judge: dict[str, bool], physicians: dict[str, list[bool]], report: dict[str, Any]
) -> None:
    """Replays the upstream resampling scheme draw for draw and gets the published bounds.

    Upstream (Med-Bench-Arena, medeval/calibrate.py) draws 2000 item resamples from
    ``random.Random(12345)``. Each resample is expanded to its judge-physician pairs. The bounds
    are order statistics ``sorted[int(q * 1999)]`` for q = 0.025 and 0.975. It uses the same
    convention as ours, kappa = 1 when chance agreement is 1.
    """
    items = list(physicians.items())
    rng = random.Random(12345)
    kappas = []
    for _ in range(2000):
        sample = [items[rng.randrange(len(items))] for _ in items]
        judge_labels = [judge[item] for item, votes in sample for _ in votes]
        physician_labels = [vote for _, votes in sample for vote in votes]
        kappas.append(cohen_kappa(judge_labels, physician_labels, labels=[False, True]))
    kappas.sort()

    published_low, published_high = report["rater_vs_physician"]["cohen_kappa_ci95"]
    assert kappas[int(0.025 * 1999)] == pytest.approx(published_low, abs=1e-12)
    assert kappas[int(0.975 * 1999)] == pytest.approx(published_high, abs=1e-12)


@pytest.fixture(scope="module")
def gpt4_verdicts() -> list[dict[str, str]]:
    with (MTBENCH / "mtbench_judge_verdicts.csv").open(newline="", encoding="utf-8") as f:
        rows = [row for row in csv.DictReader(f) if row["evaluator"] == "GPT-4"]
    assert len(rows) == 200
    return rows


def test_mtbench_gpt4_judge_kappa_against_the_human_majority_is_0_590(
    gpt4_verdicts: list[dict[str, str]],
) -> None:
    """The 0.590 is GPT-4's ``judge_winner_noswap`` column against ``human_label``, unweighted.

    The judge picks the same winner as the human majority on 159 of 200 items, so po = 0.795.
    The judge says "1" 102 times and the humans 101 times. Chance agreement is then
    pe = (102*101 + 98*99) / 200^2 = 0.5001, and kappa = (0.795 - 0.5001) / (1 - 0.5001)
    = 2949/4999 = 0.58992. The swapped order gives 0.650 instead (165/200 correct), so only
    the no-swap order gives 0.590.
    """
    human = [row["human_label"] for row in gpt4_verdicts]
    noswap = [row["judge_winner_noswap"] for row in gpt4_verdicts]
    swap = [row["judge_winner_swap"] for row in gpt4_verdicts]

    ours = cohen_kappa(noswap, human)

    assert ours == pytest.approx(2949 / 4999, abs=1e-12)
    assert cohen_kappa_score(noswap, human) == pytest.approx(ours, abs=1e-12)
    assert round(ours, 3) == 0.590
    assert raw_agreement(noswap, human) == pytest.approx(0.795)
    assert round(cohen_kappa(swap, human), 3) == 0.650


def test_mtbench_upstream_kappa_0_199_comes_from_mismatched_label_codes(
    gpt4_verdicts: list[dict[str, str]],
) -> None:
    """LLMBar's own statistics file says kappa_False = 0.199, not 0.590. This is why.

    LLMEvaluator/evaluate.py turns the judge's winner into
    ``int(winner) if winner in ("0", "1") else 0``, so "1" becomes 1 and "2" becomes 0. The human
    label stays the integer 1 or 2. The two raters' codes therefore overlap only on
    "1", and a judge "2" can never match a human 2. Feeding our kappa the same codes reproduces
    the file to full precision. kappa_agreement compares the judge with itself across the two
    orders. Both sides use the same codes there, so that figure is a real kappa.
    """
    upstream = json.loads((MTBENCH / "judge_GPT-4_Vanilla_NoRules_statistics.json").read_text())
    human = [int(row["human_label"]) for row in gpt4_verdicts]
    noswap = [1 if row["judge_winner_noswap"] == "1" else 0 for row in gpt4_verdicts]
    swap = [1 if row["judge_winner_swap"] == "1" else 0 for row in gpt4_verdicts]

    assert cohen_kappa(noswap, human) == pytest.approx(upstream["kappa_False"], abs=1e-12)
    assert cohen_kappa(swap, human) == pytest.approx(upstream["kappa_True"], abs=1e-12)
    assert cohen_kappa(noswap, swap) == pytest.approx(upstream["kappa_agreement"], abs=1e-12)
    assert cohen_kappa_score(noswap, human) == pytest.approx(upstream["kappa_False"], abs=1e-12)
    assert upstream["correct_False"].startswith("159 / 200")
