"""Settings of the rotator."""

from __future__ import annotations

from pydantic import SecretStr

from medbench_runtime.settings import ServiceSettings


class RotatorSettings(ServiceSettings):
    """Rotator settings; MEDBENCH_REGISTRY_PATH overrides the bundled registry."""

    service_name: str = "rotator"
    registry_path: str = ""
    # Derives each tenant's option orders and canaries; a leaked file can only be traced with
    # the secret its download was made with. Production sets it from a Kubernetes Secret.
    leak_secret: SecretStr = SecretStr("development-only-leak-secret")
    canaries_per_download: int = 3
