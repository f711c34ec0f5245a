"""MongoCurrentPools: the current-pool pointers in MongoDB, moved with their PoolRotated event
in the outbox, in one transaction; and disclosures, which must never cross a pointer's move."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession

from medbench.taskpool.v1 import taskpool_events_pb2
from medbench_messaging import topics
from medbench_messaging.publisher import Outgoing
from medbench_runtime.errors import Aborted, FailedPrecondition, NotFound
from medbench_storage.client import in_transaction
from medbench_storage.infra import Infrastructure
from rotator.core.pools import PoolRecord

GUARD = {"_id": "current-pools"}
"""The one `pool_guard` document every pointer move and every disclosure writes: two such
transactions at once write-conflict, and the one that retries sees the other's commit (so a
pool holding a retired group is never made current, and a served pool is never disclosed)."""
IN_BATCH = 1000
"""Group ids per `$in` query and per bulk write."""


class MongoCurrentPools:
    """CurrentPools: `current_pools` ({track}:{board} -> pool_id), the service's outbox, and
    disclosures (`pools.disclosed_at`, `retired_groups`: group id -> the disclosed pool).

    announcement maps a pool to its PoolRotated event (the entry points' convert module)."""

    def __init__(
        self,
        infra: Infrastructure,
        announcement: Callable[[PoolRecord], taskpool_events_pb2.PoolRotated],
    ) -> None:
        self._infra = infra
        self._announcement = announcement

    async def make_current(self, pool: PoolRecord, groups: Collection[str]) -> None:
        event = self._announcement(pool)
        outbox = self._infra.outbox
        db = self._infra.db
        group_ids = sorted(groups)

        async def commit(session: AsyncClientSession) -> None:
            await _serialise(db, session)
            stored = await db.pools.find_one(
                {"_id": pool.pool_id}, {"disclosed_at": 1}, session=session
            )
            if stored is not None and stored.get("disclosed_at") is not None:
                raise FailedPrecondition(
                    f"pool {pool.pool_id} is disclosed (its keys are public): it is never "
                    f"made current again"
                )
            for k in range(0, len(group_ids), IN_BATCH):
                retired = await db.retired_groups.find_one(
                    {"_id": {"$in": group_ids[k : k + IN_BATCH]}}, session=session
                )
                if retired is not None:
                    raise FailedPrecondition(
                        f"pool {pool.pool_id} holds question group {retired['_id']}, retired by "
                        f"the disclosure of pool {retired['pool_id']} (its keys are public): it "
                        f"is never made current again; rotate a new cycle instead"
                    )
            await db.current_pools.update_one(
                {"_id": f"{pool.track}:{pool.board}"},
                {"$set": {"pool_id": pool.pool_id, "since": datetime.now(UTC)}},
                upsert=True,
                session=session,
            )
            # Making a pool current again announces it again (the event id is the pool's).
            await outbox.collection.delete_one({"_id": event.event_id}, session=session)
            await outbox.add(
                session, [(event.event_id, Outgoing(topics.POOL_ROTATED, event, key=pool.track))]
            )

        await in_transaction(self._infra.client, commit)
        self._infra.relay.notify()

    async def disclose(
        self,
        pool: PoolRecord,
        groups: Collection[str],
        current: Mapping[tuple[str, str], str],
        at: datetime,
    ) -> datetime:
        db = self._infra.db
        expected = {f"{track}:{board}": pool_id for (track, board), pool_id in current.items()}
        group_ids = sorted(groups)

        async def commit(session: AsyncClientSession) -> datetime:
            await _serialise(db, session)
            stored = await db.pools.find_one(
                {"_id": pool.pool_id}, {"disclosed_at": 1}, session=session
            )
            if stored is None:
                raise NotFound(f"pool {pool.pool_id!r} not found")
            if stored.get("disclosed_at") is not None:
                return _utc(stored["disclosed_at"])
            pointers = {
                p["_id"]: p["pool_id"] async for p in db.current_pools.find({}, session=session)
            }
            if pointers != expected:
                raise Aborted(
                    f"a board's current pool changed while pool {pool.pool_id} was being "
                    f"disclosed; disclose it again"
                )
            for k in range(0, len(group_ids), IN_BATCH):
                await db.retired_groups.bulk_write(
                    [
                        UpdateOne(
                            {"_id": g},
                            {"$setOnInsert": {"pool_id": pool.pool_id, "retired_at": at}},
                            upsert=True,
                        )
                        for g in group_ids[k : k + IN_BATCH]
                    ],
                    ordered=False,
                    session=session,
                )
            await db.pools.update_one(
                {"_id": pool.pool_id}, {"$set": {"disclosed_at": at}}, session=session
            )
            return at

        result: datetime = await in_transaction(self._infra.client, commit)
        return result


async def _serialise(db: Any, session: AsyncClientSession) -> None:
    """Writes the guard document in the caller's transaction (see GUARD)."""
    await db.pool_guard.update_one(GUARD, {"$inc": {"writes": 1}}, upsert=True, session=session)


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
