"""Settings of the dispatcher."""

from medbench_runtime.settings import ServiceSettings


class DispatcherSettings(ServiceSettings):
    """Dispatcher settings (shared MEDBENCH_* groups only, for now)."""

    service_name: str = "dispatcher"
