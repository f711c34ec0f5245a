"""Item-level scoring: one model answer against its sealed key, with the metric the key names
(pure, no I/O). The dispatcher sits above the table (library.py), which sits above the metric
modules; every one of them shares the types of types.py."""

from __future__ import annotations

from metric_scorer.core.library import LIBRARY
from metric_scorer.core.types import ItemKey, ItemResult, UnknownMetric


def score_item(answer: str, key: ItemKey) -> ItemResult:
    """Scores answer with the metric the key names.

    Raises:
        UnknownMetric: key.metric is not in the library.
    """
    metric = LIBRARY.get(key.metric)
    if metric is None:
        raise UnknownMetric(
            f"item {key.item_id!r} asks for metric {key.metric!r}; known: {sorted(LIBRARY)}"
        )
    return metric(answer, key)
