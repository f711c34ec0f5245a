"""Channels to peer services, balanced over the peer's replicas.

A peer's address (MEDBENCH_PEERS__<NAME>) may stand for several replicas: in Kubernetes
`dns:///<name>-headless.<namespace>.svc:<port>` (a headless Service: one A record per ready pod),
locally `ipv4:127.0.0.1:<port1>,127.0.0.1:<port2>`. The channel keeps a connection to every
address and sends each call to the next READY one (`round_robin`); a replica that dies drops out
at once, its calls in flight are retried on the others (UNAVAILABLE, the retry policy below).
The name is resolved again when a connection ends, which the servers force every
MEDBENCH_GRPC_MAX_CONNECTION_AGE_S (medbench_runtime.service.server_options), so replicas
started since get calls too. A plain `host:port` (one address) works as before.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from medbench_runtime.bearer import authorized_channel
from medbench_runtime.service import grpc_options
from medbench_runtime.settings import ServiceSettings

# Retried on UNAVAILABLE (a replica gone, a connection refused): up to 5 attempts in all, each
# sent to the next READY replica (as before replicas: UNAVAILABLE is what a refused or broken
# connection gives; gRPC sends no call again once its response has begun).
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.2s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{"name": [{}], "retryPolicy": RETRY_POLICY}],
    }
)
# Channel options of every peer channel besides grpc_options: a replica that is gone is tried
# again within 5 s (gRPC's default backoff grows to 2 minutes, so a restarted replica would wait
# that long for calls), and DNS is asked again at most every 5 s (default 30 s) when a
# connection ends.
PEER_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.dns_min_time_between_resolutions_ms", 5000),
]


def insecure_channel(address: str, settings: ServiceSettings) -> grpc.aio.Channel:
    """A channel to a peer (one address or several: module doc) whose calls carry the service
    token, balanced round robin over the peer's replicas; UNAVAILABLE is retried (service
    config)."""
    return authorized_channel(
        address,
        settings.auth.service_token.get_secret_value(),
        options=[*grpc_options(settings), *PEER_CHANNEL_OPTIONS],
    )
