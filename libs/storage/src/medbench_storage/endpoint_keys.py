"""EndpointKeys: partners' endpoint API keys, sealed (see medbench_storage.secrets), in the
sealed database's endpoint_keys collection.

The gateway writes one inside CreateSubmission's transaction and deletes it when it learns the
submission ended; the dispatcher reads it to call the endpoint and deletes it when the run is
DONE or FAILED (a STALLED run keeps it for a resume, for a bounded time). Only ciphertext is
ever written: the oplog and backups never see a key in clear.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from bson.binary import Binary
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from medbench_storage.indexes import IndexSpec, asc
from medbench_storage.secrets import (
    CURRENT_SETTING,
    KEYS_SETTING,
    CannotOpen,
    Envelope,
    Sealed,
    SecretsError,
    SecretsNotConfigured,
    SecretsSettings,
    associated_data,
    envelope_from_settings,
)

log = logging.getLogger(__name__)

COLLECTION = "endpoint_keys"
PURPOSE = "endpoint-api-key"
# Indexes of the sealed database (open_infrastructure's sealed_indexes).
SEALED_INDEXES = (IndexSpec(COLLECTION, asc("key_id")),)


class KeyNotHeld(SecretsError):
    """No endpoint key is stored for the submission (it ended, or its retention ran out)."""


class EndpointKeys:
    """The sealed endpoint_keys collection; every key is bound to its tenant and submission."""

    def __init__(self, sealed_db: AsyncDatabase[dict[str, Any]], envelope: Envelope) -> None:
        self._collection = sealed_db[COLLECTION]
        self._envelope = envelope

    async def put(
        self,
        tenant_id: str,
        submission_id: str,
        api_key: str,
        session: AsyncClientSession | None = None,
    ) -> None:
        """Stores the key sealed (an empty key too: "none needed" is then known, not assumed)."""
        sealed = await self._envelope.seal(api_key.encode(), _aad(tenant_id, submission_id))
        await self._collection.insert_one(
            {
                "_id": submission_id,
                "tenant_id": tenant_id,
                **_fields(sealed),
                "created_at": datetime.now(UTC),
            },
            session=session,
        )

    async def get(self, tenant_id: str, submission_id: str) -> str:
        """The key in clear (in memory only); KeyNotHeld when none is stored, CannotOpen when
        the stored one does not open for this tenant and submission."""
        doc = await self._collection.find_one({"_id": submission_id})
        if doc is None:
            raise KeyNotHeld(f"no endpoint key is held for submission {submission_id}")
        plaintext = await self._envelope.open(_sealed(doc), _aad(tenant_id, submission_id))
        return plaintext.decode()

    async def delete(self, submission_id: str) -> bool:
        """Forgets the key (idempotent); True when one was stored."""
        result = await self._collection.delete_one({"_id": submission_id})
        return result.deleted_count == 1

    async def held(self) -> list[dict[str, Any]]:
        """Which submissions have a key stored (ids, tenants and wrapping key ids only)."""
        return await self._collection.find({}, {"tenant_id": 1, "key_id": 1}).to_list()

    async def check_readable(self) -> dict[str, int]:
        """Stored keys per wrapping key id; SecretsNotConfigured when some are wrapped by a key
        the settings no longer list (removed before `rewrap` moved them off it)."""
        counts: dict[str, int] = {}
        for doc in await self.held():
            key_id = str(doc.get("key_id", ""))
            counts[key_id] = counts.get(key_id, 0) + 1
        unknown = {k: n for k, n in counts.items() if not self._envelope.keys.knows(k)}
        if unknown:
            listed = ", ".join(f"{k!r} ({n} keys)" for k, n in sorted(unknown.items()))
            raise SecretsNotConfigured(
                f"{KEYS_SETTING} lacks the key-encryption keys {listed} that wrap stored "
                f"endpoint keys: list them again (as non-current keys) and run "
                f"`python -m medbench_storage.endpoint_keys rewrap` before removing them"
            )
        return counts

    async def rewrap(self) -> tuple[int, int]:
        """Re-wraps every stored key not under the current KEK; (re-wrapped, stored). A key
        that does not open is logged and left as it is."""
        current = self._envelope.keys.current_id
        done = 0
        total = await self._collection.count_documents({})
        async for doc in self._collection.find({"key_id": {"$ne": current}}):
            try:
                fresh = await self._envelope.rewrap(
                    _sealed(doc), _aad(str(doc["tenant_id"]), str(doc["_id"]))
                )
            except CannotOpen as exc:
                log.error("endpoint key of %s cannot be re-wrapped: %s", doc["_id"], exc)
                continue
            if fresh is None:
                continue
            # Compare-and-set: a concurrent rewrap or delete wins, nothing is overwritten.
            result = await self._collection.update_one(
                {"_id": doc["_id"], "key_id": doc["key_id"], "wrapped_key": doc["wrapped_key"]},
                {"$set": {"key_id": fresh.key_id, "wrapped_key": Binary(fresh.wrapped_key)}},
            )
            done += result.modified_count
        return done, total

    async def migrate_plaintext(self, main_db: AsyncDatabase[dict[str, Any]]) -> int:
        """Seals the keys an earlier version kept in clear in the main database's
        endpoint_keys, and deletes those; returns how many were moved."""
        moved = 0
        async for doc in main_db[COLLECTION].find({"api_key": {"$exists": True}}):
            # A DuplicateKeyError: sealed by an earlier, interrupted migration.
            with contextlib.suppress(DuplicateKeyError):
                await self.put(str(doc["tenant_id"]), str(doc["_id"]), str(doc["api_key"]))
            await main_db[COLLECTION].delete_one({"_id": doc["_id"]})
            moved += 1
        if moved:
            log.warning("sealed %d endpoint keys kept in clear by an earlier version", moved)
        return moved


def _aad(tenant_id: str, submission_id: str) -> bytes:
    return associated_data(PURPOSE, tenant_id, submission_id)


def _fields(sealed: Sealed) -> dict[str, Any]:
    return {
        "v": sealed.version,
        "key_id": sealed.key_id,
        "wrapped_key": Binary(sealed.wrapped_key),
        "ciphertext": Binary(sealed.ciphertext),
    }


def _sealed(doc: dict[str, Any]) -> Sealed:
    try:
        return Sealed(
            str(doc["key_id"]), bytes(doc["wrapped_key"]), bytes(doc["ciphertext"]), int(doc["v"])
        )
    except (KeyError, TypeError, ValueError):
        raise CannotOpen("the stored endpoint key record is malformed") from None


async def rewrap_from_environment() -> tuple[int, int]:
    """`python -m medbench_storage.endpoint_keys rewrap`: the services' settings from the
    environment (MEDBENCH_MONGO__*, MEDBENCH_SECRETS__*)."""
    from medbench_runtime.settings import ServiceSettings
    from medbench_storage.client import connect

    class Settings(ServiceSettings):
        secrets: SecretsSettings = SecretsSettings()

    settings = Settings()
    envelope = envelope_from_settings(settings.secrets)
    async with connect(settings.mongo) as client:
        keys = EndpointKeys(client[settings.mongo.sealed_database_name], envelope)
        return await keys.rewrap()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m medbench_storage.endpoint_keys",
        description="Administration of the sealed endpoint keys.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "rewrap",
        help=f"re-wrap every stored secret under the current key ({CURRENT_SETTING}); reads "
        f"MEDBENCH_MONGO__* and {KEYS_SETTING} like the services",
    )
    parser.parse_args(argv)
    try:
        done, total = asyncio.run(rewrap_from_environment())
    except SecretsError as exc:
        print(f"rewrap: {exc}", file=sys.stderr)
        return 2
    print(f"re-wrapped {done} of {total} stored secrets under the current key")
    return 0


if __name__ == "__main__":
    sys.exit(main())
