"""Infrastructure: the Mongo client, the Kafka publisher and the outbox relay of one process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from medbench_messaging.admin import ensure_topics
from medbench_messaging.consumer import Handler, KafkaConsumerWorker
from medbench_messaging.publisher import KafkaPublisher
from medbench_messaging.topics import Topic
from medbench_runtime.errors import Unauthenticated
from medbench_runtime.service import Servicer, ServiceRuntime, Worker
from medbench_runtime.settings import ServiceSettings
from medbench_runtime.tracing import setup_tracing
from medbench_storage.client import TRANSIENT_ERRORS, connect, ping
from medbench_storage.identity import INDEXES as identity_indexes
from medbench_storage.identity import MongoAuditLog, MongoKeyStore, install_bootstrap_key
from medbench_storage.indexes import IndexSpec, ensure_indexes
from medbench_storage.outbox import Outbox, OutboxRelay
from medbench_storage.outbox import indexes as outbox_indexes
from medbench_storage.quarantine import INDEXES as quarantine_indexes
from medbench_storage.quarantine import MongoQuarantine


@dataclass
class Infrastructure:
    """Handles every service needs; built once in app.py."""

    settings: ServiceSettings
    client: AsyncMongoClient[dict[str, Any]]
    db: AsyncDatabase[dict[str, Any]]
    publisher: KafkaPublisher
    outbox: Outbox
    relay: OutboxRelay
    quarantine: MongoQuarantine
    # Consumer groups already given a topic in this process (one topic per group, below).
    groups: dict[str, str] = field(default_factory=dict)

    @property
    def sealed_db(self) -> AsyncDatabase[dict[str, Any]]:
        """The sealed database; only the rotator and the scorers may open it, and the gateway
        and the dispatcher for its endpoint_keys collection (sealed endpoint API keys)."""
        return self.client[self.settings.mongo.sealed_database_name]

    @property
    def key_store(self) -> MongoKeyStore:
        """Where every service verifies API keys."""
        return MongoKeyStore(self.db)

    @property
    def audit_log(self) -> MongoAuditLog:
        """Where every service appends its audited calls."""
        return MongoAuditLog(self.db)

    def consumer(
        self,
        topic: Topic,
        group_id: str,
        handler: Handler,
        transient_errors: tuple[type[BaseException], ...] = (),
        **kw: Any,
    ) -> KafkaConsumerWorker:
        """A consumer of topic in group_id: infrastructure errors (and transient_errors) are
        waited out, a message its handler cannot take is dead-lettered and quarantined.

        One topic per group: two consumers of one process sharing a group rebalance each other
        whenever either joins or leaves, and a member dropped in such a rebalance was seen
        never to come back (its topic then unconsumed); so a second topic in a group is refused.
        """
        taken = self.groups.setdefault(group_id, topic.name)
        if taken != topic.name:
            raise ValueError(
                f"consumer group {group_id!r} already consumes {taken}; give {topic.name} a "
                "group of its own"
            )
        return KafkaConsumerWorker(
            self.settings.kafka,
            topic,
            group_id=group_id,
            member_id=self.settings.member_id,
            handler=handler,
            dead_letters=self.publisher,
            transient_errors=(*TRANSIENT_ERRORS, *transient_errors),
            quarantine=self.quarantine.hold,
            **kw,
        )

    def runtime(
        self,
        servicers: Sequence[Servicer] = (),
        workers: Sequence[Worker] = (),
        relay: bool = True,
        **kw: Any,
    ) -> ServiceRuntime:
        """What run_service needs for this process: the given servicers and workers plus what
        every service has (the outbox relay, readiness on Mongo and the topics, API keys
        verified against the identity collections, audited calls appended to the audit log).
        relay=False for a service that never writes to its outbox."""
        kw.setdefault("key_store", self.key_store)
        kw.setdefault("audit", self.audit_log)
        return ServiceRuntime(
            servicers=list(servicers),
            workers=[self.relay, *workers] if relay else list(workers),
            readiness=[self.ready, *kw.pop("readiness", ())],
            **kw,
        )

    async def ready(self) -> None:
        """Readiness: Mongo answers and every topic exists."""
        await ping(self.client)
        await ensure_topics(self.settings.kafka)


@asynccontextmanager
async def open_infrastructure(
    settings: ServiceSettings,
    indexes: Sequence[IndexSpec] = (),
    sealed_indexes: Sequence[IndexSpec] = (),
) -> AsyncIterator[Infrastructure]:
    """Connects, creates indexes, and closes everything on exit."""
    setup_tracing(settings.service_name, settings.tracing)
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(connect(settings.mongo))
        db = client[settings.mongo.database]
        await ping(client)
        await ensure_indexes(
            db,
            [
                *outbox_indexes(settings.service_name),
                *identity_indexes,
                *quarantine_indexes,
                *indexes,
            ],
        )
        if settings.auth.bootstrap_key.get_secret_value():
            try:
                await install_bootstrap_key(db, settings.auth.bootstrap_key.get_secret_value())
            except Unauthenticated as exc:
                raise RuntimeError(f"MEDBENCH_AUTH__BOOTSTRAP_KEY: {exc}") from None
        if sealed_indexes:
            await ensure_indexes(client[settings.mongo.sealed_database_name], sealed_indexes)
        publisher = KafkaPublisher(settings.kafka, client_id=settings.member_id)
        stack.callback(publisher.close)
        outbox = Outbox(db, settings.service_name, settings.kafka.max_event_bytes)
        quarantine = MongoQuarantine(db, settings.service_name)
        relay = OutboxRelay(outbox, publisher, quarantine.hold, holder=settings.member_id)
        yield Infrastructure(settings, client, db, publisher, outbox, relay, quarantine)
