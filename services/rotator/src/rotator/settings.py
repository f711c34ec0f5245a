"""Settings of the rotator."""

from __future__ import annotations

from pydantic import SecretStr

from medbench_runtime.settings import ServiceSettings


class RotatorSettings(ServiceSettings):
    """Rotator settings; MEDBENCH_REGISTRY_PATH overrides the bundled registry file that seeds
    an empty registry store (version 1)."""

    service_name: str = "rotator"
    registry_path: str = ""
    # How stale a replica's idea of the current registry version may be: a request that uses
    # the registry (imports, listings, rotations; never assignments or downloads) reads the
    # version number at most this late. 0 (default): on every such request, one point read
    # (0.7 ms measured). A replica's own PutDataset, and an import or rotation naming a dataset
    # the version it holds does not know, read it at once whatever this says.
    registry_cache_s: float = 0.0
    # Derives each tenant's option orders and canaries; a leaked file can only be traced with
    # the secret its download was made with. Production sets it from a Kubernetes Secret.
    leak_secret: SecretStr = SecretStr("development-only-leak-secret")
    # Question groups per dataset that each download shows altered for its tenant (canaries,
    # core/canaries.py); a dataset without an item that can be altered has none.
    canaries_per_dataset: int = 1
