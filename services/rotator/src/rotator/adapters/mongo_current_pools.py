"""MongoCurrentPools: the current-pool pointers in MongoDB, moved with their PoolRotated event
in the outbox, in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from pymongo.asynchronous.client_session import AsyncClientSession

from medbench.taskpool.v1 import taskpool_events_pb2
from medbench_messaging import topics
from medbench_messaging.publisher import Outgoing
from medbench_storage.client import in_transaction
from medbench_storage.infra import Infrastructure
from rotator.core.pools import PoolRecord


class MongoCurrentPools:
    """CurrentPools: `current_pools` ({track}:{board} -> pool_id) and the service's outbox.

    announcement maps a pool to its PoolRotated event (the entry points' convert module)."""

    def __init__(
        self,
        infra: Infrastructure,
        announcement: Callable[[PoolRecord], taskpool_events_pb2.PoolRotated],
    ) -> None:
        self._infra = infra
        self._announcement = announcement

    async def make_current(self, pool: PoolRecord) -> None:
        event = self._announcement(pool)
        outbox = self._infra.outbox

        async def commit(session: AsyncClientSession) -> None:
            await self._infra.db.current_pools.update_one(
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
