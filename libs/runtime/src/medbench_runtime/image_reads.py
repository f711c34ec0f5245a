"""A whole image from the rotator, read in ranges.

The largest image an import admits is as large as one gRPC message less the import's framing
(README "Images for partners"), so a `GetImage` reply carrying it whole would be over the limit
(RESOURCE_EXHAUSTED at the caller). Every service that needs an image's bytes (the dispatcher for
API-mode payloads, the judge scorer for a vision judge and for physicians) reads it here in
ranges of CHUNK_BYTES and checks the bytes against the sha256 the rotator serves.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from medbench.taskpool.v1 import taskpool_service_pb2, taskpool_service_pb2_grpc

# Bytes asked per GetImage call: far under the 16 MiB message limit, few calls per image.
CHUNK_BYTES = 4 * 1024 * 1024


class ImageReadFailed(Exception):
    """The rotator's ranges did not make the image it announced (its size or sha256 changed
    between calls, a range came back empty or too long, or the bytes do not hash to it)."""


class ImageHashMismatch(ImageReadFailed):
    """The bytes read whole do not hash to the sha256 served (for the bank's own bytes: to the
    image id): damaged, not a passing fault."""


@dataclass(frozen=True)
class WholeImage:
    content: bytes
    media_type: str
    # Of the bytes read: the bank image's id, or a tenant copy's own content id.
    sha256: str


async def read_image(
    rotator: taskpool_service_pb2_grpc.TaskPoolServiceStub,
    image_id: str,
    tenant_id: str = "",
    timeout_s: float = 30.0,
    chunk_bytes: int = CHUNK_BYTES,
) -> WholeImage:
    """The bank's image (tenant_id "") or the tenant's watermarked copy, whole. gRPC errors
    (NOT_FOUND for an unknown id, UNAVAILABLE, ...) are raised as they come; ImageReadFailed
    when the ranges do not add up to the image announced (ImageHashMismatch when they do, but
    not to its sha256)."""
    if chunk_bytes <= 0:
        raise ValueError("chunk_bytes must be positive")
    parts: list[bytes] = []
    offset = 0
    size = -1
    media_type = served = ""
    while size < 0 or offset < size:
        reply = await rotator.GetImage(
            taskpool_service_pb2.GetImageRequest(
                image_id=image_id, tenant_id=tenant_id, offset=offset, max_bytes=chunk_bytes
            ),
            timeout=timeout_s,
        )
        if size < 0:
            size, media_type, served = reply.size, reply.media_type, reply.served_sha256
        elif (reply.size, reply.served_sha256) != (size, served):
            raise ImageReadFailed(
                f"image {image_id}: changed while read ({size} bytes {served} at first, "
                f"{reply.size} bytes {reply.served_sha256} at offset {offset})"
            )
        got = len(reply.content)
        if got > chunk_bytes or offset + got > size or (got == 0 and offset < size):
            raise ImageReadFailed(
                f"image {image_id}: {got} bytes at offset {offset} of {size} "
                f"(asked at most {chunk_bytes})"
            )
        parts.append(reply.content)
        offset += got
    content = b"".join(parts)
    digest = hashlib.sha256(content).hexdigest()
    if digest != (served or image_id):
        raise ImageHashMismatch(
            f"image {image_id}: {size} bytes read hash to {digest}, not {served or image_id}"
        )
    return WholeImage(content, media_type, digest)
