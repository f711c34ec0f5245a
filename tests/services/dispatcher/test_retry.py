"""The endpoint contract's failure handling: classification, backoff, Retry-After, budgets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.core.retry import (
    Outcome,
    RetryBudget,
    RetryPolicy,
    classify,
    decide,
    parse_retry_after,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
_FEW = settings(max_examples=100, deadline=None)


@pytest.mark.parametrize(
    ("status", "error", "outcome"),
    [
        (None, "timeout after 60s", Outcome.RETRY),
        (None, "connection reset by peer", Outcome.RETRY),
        (None, "malformed JSON body", Outcome.RETRY),
        (200, None, Outcome.SUCCESS),
        (200, "body is not JSON", Outcome.RETRY),
        (408, None, Outcome.RETRY),
        (409, None, Outcome.RETRY),
        (425, None, Outcome.RETRY),
        (429, "rate limited", Outcome.RETRY),
        (500, None, Outcome.RETRY),
        (502, None, Outcome.RETRY),
        (503, None, Outcome.RETRY),
        (504, None, Outcome.RETRY),
        (507, None, Outcome.RETRY),
        (599, None, Outcome.RETRY),
        (400, "messages: invalid role", Outcome.FAIL_SUBMISSION),
        (401, "invalid api key", Outcome.FAIL_SUBMISSION),
        (403, None, Outcome.FAIL_SUBMISSION),
        (404, "model 'med-7b' does not exist", Outcome.FAIL_SUBMISSION),
        (413, None, Outcome.FAIL_SUBMISSION),
        (422, None, Outcome.FAIL_SUBMISSION),
        (301, None, Outcome.FAIL_SUBMISSION),
        (999, None, Outcome.RETRY),
    ],
)
def test_classify(status: int | None, error: str | None, outcome: Outcome) -> None:
    assert classify(status, error) is outcome


def test_classify_needs_a_status_or_an_error() -> None:
    with pytest.raises(ValueError):
        classify(None, None)


# --- backoff ----------------------------------------------------------------------------------


def test_backoff_ceiling_doubles_up_to_the_maximum() -> None:
    policy = RetryPolicy()
    ceilings = [policy.delay(attempt, lambda: 1.0, None) for attempt in range(1, 10)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_backoff_is_full_jitter() -> None:
    policy = RetryPolicy()
    assert policy.delay(4, lambda: 0.0, None) == 0.0
    assert policy.delay(4, lambda: 0.25, None) == 1.0


def test_retry_after_is_a_floor() -> None:
    policy = RetryPolicy()
    assert policy.delay(1, lambda: 0.0, 7.0) == 7.0
    assert policy.delay(7, lambda: 0.9, 7.0) == 27.0
    assert policy.delay(1, lambda: 0.5, -3.0) == 0.25


def test_retry_after_is_capped_at_four_times_the_maximum_delay() -> None:
    assert RetryPolicy().delay(1, lambda: 0.0, 3600.0) == 120.0
    assert RetryPolicy(max_delay_s=5.0).delay(1, lambda: 0.0, float("inf")) == 20.0


def test_a_huge_attempt_number_does_not_overflow() -> None:
    assert RetryPolicy().delay(10_000, lambda: 1.0, None) == 30.0


def test_delay_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="attempt"):
        RetryPolicy().delay(0, lambda: 0.5, None)
    with pytest.raises(ValueError, match="rand"):
        RetryPolicy().delay(1, lambda: 1.5, None)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"base_delay_s": 0.0}, {"base_delay_s": 60.0}, {"budget_fraction": 1.5}],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@_FEW
@given(
    st.integers(1, 50),
    st.floats(0.0, 1.0),
    st.none() | st.floats(-10.0, 1e6, allow_nan=False),
)
def test_delay_is_bounded_and_never_sooner_than_retry_after(
    attempt: int, draw: float, retry_after_s: float | None
) -> None:
    policy = RetryPolicy()
    wait = policy.delay(attempt, lambda: draw, retry_after_s)
    assert 0.0 <= wait <= max(policy.max_delay_s, policy.retry_after_cap_s)
    if retry_after_s is not None:
        assert wait >= min(retry_after_s, policy.retry_after_cap_s)


# --- Retry-After ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Sat, 01 Mar 2025 12:00:30 GMT", 30.0),
        ("Saturday, 01-Mar-25 12:01:00 GMT", 60.0),
        ("Sat Mar  1 12:00:10 2025", 10.0),
        ("Sat, 01 Mar 2025 11:00:00 GMT", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_parse_retry_after_uses_the_injected_clock() -> None:
    later = NOW + timedelta(seconds=20)
    assert parse_retry_after("Sat, 01 Mar 2025 12:00:30 GMT", later) == 10.0


def test_parse_retry_after_needs_an_aware_clock() -> None:
    with pytest.raises(ValueError, match="timezone"):
        parse_retry_after("5", datetime(2025, 3, 1))  # noqa: DTZ001


# --- budget and decide ------------------------------------------------------------------------


def test_budget_allows_ten_retries_before_any_calls() -> None:
    budget = RetryBudget()
    assert [budget.try_spend() for _ in range(11)] == [True] * 10 + [False]
    assert budget.spent == 10


def test_budget_grows_with_a_fifth_of_the_calls() -> None:
    budget = RetryBudget.for_policy(RetryPolicy())
    for _ in range(100):
        budget.record_call()
    spent = 0
    while budget.try_spend():
        spent += 1
    assert spent == 20
    for _ in range(5):
        budget.record_call()
    assert budget.try_spend()
    assert not budget.try_spend()


@_FEW
@given(st.lists(st.booleans(), max_size=300), st.floats(0.0, 1.0))
def test_spent_retries_never_exceed_the_allowance(calls: list[bool], fraction: float) -> None:
    budget = RetryBudget(fraction=fraction)
    for is_call in calls:
        if is_call:
            budget.record_call()
        else:
            budget.try_spend()
        assert budget.spent <= max(10, fraction * budget.calls)


@pytest.mark.parametrize("outcome", [Outcome.SUCCESS, Outcome.FAIL_SUBMISSION])
def test_decide_passes_final_outcomes_through(outcome: Outcome) -> None:
    budget = RetryBudget()
    assert decide(outcome, 99, RetryPolicy(), budget) is outcome
    assert budget.spent == 0


def test_decide_retries_until_max_attempts_then_fails_the_item() -> None:
    policy = RetryPolicy(max_attempts=3)
    budget = RetryBudget()
    decisions = [decide(Outcome.RETRY, attempt, policy, budget) for attempt in (1, 2, 3)]
    assert decisions == [Outcome.RETRY, Outcome.RETRY, Outcome.FAIL_ITEM_INFRA]
    assert budget.spent == 2, "the attempt that is not retried costs no budget"


def test_decide_fails_the_item_when_the_budget_is_spent() -> None:
    budget = RetryBudget(min_retries=1)
    assert decide(Outcome.RETRY, 1, RetryPolicy(), budget) is Outcome.RETRY
    assert decide(Outcome.RETRY, 1, RetryPolicy(), budget) is Outcome.FAIL_ITEM_INFRA


def test_a_dead_endpoint_costs_at_most_a_fifth_more_calls_plus_ten() -> None:
    policy = RetryPolicy()
    budget = RetryBudget.for_policy(policy)
    requests = 0
    failed = 0
    for _ in range(1000):
        budget.record_call()
        attempt = 1
        while True:
            requests += 1
            outcome = decide(classify(503, None), attempt, policy, budget)
            if outcome is not Outcome.RETRY:
                failed += outcome is Outcome.FAIL_ITEM_INFRA
                break
            attempt += 1
    assert failed == 1000
    assert requests <= 1000 * 1.2 + 10
