"""Channels to peer services."""

from __future__ import annotations

import grpc

from medbench_runtime.bearer import authorized_channel
from medbench_runtime.service import grpc_options
from medbench_runtime.settings import ServiceSettings


def insecure_channel(address: str, settings: ServiceSettings) -> grpc.aio.Channel:
    """A channel to a peer whose calls carry the service token; UNAVAILABLE is retried for
    idempotent calls (service config)."""
    service_config = (
        '{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 5,'
        ' "initialBackoff": "0.2s", "maxBackoff": "2s", "backoffMultiplier": 2,'
        ' "retryableStatusCodes": ["UNAVAILABLE"]}}]}'
    )
    return authorized_channel(
        address,
        settings.auth.service_token.get_secret_value(),
        options=[
            *grpc_options(settings),
            ("grpc.service_config", service_config),
            ("grpc.enable_retries", 1),
        ],
    )
