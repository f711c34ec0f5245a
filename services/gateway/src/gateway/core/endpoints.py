"""API-mode endpoint rules: validation and the board's decoding policy (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

from medbench_runtime.errors import InvalidArgument

MAX_CONCURRENCY = 256


@dataclass(frozen=True)
class Decoding:
    """Decoding settings of every call of a submission."""

    temperature: float
    max_tokens: int
    context_window: int
    top_p: float | None = None


# The official board's fixed settings (MedBench v4); a self-test submission may declare its own.
OFFICIAL = Decoding(temperature=0.7, max_tokens=512, context_window=2048)


MAX_URL = 2048
MAX_API_KEY = 4096


def check_endpoint(base_url: str, model: str, max_concurrency: int, api_key: str = "") -> None:
    """INVALID_ARGUMENT naming the field of an unusable endpoint."""
    if len(base_url) > MAX_URL:
        raise InvalidArgument(f"endpoint.base_url is longer than {MAX_URL} characters")
    # The key goes out as an HTTP header value: printable ASCII only.
    if len(api_key) > MAX_API_KEY or any(not " " <= c <= "~" for c in api_key):
        raise InvalidArgument(
            f"endpoint.api_key must be at most {MAX_API_KEY} printable ASCII characters"
        )
    parsed = urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidArgument(f"endpoint.base_url {base_url!r} must be an http(s) URL")
    if not model.strip() or len(model) > 200:
        raise InvalidArgument("endpoint.model must be 1-200 characters")
    if not 1 <= max_concurrency <= MAX_CONCURRENCY:
        raise InvalidArgument(f"endpoint.max_concurrency must be 1-{MAX_CONCURRENCY}")


def effective_decoding(declared: Decoding | None, self_test: bool) -> Decoding:
    """The official board always uses OFFICIAL; a self-test submission its declared settings."""
    if not self_test or declared is None:
        return OFFICIAL
    if not 0.0 <= declared.temperature <= 2.0:
        raise InvalidArgument("endpoint.declared.temperature must be within 0-2")
    if not 1 <= declared.max_tokens <= 32768:
        raise InvalidArgument("endpoint.declared.max_tokens must be within 1-32768")
    if declared.context_window <= declared.max_tokens:
        raise InvalidArgument("endpoint.declared.context_window must exceed max_tokens")
    if declared.top_p is not None and not 0.0 < declared.top_p <= 1.0:
        raise InvalidArgument("endpoint.declared.top_p must be within (0, 1]")
    return declared
