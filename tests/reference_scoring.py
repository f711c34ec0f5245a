"""The in-process reference: scores rows with the services' own metric and aggregation code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aggregator.core.report import Report, ScoredItem, build_report
from metric_scorer.core.metrics import ItemKey, score_item
from rotator.core.catalog import dataset_resolver
from rotator.core.registry import load_registry
from rotator.registry import DEFAULT_REGISTRY_PATH


def score_in_process(rows: Sequence[dict[str, Any]], answers: Mapping[str, str]) -> Report:
    """What the platform must report for these bank rows and answers ("" when unanswered)."""
    resolve = dataset_resolver(load_registry(DEFAULT_REGISTRY_PATH))
    items, rules = [], {}
    for row in rows:
        info = resolve(row["dataset"], row["answer_format"])
        assert info is not None, row["dataset"]
        rules[info.name] = info.rule
        result = score_item(
            answers.get(row["item_id"], ""),
            ItemKey(row["item_id"], row["dataset"], info.metric, tuple(row["reference"])),
        )
        items.append(
            ScoredItem(
                row["item_id"], row["dataset"], info.dimension, row["group_id"], result.score
            )
        )
    return build_report(items, rules)
