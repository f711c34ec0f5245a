"""Settings of the dispatcher."""

from medbench_runtime.egress import EgressSettings
from medbench_runtime.http_client import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_HEADER_BYTES
from medbench_runtime.settings import ServiceSettings
from medbench_storage.secrets import SecretsSettings


class DispatcherSettings(ServiceSettings):
    """Dispatcher settings."""

    service_name: str = "dispatcher"
    # Calls in flight across every endpoint; each endpoint also has its declared cap.
    global_concurrency: int = 256
    request_timeout_s: float = 120.0
    # The endpoint contract's retries: exponential backoff with full jitter from this base.
    retry_base_delay_s: float = 0.5
    retry_max_delay_s: float = 30.0
    max_attempts: int = 6
    # AIMD decreases only when 429s exceed this share of an endpoint's last 50 responses.
    throttle_tolerance: float = 0.2
    # Where partners' endpoints may be (MEDBENCH_EGRESS__ALLOW_CIDRS, __DENY_CIDRS, __PORTS):
    # public addresses on ports 80, 443, 8000-8999 by default (see medbench_runtime.egress).
    egress: EgressSettings = EgressSettings()
    # An endpoint's reply is cut beyond these (an infrastructure failure, never kept whole).
    reply_max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    reply_max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # The whole preflight (GET /models and the tiny prompt with its retries) ends by then.
    preflight_timeout_s: float = 60.0
    # Key-encryption keys of partners' endpoint API keys (required: the dispatcher opens them).
    secrets: SecretsSettings = SecretsSettings()
