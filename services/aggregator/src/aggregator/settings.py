"""Settings of the aggregator."""

from medbench_runtime.settings import ServiceSettings


class AggregatorSettings(ServiceSettings):
    """Aggregator settings (shared MEDBENCH_* groups only, for now)."""

    service_name: str = "aggregator"
