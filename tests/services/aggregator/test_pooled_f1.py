"""Micro-F1 datasets: the dataset score pools tp, fp and fn over the items (checked against
scikit-learn), and every bootstrap resample pools the counts of the items it drew."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.metrics import f1_score

from aggregator.adapters.score_codec import entries, pack
from aggregator.core.parts import bootstrap_units, dataset_metrics, merge_parts
from aggregator.core.pooling import pooled_f1
from aggregator.core.report import build_report
from aggregator.core.uncertainty import bootstrap_report, resample_draws
from aggregator.entrypoints import convert
from aggregator.usecases.aggregation import Aggregation
from medbench.scoring.v1 import scoring_events_pb2 as ev
from tests.services.aggregator.fakes import InMemoryScores

# (tp, fp, fn) per item: one easy item with a single fact, a long one half right, one missed.
COUNTS = [(1, 0, 0), (2, 6, 6), (0, 1, 1), (4, 1, 0), (0, 0, 0), (3, 3, 2)]


def item_f1(tp: int, fp: int, fn: int) -> float:
    return pooled_f1(tp, fp, fn)


def sklearn_micro_f1(counts: list[tuple[int, int, int]]) -> float:
    """scikit-learn's micro-F1 on the facts behind the counts, as a multilabel indicator: each
    tp a fact predicted and expected, each fp one predicted only, each fn one expected only
    (the second label is never set, so it adds nothing to the pooled counts)."""
    truth: list[list[int]] = []
    predicted: list[list[int]] = []
    for tp, fp, fn in counts:
        truth += [[1, 0]] * tp + [[0, 0]] * fp + [[1, 0]] * fn
        predicted += [[1, 0]] * tp + [[1, 0]] * fp + [[0, 0]] * fn
    return float(f1_score(np.array(truth), np.array(predicted), average="micro"))


def record(
    item: str,
    counts: tuple[int, int, int],
    dataset: str = "CMeEE",
    others: tuple[tuple[str, float], ...] = (),
    metric: str = "micro_f1",
    rule: str = "mean",
) -> dict[str, Any]:
    f1 = item_f1(*counts)
    values = [f1, *(v for _, v in others)]
    components = [["micro_f1", f1], *([n, v] for n, v in others)]
    return {
        "item_id": item,
        "dataset": dataset,
        "dimension": "understanding",
        "group_id": item,
        "component": "metric",
        "metric": metric,
        "score": sum(values) / len(values),
        "components": components,
        "merge_rule": rule,
        "counts": list(counts),
    }


def test_the_dataset_score_is_the_pooled_micro_f1_of_scikit_learn() -> None:
    records = [record(f"i{n}", c) for n, c in enumerate(COUNTS)]
    [dataset] = build_report([i for i, _ in merge_parts(records)]).datasets
    per_item_mean = 100 * np.mean([item_f1(*c) for c in COUNTS])
    assert dataset.score == pytest.approx(100 * sklearn_micro_f1(COUNTS))
    assert dataset.score == pytest.approx(50.0)  # 2 x 10 tp / (2 x 10 tp + 11 fp + 9 fn)
    # The per-item mean stays visible as item_mean, and differs: long items weigh more pooled.
    assert dataset.item_mean == pytest.approx(per_item_mean)
    assert abs(dataset.score - dataset.item_mean) > 10
    assert dataset.pooled_f1 == pytest.approx(dataset.score)


def test_other_components_keep_their_mean_beside_the_pooled_f1() -> None:
    recall = [0.5, 1.0, 0.0, 0.75, 1.0, 0.25]
    records = [
        record(f"i{n}", c, "MedReportQC", (("key_point_recall", r),))
        for n, (c, r) in enumerate(zip(COUNTS, recall, strict=True))
    ]
    [dataset] = build_report([i for i, _ in merge_parts(records)]).datasets
    expected = (sklearn_micro_f1(COUNTS) + float(np.mean(recall))) / 2
    assert dataset.score == pytest.approx(100 * expected)


def test_under_the_min_rule_each_item_takes_the_least_of_the_pooled_f1_and_its_others() -> None:
    recall = [0.1, 1.0, 1.0, 1.0, 0.2, 1.0]
    records = [
        record(f"i{n}", c, "MedReportQC", (("key_point_recall", r),), rule="min")
        for n, (c, r) in enumerate(zip(COUNTS, recall, strict=True))
    ]
    [dataset] = build_report([i for i, _ in merge_parts(records)]).datasets
    f1 = sklearn_micro_f1(COUNTS)
    assert dataset.score == pytest.approx(100 * float(np.mean([min(f1, r) for r in recall])))


def test_every_bootstrap_resample_pools_the_counts_it_drew() -> None:
    records = [record(f"i{n}", c) for n, c in enumerate(COUNTS * 5)]
    merged = merge_parts(records)
    units = bootstrap_units(merged, {})
    intervals = bootstrap_report(units, n_resamples=400, seed=11)
    [draws] = resample_draws(units, n_resamples=400, seed=11)
    # Units follow item id order (merge_parts sorts), so map each back to its own counts.
    by_id = {f"i{n}": c for n, c in enumerate(COUNTS * 5)}
    counts = np.array([by_id[item.item_id] for item, _ in merged])
    samples = []
    for row in draws.indices:
        tp, fp, fn = counts[row].sum(axis=0)
        samples.append(100 * sklearn_micro_f1([(int(tp), int(fp), int(fn))]))
    low, high = np.quantile(samples, [0.025, 0.975])
    interval = intervals.datasets["CMeEE"]
    assert interval.score == pytest.approx(build_report([i for i, _ in merged]).overall)
    assert interval.score == pytest.approx(100 * sklearn_micro_f1(COUNTS * 5))
    assert interval.low == pytest.approx(low) and interval.high == pytest.approx(high)
    assert interval.low < interval.score < interval.high


def test_stored_batches_keep_the_counts_and_the_metric_the_pooling_needs() -> None:
    records = [record(f"i{n}", c, metric="micro_f1+key_point_recall") for n, c in enumerate(COUNTS)]
    read = list(entries(pack(records)))
    assert [e.counts for e in read] == COUNTS
    assert dataset_metrics(read) == {"CMeEE": "micro_f1+key_point_recall"}


async def test_the_report_scores_a_micro_f1_dataset_pooled_and_names_its_metric() -> None:
    store = InMemoryScores()
    scores = [
        ev.ItemScore(
            item_id=f"i{n}",
            dataset="CMeEE",
            dimension="understanding",
            group_id=f"i{n}",
            component="metric",
            metric="micro_f1",
            score=item_f1(*c),
            components=[ev.ComponentScore(name="micro_f1", score=item_f1(*c))],
            tp=c[0],
            fp=c[1],
            fn=c[2],
        )
        for n, c in enumerate(COUNTS)
    ]
    judged = ev.ItemScore(
        item_id="h1",
        dataset="MedHC",
        dimension="knowledge",
        group_id="h1",
        component="judge",
        metric="judge",
        score=0.5,
        components=[ev.ComponentScore(name="judge", score=0.5)],
    )
    event = ev.ItemsScored(
        event_id="sub-1:b1:metric",
        batch_id="b1",
        scores=[*scores, judged],
        scorer_version="metric-scorer/1",
        context=ev.ScoringContext(
            submission_id="sub-1",
            tenant_id="t",
            pool_id="pool-1",
            expected_items=len(COUNTS) + 1,
            dataset_rules={"CMeEE": "mean", "MedHC": "mean"},
        ),
    )
    await Aggregation(store).record(convert.batch_from_proto(event))
    datasets = {d["dataset"]: d for d in store.reports["sub-1"]["datasets"]}
    assert datasets["CMeEE"]["score"] == pytest.approx(100 * sklearn_micro_f1(COUNTS))
    assert datasets["CMeEE"]["metric"] == "micro_f1"
    assert datasets["MedHC"]["metric"] == "judge"
    proto = convert.report_to_proto(store.reports["sub-1"]).datasets
    assert {d.dataset: d.metric for d in proto} == {"CMeEE": "micro_f1", "MedHC": "judge"}
