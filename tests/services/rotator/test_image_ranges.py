"""GetImage by ranges (the gateway streams large images to partners in small messages): the
GridFS store against the real Mongo-wire server, and the serving use case's checks."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from medbench_runtime.errors import InvalidArgument, NotFound
from rotator.adapters.gridfs_image_store import GridFSImageStore
from rotator.usecases.pool import PoolServing
from tests.conftest import Servers
from tests.services.rotator.fakes import (
    InMemoryAssignmentStore,
    InMemoryImageStore,
    InMemoryPoolStore,
)

GRIDFS_CHUNK = 255 * 1024
# Over three GridFS chunks, not a multiple of one.
IMAGE = b"\x89PNG\r\n\x1a\n" + os.urandom(3 * GRIDFS_CHUNK + 1234)


@pytest.mark.integration
async def test_gridfs_reads_any_range_with_the_whole_size(servers: Servers, unique: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri)
    db = client[f"images_{unique}"]
    try:
        store = GridFSImageStore(db)
        image_id, new = await store.put("a.png", IMAGE, "image/png")
        assert new and image_id == hashlib.sha256(IMAGE).hexdigest()
        whole, media_type, size = await store.get(image_id)
        assert (whole, media_type, size) == (IMAGE, "image/png", len(IMAGE))
        # Ranges across chunk boundaries, to the end, and past a chunk's end.
        for offset, max_bytes in (
            (0, 10),
            (GRIDFS_CHUNK - 3, 7),
            (GRIDFS_CHUNK, GRIDFS_CHUNK),
            (2 * GRIDFS_CHUNK + 5, 0),
            (len(IMAGE) - 4, 100),
            (len(IMAGE), 10),
        ):
            content, _, size = await store.get(image_id, offset, max_bytes)
            end = offset + max_bytes if max_bytes else len(IMAGE)
            assert content == IMAGE[offset:end], (offset, max_bytes)
            assert size == len(IMAGE)
        assert await store.get(image_id, content=False) == (b"", "image/png", len(IMAGE))
        with pytest.raises(InvalidArgument, match="outside"):
            await store.get(image_id, len(IMAGE) + 1, 1)
        with pytest.raises(NotFound):
            await store.get("0" * 64, 0, 1)
    finally:
        await client.drop_database(db.name)
        await client.close()


async def test_serving_passes_ranges_and_refuses_negative_ones() -> None:
    pools = InMemoryPoolStore()
    images = InMemoryImageStore()
    image_id, _ = await images.put("a.png", IMAGE, "image/png")
    serving = PoolServing(pools, InMemoryAssignmentStore(pools), images, b"s" * 32)
    content, media_type, size = await serving.image(image_id, 100, 50)
    assert (content, media_type, size) == (IMAGE[100:150], "image/png", len(IMAGE))
    assert (await serving.image(image_id))[0] == IMAGE  # no range: the whole image, as before
    with pytest.raises(InvalidArgument, match="negative"):
        await serving.image(image_id, -1, 5)
