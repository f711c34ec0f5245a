"""Settings of the metric scorer."""

from medbench_runtime.settings import ServiceSettings


class MetricScorerSettings(ServiceSettings):
    """Metric-scorer settings (shared MEDBENCH_* groups only, for now)."""

    service_name: str = "metric_scorer"
    # How an item's components (objective ones and the judge's) merge: "mean" or "min".
    # Recorded with every score, so a report always says which rule made it.
    merge_rule: str = "mean"
