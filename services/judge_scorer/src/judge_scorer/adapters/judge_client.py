"""JudgeClient: one judge model's chat completions, within its concurrency, with retries."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from prometheus_client import Counter, Histogram

from judge_scorer.core.ports import JudgeReply
from judge_scorer.core.structured import response_format, token_budget
from judge_scorer.settings import JudgeModel, JudgeSettings
from medbench_runtime.openai_endpoint import CallResult, OpenAIEndpoint

# Labelled by judge model (a handful, declared by operators), never by tenant or submission:
# per-submission cost is in the judgments (JudgeService.GetJudgingCost).
CALLS = Counter(
    "medbench_judge_calls_total", "Judge model HTTP attempts by outcome.", ["outcome", "model"]
)
LATENCY = Histogram(
    "medbench_judge_latency_seconds",
    "Judge call latency.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60, 120),
)
TOKENS = Counter(
    "medbench_judge_tokens_total",
    "Judge tokens by kind (prompt, completion) from the server's usage.",
    ["kind", "model"],
)
GPU_SECONDS = Counter(
    "medbench_judge_gpu_seconds_total",
    "Estimated judge GPU time: wall time of the calls x the judge's declared gpus.",
    ["model"],
)


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
        self.structured = config.structured
        self._gpus = config.gpus
        self._base_url = config.base_url
        self._api_key = config.api_key.get_secret_value()
        self._endpoint = endpoint
        self._settings = settings
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._rand = rand

    async def complete(self, messages: list[dict[str, Any]]) -> str:
        """The judge's reply text (no schema)."""
        return (await self.reply(messages)).text

    async def reply(
        self, messages: list[dict[str, Any]], schema: dict[str, Any] | None = None
    ) -> JudgeReply:
        """The judge's reply with its usage. With a schema and a judge declaring a structured
        style, the request asks for decoding under it, with max_tokens raised to what the
        schema's verdict may need."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": self._settings.max_tokens,
        }
        form = None if schema is None else response_format(self.structured, schema)
        if form is not None and schema is not None:
            body["response_format"] = form
            body["max_tokens"] = max(self._settings.max_tokens, token_budget(schema))
        seconds = 0.0
        for attempt in range(1, self._settings.max_attempts + 1):
            async with self._slots:
                result = await self._endpoint.chat(self._base_url, self._api_key, body)
            LATENCY.observe(result.latency_ms / 1000)
            seconds += result.latency_ms / 1000
            GPU_SECONDS.labels(self.model).inc(result.latency_ms / 1000 * self._gpus)
            if result.status == 200:
                CALLS.labels("ok", self.model).inc()
                usage = result.usage or {}
                prompt, completion = (
                    max(0, int(usage.get("prompt_tokens", 0))),
                    max(0, int(usage.get("completion_tokens", 0))),
                )
                TOKENS.labels("prompt", self.model).inc(prompt)
                TOKENS.labels("completion", self.model).inc(completion)
                return JudgeReply(
                    result.text,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    seconds=seconds,
                    gpu_seconds=seconds * self._gpus,
                    structured=form is not None,
                )
            status = result.status
            if status is not None and 400 <= status < 500 and status not in (408, 429):
                CALLS.labels("refused", self.model).inc()
                raise JudgeRefused(f"judge {self.model} refused the request: {result.error}")
            outcome = "retry" if attempt < self._settings.max_attempts else "failed"
            CALLS.labels(outcome, self.model).inc()
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
