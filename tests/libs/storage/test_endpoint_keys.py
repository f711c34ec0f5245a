"""Sealed endpoint keys in the real Mongo-wire server: what is stored, the transaction with the
main database, rotation (the `rewrap` command), the start check and the plaintext migration."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient

from medbench_storage.client import in_transaction
from medbench_storage.endpoint_keys import EndpointKeys, KeyNotHeld
from medbench_storage.secrets import (
    KEY_BYTES,
    CannotOpen,
    Envelope,
    LocalKeys,
    SecretsNotConfigured,
)
from tests.conftest import Servers

pytestmark = [pytest.mark.integration]
K1, K2 = os.urandom(KEY_BYTES), os.urandom(KEY_BYTES)


def entry(key_id: str, key: bytes) -> str:
    return f"{key_id}:{base64.b64encode(key).decode()}"


@pytest.fixture
async def dbs(servers: Servers, unique: str) -> AsyncIterator[tuple[Any, Any, Any, str]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri)
    name = f"keys_{unique}"
    try:
        yield client, client[name], client[f"{name}_sealed"], name
    finally:
        await client.drop_database(name)
        await client.drop_database(f"{name}_sealed")
        await client.close()


def store(sealed: Any, keys: dict[str, bytes], current: str = "") -> EndpointKeys:
    return EndpointKeys(sealed, Envelope(LocalKeys(keys, current)))


def contains(doc: Any, needle: bytes) -> bool:
    return needle in repr(doc).encode() or any(
        needle in bytes(v) for v in doc.values() if isinstance(v, bytes)
    )


async def test_a_key_is_stored_sealed_opens_only_for_its_submission_and_is_deleted(
    dbs: Any,
) -> None:
    _, _, sealed_db, _ = dbs
    keys = store(sealed_db, {"k1": K1})
    await keys.put("tenant-a", "sub_1", "sk-live-abcdef123456")
    doc = await sealed_db.endpoint_keys.find_one({"_id": "sub_1"})
    assert doc is not None and doc["key_id"] == "k1" and doc["tenant_id"] == "tenant-a"
    assert "api_key" not in doc
    for needle in (b"sk-live-abcdef123456", base64.b64encode(b"sk-live-abcdef123456")):
        assert not contains(doc, needle)
    assert await keys.get("tenant-a", "sub_1") == "sk-live-abcdef123456"
    with pytest.raises(CannotOpen):
        await keys.get("tenant-b", "sub_1")  # the job of another tenant

    # The sealed record copied under another submission does not open there.
    await sealed_db.endpoint_keys.insert_one({**doc, "_id": "sub_2"})
    with pytest.raises(CannotOpen):
        await keys.get("tenant-a", "sub_2")

    assert await keys.delete("sub_1") and not await keys.delete("sub_1")
    with pytest.raises(KeyNotHeld):
        await keys.get("tenant-a", "sub_1")


async def test_the_key_commits_with_the_main_database_or_not_at_all(dbs: Any) -> None:
    client, main_db, sealed_db, _ = dbs
    keys = store(sealed_db, {"k1": K1})

    class Boom(Exception):
        pass

    def create(sid: str, fail: bool) -> Any:
        async def work(session: Any) -> None:
            await main_db.submissions.insert_one({"_id": sid}, session=session)
            await keys.put("t", sid, "sk-x", session)
            if fail:
                raise Boom

        return work

    await in_transaction(client, create("ok", fail=False))
    with pytest.raises(Boom):
        await in_transaction(client, create("aborted", fail=True))
    assert await sealed_db.endpoint_keys.distinct("_id") == ["ok"]
    assert await main_db.submissions.distinct("_id") == ["ok"]


async def test_rewrap_moves_every_key_to_the_current_kek_then_the_old_one_can_go(
    dbs: Any,
) -> None:
    _, _, sealed_db, _ = dbs
    before = store(sealed_db, {"k1": K1})
    for i in range(3):
        await before.put("t", f"sub_{i}", f"sk-{i}")
    rotated = store(sealed_db, {"k1": K1, "k2": K2}, current="k2")
    await rotated.put("t", "sub_new", "sk-new")
    assert await rotated.check_readable() == {"k1": 3, "k2": 1}
    # Without k1, the start check refuses, naming the setting and the missing key.
    with pytest.raises(SecretsNotConfigured, match=r"MEDBENCH_SECRETS__KEYS lacks .*'k1' \(3"):
        await store(sealed_db, {"k2": K2}).check_readable()

    assert await rotated.rewrap() == (3, 4)
    assert await rotated.rewrap() == (0, 4)
    after = store(sealed_db, {"k2": K2})
    assert await after.check_readable() == {"k2": 4}
    assert [await after.get("t", f"sub_{i}") for i in range(3)] == ["sk-0", "sk-1", "sk-2"]


def test_the_rewrap_command_rotates_a_deployments_keys(servers: Servers, unique: str) -> None:
    name = f"rewrap_{unique}"
    sync: MongoClient[dict[str, Any]] = MongoClient(servers.mongo_uri)

    async def seed() -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri)
        try:
            await store(client[f"{name}_sealed"], {"k1": K1}).put("t", "sub_1", "sk-cmd")
        finally:
            await client.close()

    try:
        asyncio.run(seed())
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDBENCH_")}
        env |= {
            "MEDBENCH_MONGO__URI": servers.mongo_uri,
            "MEDBENCH_MONGO__DATABASE": name,
            "MEDBENCH_SECRETS__KEYS": f"{entry('k1', K1)},{entry('k2', K2)}",
            "MEDBENCH_SECRETS__CURRENT": "k2",
        }
        command = [sys.executable, "-m", "medbench_storage.endpoint_keys", "rewrap"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "re-wrapped 1 of 1" in done.stdout
        assert sync[f"{name}_sealed"].endpoint_keys.find_one({"_id": "sub_1"})["key_id"] == "k2"
        # Started without keys, the command fails naming the setting.
        env["MEDBENCH_SECRETS__KEYS"] = ""
        refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and "MEDBENCH_SECRETS__KEYS is not set" in refused.stderr
    finally:
        sync.drop_database(f"{name}_sealed")
        sync.close()


async def test_keys_an_earlier_version_kept_in_clear_are_sealed_and_removed(dbs: Any) -> None:
    _, main_db, sealed_db, _ = dbs
    await main_db.endpoint_keys.insert_many(
        [
            {"_id": "sub_a", "tenant_id": "t", "api_key": "sk-plain-a"},
            {"_id": "sub_b", "tenant_id": "t", "api_key": ""},
        ]
    )
    keys = store(sealed_db, {"k1": K1})
    assert await keys.migrate_plaintext(main_db) == 2
    assert await main_db.endpoint_keys.count_documents({}) == 0
    assert await keys.get("t", "sub_a") == "sk-plain-a"
    assert await keys.get("t", "sub_b") == ""
    assert await keys.migrate_plaintext(main_db) == 0
