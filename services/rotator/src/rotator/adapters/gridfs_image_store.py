"""GridFSImageStore: content-addressed image storage in MongoDB GridFS."""

from __future__ import annotations

import hashlib
import mimetypes
from typing import Any

from gridfs import AsyncGridFSBucket
from gridfs.errors import FileExists, NoFile
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from medbench_runtime.errors import InvalidArgument, NotFound


class GridFSImageStore:
    """ImageStore over a GridFS bucket named "images"."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._bucket = AsyncGridFSBucket(db, bucket_name="images")
        self._files = db["images.files"]

    async def put(self, path: str, content: bytes, media_type: str = "") -> tuple[str, bool]:
        image_id = hashlib.sha256(content).hexdigest()
        kind = media_type or mimetypes.guess_type(path)[0] or "application/octet-stream"
        if await self._files.find_one({"_id": image_id}, {"_id": 1}) is not None:
            return image_id, False
        try:
            await self._bucket.upload_from_stream_with_id(
                image_id, path, content, metadata={"media_type": kind}
            )
        except (FileExists, DuplicateKeyError):
            # Stored concurrently by another import: same bytes, same id.
            return image_id, False
        return image_id, True

    async def get(
        self, image_id: str, offset: int = 0, max_bytes: int = 0, content: bool = True
    ) -> tuple[bytes, str, int]:
        try:
            stream = await self._bucket.open_download_stream(image_id)
        except NoFile as exc:
            raise NotFound(f"image {image_id} not found") from exc
        size = int(stream.length)
        if not 0 <= offset <= size:
            raise InvalidArgument(f"offset {offset} is outside image {image_id} ({size} bytes)")
        media_type = (stream.metadata or {}).get("media_type", "application/octet-stream")
        if not content:
            return b"", media_type, size  # the files document only: no chunk read
        if offset:
            await stream.seek(offset)  # reads only the GridFS chunks of the range
        data = await stream.read(max_bytes if max_bytes > 0 else -1)
        return data, media_type, size
