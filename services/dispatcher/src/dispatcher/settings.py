"""Settings of the dispatcher."""

from medbench_runtime.settings import ServiceSettings


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
