"""Settings of the gateway."""

from medbench_runtime.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    """Gateway settings (shared MEDBENCH_* groups only, for now)."""

    service_name: str = "gateway"
