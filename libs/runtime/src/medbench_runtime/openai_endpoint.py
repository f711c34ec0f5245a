"""OpenAIEndpoint: one call to a partner's /chat/completions, reported, never raised."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from medbench_runtime.http_client import HttpClient, HttpError, HttpResponse


@dataclass(frozen=True)
class CallResult:
    """What one HTTP attempt gave."""

    status: int | None
    """HTTP status; None when no response came (timeout, reset, refused)."""
    text: str = ""
    finish_reason: str = ""
    usage: dict[str, int] | None = None
    error: str = ""
    """Why the attempt failed (never contains the API key)."""
    retry_after: str | None = None
    latency_ms: float = 0.0


class OpenAIEndpoint:
    """Calls made with a shared connection pool; the key goes only into the header."""

    def __init__(self, client: HttpClient, timeout_s: float = 60.0) -> None:
        self._client = client
        self._timeout_s = timeout_s

    async def chat(self, base_url: str, api_key: str, body: dict[str, Any]) -> CallResult:
        url = base_url.rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        started = time.perf_counter()
        try:
            response = await self._client.request("POST", url, body, headers, self._timeout_s)
        except HttpError as exc:
            return CallResult(None, error=str(exc), latency_ms=_ms(started))
        latency = _ms(started)
        if response.status != 200:
            return CallResult(
                response.status,
                error=_reason(response),
                retry_after=response.headers.get("retry-after"),
                latency_ms=latency,
            )
        try:
            payload = response.json()
            choice = payload["choices"][0]
            text = choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("content is not text")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            # A 200 with a body that is not a completion is the endpoint's fault, not the
            # model's answer: retried, then an infrastructure failure.
            return CallResult(None, error=f"malformed completion: {exc}", latency_ms=latency)
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else None
        return CallResult(
            200,
            text=text,
            finish_reason=str(choice.get("finish_reason") or ""),
            usage={k: int(v) for k, v in (usage or {}).items() if isinstance(v, int)},
            latency_ms=latency,
        )

    async def models(self, base_url: str, api_key: str) -> tuple[int | None, Any]:
        """GET <base_url>/models: (status, parsed body or error text)."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            response = await self._client.request(
                "GET", base_url.rstrip("/") + "/models", None, headers, self._timeout_s
            )
        except HttpError as exc:
            return None, str(exc)
        try:
            return response.status, response.json()
        except ValueError:
            return response.status, response.body[:200].decode(errors="replace")


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _reason(response: HttpResponse) -> str:
    """The endpoint's own words for a refusal, short."""
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
    except ValueError:
        message = None
    return f"HTTP {response.status}: {message or response.body[:200].decode(errors='replace')}"
