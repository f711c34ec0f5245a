"""The item-score digest key: made once in MongoDB, the same for every replica, even when they
race to make it (real Mongo-wire server)."""

from __future__ import annotations

import asyncio

from pymongo import AsyncMongoClient

from aggregator.adapters.mongo_scores import MongoScores
from tests.conftest import Servers


async def test_replicas_racing_to_make_the_key_all_read_one(servers: Servers, unique: str) -> None:
    client: AsyncMongoClient = AsyncMongoClient(servers.mongo_uri)
    try:
        db = client[f"digest_{unique}"]
        keys = await asyncio.gather(*(MongoScores(db).digest_key() for _ in range(8)))
        assert len(set(keys)) == 1 and len(keys[0]) == 32
        assert await db.secrets.count_documents({}) == 1
        # A restarted replica reads the stored key back.
        assert await MongoScores(db).digest_key() == keys[0]
    finally:
        await client.close()
