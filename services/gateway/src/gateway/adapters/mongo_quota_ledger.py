"""MongoQuotaLedger: the QuotaLedger port over `quota_usage` (the rules: core/quotas.py).

Charges are taken inside the transaction that creates the submission, so a create that fails
(or a duplicate of a concurrent create) charges nothing, and two racing creates cannot both take
the last unit: each limit is one conditional update of one document (`quota_usage`):

  <tenant>:d:<YYYY-MM-DD>  {count}   submissions created that UTC day
  <tenant>:m:<YYYY-MM>     {items}   items assigned that UTC month
  <tenant>:active          {ids}     submissions not yet terminal
  <tenant>:p:<pool>:official              {count}  official runs on the pool
  <tenant>:p:<pool>:hidden                {count}  hidden-pool runs on the pool
  <tenant>:p:<pool>:hidden:d:<YYYY-MM-DD> {count}  of which that UTC day

A terminal submission leaves `ids`; one that ended by the platform's fault is given back its
day and month charge; API-mode items that failed for infrastructure reasons are given back; a
run that ended with no score shown (FAILED) is given back its charges on its pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from gateway.core.quotas import (
    BoardPool,
    PoolRun,
    PoolUsage,
    Quotas,
    UsageNow,
    cap_refusal,
    caps_for,
    seconds_to_next_month,
    seconds_to_tomorrow,
    spent,
)
from gateway.core.quotas import day_of as _day
from gateway.core.quotas import month_of as _month
from gateway.core.submission import TERMINAL as _TERMINAL
from medbench_runtime.errors import ResourceExhausted
from medbench_runtime.timestamps import utc

USAGE = "quota_usage"
TERMINAL = tuple(sorted(_TERMINAL))


class MongoQuotaLedger:
    """Charges and gives back a tenant's quotas."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], defaults: Quotas) -> None:
        self._db = db
        self._defaults = defaults

    async def quotas(self, tenant_id: str) -> Quotas:
        tenant = await self._db.tenants.find_one({"_id": tenant_id}, {"quotas": 1})
        return self._defaults.merged((tenant or {}).get("quotas"))

    async def check_active(self, tenant_id: str) -> None:
        """Before any work on a create: refuse early when no concurrent slot is free (the
        charge in the transaction is what enforces it)."""
        quotas = await self.quotas(tenant_id)
        ids = await self._active_ids(tenant_id)
        if len(ids) >= quotas.concurrent_submissions:
            ids = await self._reconcile(tenant_id, ids)
        if len(ids) >= quotas.concurrent_submissions:
            raise self._concurrent_error(quotas, ids)

    async def check_run(self, tenant_id: str, run: PoolRun, now: datetime) -> None:
        """Before any work on a create: refuse early when a cap on the run's pool is spent
        (the charge in the transaction is what enforces it)."""
        quotas = await self.quotas(tenant_id)
        for cap in caps_for(run, quotas, now):
            doc = await self._db[USAGE].find_one({"_id": f"{tenant_id}:{cap.counter}"})
            if spent(cap, int((doc or {}).get("count", 0))):
                raise cap_refusal(cap, tenant_id, run, now)

    async def charge(
        self,
        tenant_id: str,
        submission_id: str,
        items: int,
        session: AsyncClientSession,
        now: datetime,
        run: PoolRun | None = None,
    ) -> None:
        """Takes one submission of today's, one concurrent slot, the run's caps on its pool and
        items of this month's quota, inside the create's transaction; RESOURCE_EXHAUSTED (and
        nothing taken) when any is spent."""
        quotas = await self.quotas(tenant_id)
        usage = self._db[USAGE]
        slot = quotas.concurrent_submissions - 1
        try:
            await usage.update_one(
                {"_id": f"{tenant_id}:active", f"ids.{slot}": {"$exists": False}},
                {"$addToSet": {"ids": submission_id}},
                upsert=True,
                session=session,
            )
        except DuplicateKeyError:
            raise self._concurrent_error(quotas, []) from None
        try:
            await usage.update_one(
                {"_id": f"{tenant_id}:d:{_day(now)}", "count": {"$lt": quotas.submissions_per_day}},
                {"$inc": {"count": 1}},
                upsert=True,
                session=session,
            )
        except DuplicateKeyError:
            raise ResourceExhausted(
                f"tenant {tenant_id} has used its {quotas.submissions_per_day} submissions "
                f"for {_day(now)} (UTC); retry after midnight UTC",
                retry_after_s=seconds_to_tomorrow(now),
            ) from None
        if run is not None:
            await self._charge_run(tenant_id, run, quotas, session, now)
        if items > quotas.items_per_month:
            raise ResourceExhausted(
                f"this evaluation needs {items} items, more than tenant {tenant_id}'s monthly "
                f"quota of {quotas.items_per_month}; ask the platform to raise it"
            )
        try:
            await usage.update_one(
                {
                    "_id": f"{tenant_id}:m:{_month(now)}",
                    "items": {"$lte": quotas.items_per_month - items},
                },
                {"$inc": {"items": items}},
                upsert=True,
                session=session,
            )
        except DuplicateKeyError:
            raise ResourceExhausted(
                f"tenant {tenant_id}'s monthly quota of {quotas.items_per_month} items has less "
                f"than the {items} this evaluation needs left for {_month(now)} (UTC); retry "
                f"next month",
                retry_after_s=seconds_to_next_month(now),
            ) from None

    async def _charge_run(
        self,
        tenant_id: str,
        run: PoolRun,
        quotas: Quotas,
        session: AsyncClientSession,
        now: datetime,
    ) -> None:
        """One of each cap of the run on its pool (the upsert of a counter at its limit finds no
        document and collides with it: nothing is taken)."""
        for cap in caps_for(run, quotas, now):
            try:
                await self._db[USAGE].update_one(
                    {"_id": f"{tenant_id}:{cap.counter}", "count": {"$lt": cap.limit}},
                    {"$inc": {"count": 1}},
                    upsert=True,
                    session=session,
                )
            except DuplicateKeyError:
                raise cap_refusal(cap, tenant_id, run, now) from None

    async def release(
        self,
        tenant_id: str,
        submission_id: str,
        created_at: datetime,
        refund_items: int = 0,
        refund_submission: bool = False,
        run: PoolRun | None = None,
        refund_run: bool = False,
    ) -> None:
        """A submission became terminal: frees its slot and gives back what the platform owes
        (with refund_submission or refund_run, the run's charges on its pool). Idempotent: the
        give-back happens only for the call that frees the slot."""
        freed = await self._db[USAGE].update_one(
            {"_id": f"{tenant_id}:active", "ids": submission_id},
            {"$pull": {"ids": submission_id}},
        )
        if freed.modified_count != 1:
            return
        created = utc(created_at)
        if refund_submission:
            await self._db[USAGE].update_one(
                {"_id": f"{tenant_id}:d:{_day(created)}"}, {"$inc": {"count": -1}}
            )
        if refund_items > 0:
            await self._db[USAGE].update_one(
                {"_id": f"{tenant_id}:m:{_month(created)}"}, {"$inc": {"items": -refund_items}}
            )
        if run is not None and (refund_submission or refund_run):
            quotas = await self.quotas(tenant_id)
            for cap in caps_for(run, quotas, created):
                await self._db[USAGE].update_one(
                    {"_id": f"{tenant_id}:{cap.counter}", "count": {"$gt": 0}},
                    {"$inc": {"count": -1}},
                )

    async def usage(
        self, tenant_id: str, now: datetime | None = None, pools: Sequence[BoardPool] = ()
    ) -> UsageNow:
        """The tenant's usage now, with its runs on each of pools (the boards' current
        pools)."""
        now = now or datetime.now(UTC)
        quotas = await self.quotas(tenant_id)
        day = await self._db[USAGE].find_one({"_id": f"{tenant_id}:d:{_day(now)}"})
        month = await self._db[USAGE].find_one({"_id": f"{tenant_id}:m:{_month(now)}"})
        ids = await self._reconcile(tenant_id, await self._active_ids(tenant_id))
        return UsageNow(
            quotas,
            int((day or {}).get("count", 0)),
            len(ids),
            int((month or {}).get("items", 0)),
            tuple([await self._pool_usage(tenant_id, quotas, pool, now) for pool in pools]),
        )

    async def _pool_usage(
        self, tenant_id: str, quotas: Quotas, pool: BoardPool, now: datetime
    ) -> PoolUsage:
        counters = {
            cap.name: f"{tenant_id}:{cap.counter}"
            for official in (True, False)
            for cap in caps_for(PoolRun(pool.pool_id, official), quotas, now)
        }
        counts = {
            doc["_id"]: int(doc.get("count", 0))
            async for doc in self._db[USAGE].find({"_id": {"$in": list(counters.values())}})
        }
        used = {name: counts.get(counter, 0) for name, counter in counters.items()}
        return PoolUsage(
            pool, used["official_per_cycle"], used["hidden_per_day"], used["hidden_per_cycle"]
        )

    async def _active_ids(self, tenant_id: str) -> list[str]:
        doc = await self._db[USAGE].find_one({"_id": f"{tenant_id}:active"})
        return list((doc or {}).get("ids", []))

    async def _reconcile(self, tenant_id: str, ids: list[str]) -> list[str]:
        """Frees slots of submissions that are terminal (a missed release heals here)."""
        if not ids:
            return ids
        ended = [
            doc["_id"]
            async for doc in self._db.submissions.find(
                {"_id": {"$in": ids}, "tenant_id": tenant_id, "state": {"$in": list(TERMINAL)}},
                {"_id": 1},
            )
        ]
        if ended:
            await self._db[USAGE].update_one(
                {"_id": f"{tenant_id}:active"}, {"$pull": {"ids": {"$in": ended}}}
            )
        return [i for i in ids if i not in set(ended)]

    @staticmethod
    def _concurrent_error(quotas: Quotas, ids: list[str]) -> ResourceExhausted:
        return ResourceExhausted(
            f"{quotas.concurrent_submissions} submissions are already in progress, the tenant's "
            f"limit; retry when one of them completes" + (f" ({', '.join(ids[:5])})" if ids else "")
        )
