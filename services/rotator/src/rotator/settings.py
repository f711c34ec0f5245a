"""Settings of the rotator."""

from __future__ import annotations

from medbench_runtime.settings import ServiceSettings


class RotatorSettings(ServiceSettings):
    """Rotator settings; MEDBENCH_REGISTRY_PATH overrides the bundled registry."""

    service_name: str = "rotator"
    registry_path: str = ""
