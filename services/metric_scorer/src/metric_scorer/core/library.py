"""Every metric component, by the name the registry's metric specs use (one explicit table)."""

from __future__ import annotations

from metric_scorer.core import (
    boxes,
    choice,
    f1,
    keypoints,
    labels,
    structured,
    text_similarity,
)
from metric_scorer.core.types import Metric

LIBRARY: dict[str, Metric] = {}
for module in (choice, f1, labels, keypoints, structured, boxes, text_similarity):
    for name, metric in module.METRICS.items():
        if name in LIBRARY:
            raise RuntimeError(f"metric {name!r} is defined twice")
        LIBRARY[name] = metric
