"""Settings of the gateway."""

from medbench_runtime.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    """Gateway settings."""

    service_name: str = "gateway"
    # A SCORING (or unstalled DISPATCHING) submission unchanged this long counts as stuck.
    stuck_lease_s: float = 1800.0
