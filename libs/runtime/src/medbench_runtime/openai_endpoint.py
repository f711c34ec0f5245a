"""OpenAIEndpoint: one call to a partner's /chat/completions, reported, never raised.

What a failed call reports is its failure class (refused by the egress policy, connection
refused, timeout, TLS, a reply over the size limits, HTTP status), never what the other side
sent, except an OpenAI-shaped error's own message: a URL can name anything that speaks HTTP, and
its replies must not come back to the partner who named it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from medbench_runtime.egress import EgressRefused
from medbench_runtime.http_client import HttpClient, HttpError, HttpResponse

MAX_REASON = 200
"""Characters of an endpoint's OpenAI error message kept in a reason."""
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


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
    refused: bool = False
    """The egress policy refused the endpoint: no connection was made; retrying cannot help."""


@dataclass(frozen=True)
class ModelsResult:
    """What GET <base_url>/models gave."""

    status: int | None
    """HTTP status; None when no response came."""
    models: list[str] | None = None
    """Model ids of an OpenAI model list (2xx); None when the reply was not one."""
    error: str = ""
    """The failure class when no response came, or the status line's meaning otherwise."""


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
        except EgressRefused as exc:
            return CallResult(None, error=f"refused by the egress policy: {exc}", refused=True)
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
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            # A 200 with a body that is not a completion is the endpoint's fault, not the
            # model's answer: retried, then an infrastructure failure. Never echoed.
            return CallResult(None, error=NOT_A_COMPLETION, latency_ms=latency)
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else None
        return CallResult(
            200,
            text=text,
            finish_reason=str(choice.get("finish_reason") or ""),
            usage={k: int(v) for k, v in (usage or {}).items() if isinstance(v, int)},
            latency_ms=latency,
        )

    async def models(self, base_url: str, api_key: str) -> ModelsResult:
        """GET <base_url>/models. Raises EgressRefused (before any connection) when the egress
        policy refuses the endpoint."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            response = await self._client.request(
                "GET", base_url.rstrip("/") + "/models", None, headers, self._timeout_s
            )
        except HttpError as exc:
            return ModelsResult(None, error=str(exc))
        if not 200 <= response.status <= 299:
            return ModelsResult(response.status, error=f"HTTP {response.status}")
        try:
            data = response.json()["data"]
            ids = [m["id"] for m in data]
            if not all(isinstance(i, str) for i in ids):
                raise TypeError("model ids are not text")
        except (ValueError, KeyError, TypeError, AttributeError):
            return ModelsResult(response.status, error=NOT_A_MODEL_LIST)
        return ModelsResult(response.status, models=ids)


NOT_A_COMPLETION = "the HTTP 200 reply is not an OpenAI chat completion"
NOT_A_MODEL_LIST = "the reply is not an OpenAI model list"


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _reason(response: HttpResponse) -> str:
    """ "HTTP <status>", with the endpoint's own message when the reply is an OpenAI error object
    (short, unprintable characters dropped); any other body is never repeated."""
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
    except ValueError:
        message = None
    if not isinstance(message, str) or not message.strip():
        return f"HTTP {response.status}"
    short = _UNPRINTABLE.sub(" ", message).strip()[:MAX_REASON]
    return f"HTTP {response.status}: {short}"
