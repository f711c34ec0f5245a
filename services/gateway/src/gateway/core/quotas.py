"""Quota rules: a tenant's limits and the windows they are counted in (pure).

Submissions per UTC day, concurrent submissions, items per UTC month. The ledger that takes and
gives back the charges is the QuotaLedger port (adapters/mongo_quota_ledger.py)."""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

MAX_QUOTA = 10**12
QUOTA_FIELDS = ("submissions_per_day", "concurrent_submissions", "items_per_month")


@dataclass(frozen=True)
class Quotas:
    submissions_per_day: int
    concurrent_submissions: int
    items_per_month: int

    def merged(self, override: Mapping[str, Any] | None) -> Quotas:
        """These defaults with a tenant's non-zero overrides."""
        o = override or {}
        return Quotas(
            int(o.get("submissions_per_day") or self.submissions_per_day),
            int(o.get("concurrent_submissions") or self.concurrent_submissions),
            int(o.get("items_per_month") or self.items_per_month),
        )


@dataclass(frozen=True)
class UsageNow:
    quotas: Quotas
    submissions_today: int
    active_submissions: int
    items_this_month: int


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
