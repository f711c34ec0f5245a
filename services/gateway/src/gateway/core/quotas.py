"""Quota rules: a tenant's limits and the windows they are counted in (pure).

Submissions per UTC day, concurrent submissions, items per UTC month, and the caps per pool
that bound adaptive probing of a hidden pool (issue 22): official runs per pool of the API
board, hidden-pool runs (upload mode, self-test runs) per pool and UTC day and per pool. The
ledger that takes and gives back the charges is the QuotaLedger port
(adapters/mongo_quota_ledger.py)."""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from medbench_runtime.errors import ResourceExhausted

MAX_QUOTA = 10**12
QUOTA_FIELDS = (
    "submissions_per_day",
    "concurrent_submissions",
    "items_per_month",
    "official_per_cycle",
    "hidden_per_day",
    "hidden_per_cycle",
)
# A cap per pool lifts only when the board's next pool is published, which the gateway cannot
# foresee: a client honouring retry-after asks again once a day.
CYCLE_RETRY_AFTER_S = 86_400.0


@dataclass(frozen=True)
class Quotas:
    submissions_per_day: int
    concurrent_submissions: int
    items_per_month: int
    # Caps per pool (see PoolRun): official runs per pool of the API board; hidden-pool runs
    # per pool and UTC day, and per pool.
    official_per_cycle: int = 3
    hidden_per_day: int = 2
    hidden_per_cycle: int = 10

    def merged(self, override: Mapping[str, Any] | None) -> Quotas:
        """These defaults with a tenant's non-zero overrides."""
        o = override or {}
        return Quotas(**{f: int(o.get(f) or getattr(self, f)) for f in QUOTA_FIELDS})


@dataclass(frozen=True)
class PoolRun:
    """What a submission is charged on its pool: an official run (API mode under the official
    settings: what the official board shows) or a hidden-pool run (upload mode, or an API-mode
    self-test run; both are scored on a hidden pool)."""

    pool_id: str
    official: bool


def pool_run(pool_id: str, api: bool, self_test: bool) -> PoolRun:
    return PoolRun(pool_id, official=api and not self_test)


@dataclass(frozen=True)
class Cap:
    """One cap a run is charged against: its counter (a key under the tenant) and limit."""

    name: str
    limit: int
    counter: str
    per_day: bool


def caps_for(run: PoolRun, quotas: Quotas, now: datetime) -> tuple[Cap, ...]:
    """The caps a run is charged against, the one that lasts longer first (a refusal names the
    cap a retry tomorrow would not pass)."""
    base = f"p:{run.pool_id}"
    if run.official:
        return (Cap("official_per_cycle", quotas.official_per_cycle, f"{base}:official", False),)
    return (
        Cap("hidden_per_cycle", quotas.hidden_per_cycle, f"{base}:hidden", False),
        Cap("hidden_per_day", quotas.hidden_per_day, f"{base}:hidden:d:{day_of(now)}", True),
    )


def cap_refusal(cap: Cap, tenant_id: str, run: PoolRun, now: datetime) -> ResourceExhausted:
    """RESOURCE_EXHAUSTED naming the cap, its limit and the pool, with when to retry."""
    what = "official runs" if run.official else "hidden-pool runs"
    if cap.per_day:
        return ResourceExhausted(
            f"tenant {tenant_id} has used its {cap.limit} {what} for {day_of(now)} (UTC) on pool "
            f"{run.pool_id} ({cap.name}); retry after midnight UTC",
            retry_after_s=seconds_to_tomorrow(now),
        )
    return ResourceExhausted(
        f"tenant {tenant_id} has used its {cap.limit} {what} on pool {run.pool_id} "
        f"({cap.name}: runs per pool are capped so that a hidden pool's keys cannot be probed); "
        f"the cap resets with the board's next pool",
        retry_after_s=CYCLE_RETRY_AFTER_S,
    )


def spent(cap: Cap, used: int) -> bool:
    return used >= cap.limit


@dataclass(frozen=True)
class BoardPool:
    """The current pool of one board of a track."""

    pool_id: str
    track: int
    api: bool


@dataclass(frozen=True)
class PoolUsage:
    """A tenant's runs on a board's current pool."""

    pool: BoardPool
    official_runs: int
    hidden_runs_today: int
    hidden_runs: int


@dataclass(frozen=True)
class UsageNow:
    quotas: Quotas
    submissions_today: int
    active_submissions: int
    items_this_month: int
    pools: tuple[PoolUsage, ...] = ()


def day_of(now: datetime) -> str:
    return now.strftime("%Y-%m-%d")


def month_of(now: datetime) -> str:
    return now.strftime("%Y-%m")


def seconds_to_tomorrow(now: datetime) -> float:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


def seconds_to_next_month(now: datetime) -> float:
    days = calendar.monthrange(now.year, now.month)[1]
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (start + timedelta(days=days) - now).total_seconds()
