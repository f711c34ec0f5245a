"""API-mode endpoint rules: validation and the board's decoding policy (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from medbench_runtime.egress import BadEndpointUrl, EgressPolicy, EgressRefused, parse_endpoint_url
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


MAX_API_KEY = 4096


def check_endpoint(
    base_url: str,
    model: str,
    max_concurrency: int,
    api_key: str = "",
    egress: EgressPolicy | None = None,
) -> str:
    """The normalised base URL; INVALID_ARGUMENT naming the field of an unusable endpoint.

    egress: what the policy can refuse without resolving a name (the port, an address literal)
    is refused here, before the dispatcher is asked; names are resolved and checked where the
    connection is made (the dispatcher). None: the production default policy.
    """
    # The key goes out as an HTTP header value: printable ASCII only.
    if len(api_key) > MAX_API_KEY or any(not " " <= c <= "~" for c in api_key):
        raise InvalidArgument(
            f"endpoint.api_key must be at most {MAX_API_KEY} printable ASCII characters"
        )
    try:
        url = parse_endpoint_url(base_url)
    except BadEndpointUrl as exc:
        raise InvalidArgument(f"endpoint.base_url {exc}") from None
    try:
        (egress or EgressPolicy()).check_static(url)
    except EgressRefused as exc:
        raise InvalidArgument(f"endpoint.base_url refused by the egress policy: {exc}") from None
    if not model.strip() or len(model) > 200:
        raise InvalidArgument("endpoint.model must be 1-200 characters")
    if not 1 <= max_concurrency <= MAX_CONCURRENCY:
        raise InvalidArgument(f"endpoint.max_concurrency must be 1-{MAX_CONCURRENCY}")
    return url.url


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
