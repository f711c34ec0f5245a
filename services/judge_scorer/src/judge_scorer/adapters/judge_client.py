"""JudgeClient: one judge model's chat completions, within its concurrency, with retries."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from prometheus_client import Counter, Histogram

from judge_scorer.settings import JudgeModel, JudgeSettings
from medbench_runtime.openai_endpoint import CallResult, OpenAIEndpoint

CALLS = Counter("medbench_judge_calls_total", "Judge model calls by outcome.", ["outcome"])
LATENCY = Histogram(
    "medbench_judge_latency_seconds",
    "Judge call latency.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60, 120),
)
TOKENS = Counter("medbench_judge_tokens_total", "Judge tokens by kind.", ["kind"])


class JudgeUnavailable(Exception):
    """The judge server kept failing (timeouts, 5xx, 429) through every attempt: an outage of
    the platform's own judge, retried later, never scored."""


class JudgeRefused(Exception):
    """The judge server refused the request (4xx other than 408/429): a configuration error
    (wrong model name, key, or request shape) that retrying will not mend."""


class JudgeClient:
    """Calls one judge model with temperature 0."""

    def __init__(
        self,
        config: JudgeModel,
        endpoint: OpenAIEndpoint,
        settings: JudgeSettings,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.model = config.model
        self._base_url = config.base_url
        self._api_key = config.api_key.get_secret_value()
        self._endpoint = endpoint
        self._settings = settings
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._rand = rand

    async def complete(self, messages: list[dict[str, Any]]) -> str:
        """The judge's reply text."""
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": self._settings.max_tokens,
        }
        for attempt in range(1, self._settings.max_attempts + 1):
            async with self._slots:
                result = await self._endpoint.chat(self._base_url, self._api_key, body)
            LATENCY.observe(result.latency_ms / 1000)
            if result.status == 200:
                CALLS.labels("ok").inc()
                for kind in ("prompt_tokens", "completion_tokens"):
                    TOKENS.labels(kind.removesuffix("_tokens")).inc(
                        (result.usage or {}).get(kind, 0)
                    )
                return result.text
            status = result.status
            if status is not None and 400 <= status < 500 and status not in (408, 429):
                CALLS.labels("refused").inc()
                raise JudgeRefused(f"judge {self.model} refused the request: {result.error}")
            CALLS.labels("retry" if attempt < self._settings.max_attempts else "failed").inc()
            if attempt < self._settings.max_attempts:
                await asyncio.sleep(self._delay(attempt, result))
        raise JudgeUnavailable(
            f"judge {self.model} failed {self._settings.max_attempts} times: {result.error}"
        )

    def _delay(self, attempt: int, result: CallResult) -> float:
        """Retry-After when the server gives one, else exponential backoff with jitter."""
        ceiling = self._settings.retry_max_delay_s
        if result.retry_after:
            try:
                return min(ceiling, max(0.0, float(result.retry_after)))
            except ValueError:
                try:
                    when = parsedate_to_datetime(result.retry_after)
                    return min(ceiling, max(0.0, (when - datetime.now(UTC)).total_seconds()))
                except (TypeError, ValueError):
                    pass
        base = min(ceiling, self._settings.retry_base_delay_s * 2 ** (attempt - 1))
        return base * (0.5 + self._rand() / 2)
