"""Failure handling of the endpoint contract: classify a response, back off, cap retries (pure)."""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


class Outcome(enum.Enum):
    """What to do with one request to a partner's endpoint."""

    SUCCESS = "success"
    RETRY = "retry"
    FAIL_ITEM_INFRA = "fail_item_infra"
    """Infrastructure failure: not a wrong answer, not charged, resumable later."""
    FAIL_SUBMISSION = "fail_submission"
    """The endpoint rejected us (bad request, auth, wrong model): fail the whole submission."""


RETRYABLE_4XX = frozenset({408, 409, 425, 429})
"""Timeout, conflict, too early, too many requests: the same request may succeed later."""


def classify(status: int | None, error: str | None) -> Outcome:
    """Maps a response to an outcome.

    Args:
        status: the HTTP status, or None when no response arrived.
        error: why the exchange failed (timeout, connection reset, malformed JSON body), or
            the endpoint's reason for an error status; None when nothing went wrong.

    No response, a 2xx whose body could not be used, 408/409/425/429 and every 5xx are retried.
    Other 3xx and 4xx mean the endpoint as declared rejects us, so the submission fails (the
    dispatcher does not follow redirects: the declared URL must be the one that answers).
    """
    if status is None:
        if error is None:
            raise ValueError("classify needs a status or an error")
        return Outcome.RETRY
    if 200 <= status <= 299:
        return Outcome.SUCCESS if error is None else Outcome.RETRY
    if status in RETRYABLE_4XX or 500 <= status <= 599:
        return Outcome.RETRY
    if 300 <= status <= 499:
        return Outcome.FAIL_SUBMISSION
    # Not a final HTTP status at all: a garbled response, as good as none.
    return Outcome.RETRY


# 2**1000 * base still fits a float (possibly as inf, which min() then caps); 2**1024 raises.
_MAX_EXPONENT = 1000


@dataclass(frozen=True)
class RetryPolicy:
    """Retry limits for one item's request."""

    max_attempts: int = 6
    """Attempts per item, the first one included."""
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    budget_fraction: float = 0.2
    """Retries a submission may spend per call made, beyond ``RetryBudget.min_retries``."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not 0 < self.base_delay_s <= self.max_delay_s:
            raise ValueError(
                f"need 0 < base_delay_s <= max_delay_s, got {self.base_delay_s} and "
                f"{self.max_delay_s}"
            )
        if not 0 <= self.budget_fraction <= 1:
            raise ValueError(f"budget_fraction must be in [0, 1], got {self.budget_fraction}")

    @property
    def retry_after_cap_s(self) -> float:
        """The longest Retry-After honoured: a longer one is waited this long only."""
        return self.max_delay_s * 4

    def delay(self, attempt: int, rand: Callable[[], float], retry_after_s: float | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        Full jitter: ``rand() * min(max_delay_s, base_delay_s * 2**(attempt - 1))``, so that
        clients that failed together do not retry together. A Retry-After from the endpoint is
        a floor: never retry sooner than it asks, though never wait longer than
        ``retry_after_cap_s`` on its word.

        Args:
            attempt: the attempt that just failed, from 1.
            rand: a uniform draw from [0, 1), injected so tests are deterministic.
            retry_after_s: the endpoint's Retry-After in seconds, if it sent one.
        """
        if attempt < 1:
            raise ValueError(f"attempt counts from 1, got {attempt}")
        draw = rand()
        if not 0.0 <= draw <= 1.0:
            raise ValueError(f"rand() must return a number in [0, 1], got {draw}")
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** min(attempt - 1, _MAX_EXPONENT))
        wait = draw * ceiling
        if retry_after_s is not None and not math.isnan(retry_after_s):
            wait = max(wait, min(max(retry_after_s, 0.0), self.retry_after_cap_s))
        return wait


_DELAY_SECONDS = re.compile(r"\d+(?:\.\d+)?")


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date.

    A date in the past gives 0.0. An absent or garbled header gives None, so that it is ignored
    rather than failing the request. Fractional seconds are accepted although the RFC allows
    only whole ones, since some servers send them.

    Args:
        value: the header value, if any.
        now: the current time, timezone-aware (from the injected clock).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if value is None:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # HTTP-dates are always GMT; "-0000" and asctime forms parse as naive.
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


class RetryBudget:
    """One submission's allowance of retries, so that a failing endpoint cannot multiply load.

    At any moment the retries spent may not exceed ``max(min_retries, fraction * calls)``, where
    calls counts first attempts (``record_call``), not retries: a submission's load is then at
    most ``1 + fraction`` times its calls, plus ``min_retries``. Like a token bucket, each call
    adds ``fraction`` of a token and each retry takes one.
    """

    def __init__(self, fraction: float = 0.2, min_retries: int = 10) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        if min_retries < 0:
            raise ValueError(f"min_retries must not be negative, got {min_retries}")
        self._fraction = fraction
        self._min_retries = min_retries
        self._calls = 0
        self._spent = 0

    @classmethod
    def for_policy(cls, policy: RetryPolicy) -> RetryBudget:
        return cls(fraction=policy.budget_fraction)

    @property
    def calls(self) -> int:
        return self._calls

    @property
    def spent(self) -> int:
        return self._spent

    @property
    def allowed(self) -> float:
        """Retries allowed so far in total, spent ones included."""
        return max(float(self._min_retries), self._fraction * self._calls)

    def record_call(self) -> None:
        """Counts one item's first attempt."""
        self._calls += 1

    def try_spend(self) -> bool:
        """Takes one retry from the budget; False, taking nothing, when it is exhausted."""
        if self._spent + 1 > self.allowed:
            return False
        self._spent += 1
        return True


def decide(outcome: Outcome, attempt: int, policy: RetryPolicy, budget: RetryBudget) -> Outcome:
    """The final outcome of failed attempt number ``attempt`` (1-based).

    A RETRY becomes FAIL_ITEM_INFRA once the item has used ``policy.max_attempts`` or the
    submission's budget is spent; the budget is charged only for retries that will happen.
    """
    if outcome is not Outcome.RETRY:
        return outcome
    if attempt >= policy.max_attempts or not budget.try_spend():
        return Outcome.FAIL_ITEM_INFRA
    return Outcome.RETRY
