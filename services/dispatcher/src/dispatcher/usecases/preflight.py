"""EndpointCheck: the endpoint contract's first step, before any run."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from dispatcher.core.ports import Endpoint
from dispatcher.core.retry import Outcome, classify
from medbench_runtime.egress import BadEndpointUrl, EgressRefused, parse_endpoint_url
from medbench_runtime.errors import InvalidArgument

# Model ids a "model not listed" reason names, and how much of each.
SHOWN_MODELS = 10
SHOWN_MODEL_CHARS = 80


@dataclass(frozen=True)
class Preflight:
    """ok, or the failure class (never a reply body)."""

    ok: bool
    reason: str = ""
    latency_ms: float = 0.0


class EndpointCheck:
    """Reachable and authorised (GET /models), model listed, answers a tiny prompt."""

    def __init__(self, endpoint: Endpoint, timeout_s: float = 60.0) -> None:
        self._endpoint = endpoint
        self._timeout_s = timeout_s

    async def preflight(self, base_url: str, model: str, api_key: str) -> Preflight:
        """INVALID_ARGUMENT, before any connection, for a URL that is not usable or an endpoint
        the egress policy refuses (checked where the connection is made: every address the host
        resolves to); ok=False with the failure class otherwise."""
        try:
            url = parse_endpoint_url(base_url)
        except BadEndpointUrl as exc:
            raise InvalidArgument(f"endpoint.base_url {exc}") from None
        try:
            async with asyncio.timeout(self._timeout_s):
                reason, latency_ms = await self._check(url.url, model, api_key)
        except EgressRefused as exc:
            raise InvalidArgument(
                f"endpoint.base_url refused by the egress policy: {exc}"
            ) from None
        except TimeoutError:
            reason = f"the preflight did not finish within {self._timeout_s:g} s (timeout)"
        if reason:
            return Preflight(ok=False, reason=reason)
        return Preflight(ok=True, latency_ms=latency_ms)

    async def _check(self, base_url: str, model: str, api_key: str) -> tuple[str, float]:
        """("", latency of the tiny prompt) when the endpoint passes, else (reason, 0)."""
        listed = await self._endpoint.models(base_url, api_key)
        if listed.status is None:
            return f"GET /models failed: {listed.error}", 0.0
        if listed.status in (401, 403):
            return f"endpoint refused the API key (HTTP {listed.status})", 0.0
        if 200 <= listed.status <= 299:
            if listed.models is None:
                return f"GET /models: {listed.error}", 0.0
            if listed.models and model not in listed.models:
                shown = [m[:SHOWN_MODEL_CHARS] for m in sorted(listed.models)[:SHOWN_MODELS]]
                return f"model {model!r} is not among {shown}", 0.0
        body = {
            "model": model,
            "max_tokens": 8,
            "temperature": 0,
            "messages": [{"role": "user", "content": "请回答：1+1=？只输出数字。"}],
        }
        # A busy endpoint may throttle or hiccup once; the contract retries those.
        for attempt in range(3):
            result = await self._endpoint.chat(base_url, api_key, body)
            if result.refused:  # the name now resolves elsewhere: refused all the same
                raise EgressRefused(result.error.removeprefix("refused by the egress policy: "))
            if classify(result.status, result.error or None) is not Outcome.RETRY:
                break
            await asyncio.sleep(0.2 * (attempt + 1))
        if result.status != 200:
            return f"tiny prompt failed: {result.error}", 0.0
        return "", result.latency_ms
