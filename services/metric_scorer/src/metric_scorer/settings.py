"""Settings of the metric scorer."""

from typing import Literal

from medbench_runtime.settings import ServiceSettings


class MetricScorerSettings(ServiceSettings):
    """Metric-scorer settings (shared MEDBENCH_* groups only, for now)."""

    service_name: str = "metric_scorer"
    # How an item's components (objective ones and the judge's) merge: "mean" or "min".
    # Recorded with every score, so a report always says which rule made it.
    merge_rule: str = "mean"
    # Who decides key-point recall of items the judge scores too ("key_point_recall+judge"):
    # "judge" (the judge's verdict says which key points the answer states; its part carries
    # the component) or "lexical" (matched here by containment or fuzzy match, named
    # key_point_recall_lexical in every part and in the report's metric spec). A spec without
    # the judge is always matched lexically, so labelled.
    key_point_recall: Literal["judge", "lexical"] = "judge"
