"""Channels to peer services."""

from __future__ import annotations

import grpc

from medbench_runtime.service import grpc_options
from medbench_runtime.settings import ServiceSettings


def insecure_channel(address: str, settings: ServiceSettings) -> grpc.aio.Channel:
    """A channel to a peer, retrying UNAVAILABLE for idempotent calls (service config)."""
    service_config = (
        '{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 5,'
        ' "initialBackoff": "0.2s", "maxBackoff": "2s", "backoffMultiplier": 2,'
        ' "retryableStatusCodes": ["UNAVAILABLE"]}}]}'
    )
    return grpc.aio.insecure_channel(
        address,
        options=[
            *grpc_options(settings),
            ("grpc.service_config", service_config),
            ("grpc.enable_retries", 1),
        ],
    )
