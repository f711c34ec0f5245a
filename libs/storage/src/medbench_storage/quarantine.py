"""Quarantine: where an event that can never be processed waits for a maintainer.

One collection for every service. An outbox relay moves an event it cannot publish (too large,
undecodable) here and goes on with the next; a consumer puts here (besides the topic's dead-letter
twin) a message its handler cannot take. A maintainer lists the entries and retries each (an
outbox event goes back to its outbox, a consumed message is published again to its topic; the
handlers are idempotent, so nothing is counted twice) or drops it; both are audited.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

from bson import Binary
from prometheus_client import Counter
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from medbench_messaging.consumer import Held
from medbench_messaging.publisher import Outgoing, Publisher
from medbench_messaging.topics import BY_NAME
from medbench_storage.indexes import IndexSpec

log = logging.getLogger(__name__)

COLLECTION = "quarantine"
HELD, RETRIED, DROPPED = "held", "retried", "dropped"
STATES = (HELD, RETRIED, DROPPED)
# A payload larger than this is not copied (a consumed message's stays in the dead-letter topic).
MAX_KEPT_PAYLOAD = 8 * 1024 * 1024

QUARANTINED = Counter(
    "medbench_quarantined_total",
    "Events put in quarantine because they can never be processed as they are.",
    ["source", "topic"],
)
INDEXES: tuple[IndexSpec, ...] = (
    IndexSpec(COLLECTION, (("status", 1), ("last_at", -1))),
    IndexSpec(COLLECTION, (("last_at", -1),)),
)


class NotQuarantined(LookupError):
    """No held entry has that id."""


def entry_id(source: str, origin: str) -> str:
    """Deterministic id: holding the same event again updates its entry."""
    digest = hashlib.sha256(f"{source}\x00{origin}".encode()).hexdigest()
    return f"q_{digest[:24]}"


class MongoQuarantine:
    """The quarantine collection, seen from one service."""

    # The states an entry moves through: held, then retried or dropped.
    states = STATES

    def __init__(self, db: AsyncDatabase[dict[str, Any]], service: str) -> None:
        self._db = db
        self.collection = db[COLLECTION]
        self._service = service

    async def hold(self, held: Held) -> str:
        """Stores (or refreshes) an entry; returns its id."""
        now = datetime.now(UTC)
        kept = len(held.payload) <= MAX_KEPT_PAYLOAD
        _id = entry_id(held.source, held.origin)
        await self.collection.update_one(
            {"_id": _id},
            {
                "$set": {
                    "service": self._service,
                    "source": held.source,
                    "origin": held.origin,
                    "topic": held.topic,
                    "key": held.key,
                    "reason": held.reason[:2000],
                    "size": len(held.payload),
                    "payload": Binary(held.payload) if kept else None,
                    "headers": [[k, Binary(v)] for k, v in held.headers],
                    "outbox": held.outbox,
                    "status": HELD,
                    "last_at": now,
                },
                "$setOnInsert": {"first_at": now},
                "$inc": {"times": 1},
            },
            upsert=True,
        )
        QUARANTINED.labels(held.source, held.topic).inc()
        log.error(
            "quarantined %s event of %s (key %s, %d bytes): %s",
            held.source,
            held.topic,
            held.key,
            len(held.payload),
            held.reason[:300],
        )
        return _id

    async def held_count(self) -> int:
        return await self.collection.count_documents({"status": HELD})

    async def list(
        self, status: str = "", service: str = "", limit: int = 100, page_token: str = ""
    ) -> list[dict[str, Any]]:
        """Entries newest first, without payloads; after ``page_token`` (ValueError when it is
        not one ``page_token`` made)."""
        query: dict[str, Any] = {}
        if status:
            query["status"] = status
        if service:
            query["service"] = service
        if page_token:
            millis, _, after = page_token.partition(".")
            try:
                at = datetime.fromtimestamp(int(millis) / 1000, tz=UTC)
            except (ValueError, OverflowError, OSError):
                raise ValueError(page_token) from None
            if not after.startswith("q_"):
                raise ValueError(page_token)
            query["$or"] = [{"last_at": {"$lt": at}}, {"last_at": at, "_id": {"$lt": after}}]
        cursor = (
            self.collection.find(query, {"payload": 0, "headers": 0})
            .sort([("last_at", -1), ("_id", -1)])
            .limit(limit)
        )
        return await cursor.to_list()

    @staticmethod
    def page_token(doc: dict[str, Any]) -> str:
        """Where the page after ``doc`` starts."""
        at = doc["last_at"] if doc["last_at"].tzinfo else doc["last_at"].replace(tzinfo=UTC)
        return f"{round(at.timestamp() * 1000)}.{doc['_id']}"

    async def get(self, entry: str) -> dict[str, Any]:
        """One entry, without its payload (NotQuarantined when there is none)."""
        doc = await self.collection.find_one({"_id": entry}, {"payload": 0, "headers": 0})
        if doc is None:
            raise NotQuarantined(entry)
        return doc

    async def _take(self, entry: str, to: str, by: str) -> dict[str, Any]:
        """Moves a held entry to ``to`` (only one caller wins); the entry as it was."""
        doc = await self.collection.find_one_and_update(
            {"_id": entry, "status": HELD},
            {"$set": {"status": to, "resolved_by": by, "resolved_at": datetime.now(UTC)}},
            return_document=ReturnDocument.BEFORE,
        )
        if doc is None:
            raise NotQuarantined(entry)
        return doc

    async def drop(self, entry: str, by: str) -> dict[str, Any]:
        """Gives a held entry up (kept, marked dropped, for the record)."""
        return await self._take(entry, DROPPED, by)

    async def retry(self, entry: str, by: str, publisher: Publisher) -> dict[str, Any]:
        """Sends a held entry on again: back to its outbox, or to its topic."""
        doc = await self.collection.find_one({"_id": entry, "status": HELD})
        if doc is None:
            raise NotQuarantined(entry)
        if doc.get("payload") is None:
            raise ValueError(
                f"entry {entry} kept no payload ({doc.get('size')} bytes); replay it from the "
                "topic's dead-letter twin"
            )
        doc = await self._take(entry, RETRIED, by)
        try:
            if doc.get("outbox"):
                # The relay of that service publishes it again (and quarantines it again if it
                # still cannot be sent).
                await self._db[doc["outbox"]].replace_one(
                    {"_id": doc["origin"]},
                    {
                        "_id": doc["origin"],
                        "topic": doc["topic"],
                        "key": doc["key"],
                        "payload": doc["payload"],
                        "created_at": datetime.now(UTC),
                        "trace": [],
                    },
                    upsert=True,
                )
            else:
                topic = BY_NAME[doc["topic"]]
                headers = tuple(
                    (k, bytes(v))
                    for k, v in doc.get("headers", [])
                    if k != "type" and not k.startswith("dlq-")
                )
                await publisher.publish(
                    [
                        Outgoing(
                            topic=topic,
                            message=topic.message_type(),
                            key=doc["key"],
                            headers=(*headers, ("quarantine-retry", entry.encode())),
                            raw_value=bytes(doc["payload"]),
                        )
                    ]
                )
        except BaseException:
            # Not sent: held again, so it can be retried once the cause is gone.
            await self.collection.update_one({"_id": entry}, {"$set": {"status": HELD}})
            raise
        return doc
