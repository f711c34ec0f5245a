"""Settings of the metric scorer."""

from medbench_runtime.settings import ServiceSettings


class MetricScorerSettings(ServiceSettings):
    """Metric-scorer settings (shared MEDBENCH_* groups only, for now)."""

    service_name: str = "metric_scorer"
