"""Images in a chat request: OpenAI content parts with base64 data URLs, under size limits (pure).

An item's images go with its last user message (the question they illustrate), after its text,
in the item's image order. Images do not count against the context-window rule (their token
cost depends on the model's vision encoder, which the platform cannot know); the byte limits
below are what the bank admits, so no admitted item is refused here.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAX_IMAGE_BYTES = 16 * 1024 * 1024
"""Largest single image sent (bytes, before base64). The service passes its gRPC message limit
(MEDBENCH_GRPC_MAX_MESSAGE_BYTES, 16 MiB by default): an item and its images reach the bank in
one import message of at most that size, so every item the bank admits can be sent (a smaller
limit here would leave such an item unsendable and every API run of its pool stalled)."""
MAX_REQUEST_IMAGE_BYTES = 16 * 1024 * 1024
"""Largest total of one request's images (bytes, before base64): the same bound, for the same
reason (base64 makes it at most about 21.4 MiB of JSON)."""
MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
"""Image types vision endpoints accept as data URLs."""


class ImageNotSendable(ValueError):
    """An item's images cannot be sent: too large, or of a type endpoints do not take."""


@dataclass(frozen=True)
class Image:
    """One image's bytes and media type."""

    content: bytes
    media_type: str


def check_images(
    images: Sequence[Image],
    max_image_bytes: int = MAX_IMAGE_BYTES,
    max_request_bytes: int = MAX_REQUEST_IMAGE_BYTES,
) -> None:
    """Raises ImageNotSendable, naming the image and the limit, when a limit is broken."""
    total = 0
    for index, image in enumerate(images):
        if image.media_type not in MEDIA_TYPES:
            raise ImageNotSendable(
                f"image {index} is {image.media_type or 'of unknown type'}; endpoints take "
                f"{', '.join(sorted(MEDIA_TYPES))}"
            )
        if len(image.content) > max_image_bytes:
            raise ImageNotSendable(
                f"image {index} has {len(image.content)} bytes; the limit is {max_image_bytes}"
            )
        total += len(image.content)
    if total > max_request_bytes:
        raise ImageNotSendable(
            f"the item's {len(images)} images have {total} bytes together; the limit per "
            f"request is {max_request_bytes}"
        )


def data_url(image: Image) -> str:
    return f"data:{image.media_type};base64,{base64.b64encode(image.content).decode('ascii')}"


def chat_messages(
    messages: Sequence[tuple[str, str]], images: Sequence[Image]
) -> list[dict[str, Any]]:
    """OpenAI chat messages; with images, the last user message becomes content parts.

    Without images every content stays a plain string, which text-only endpoints require.
    """
    out: list[dict[str, Any]] = [{"role": role, "content": content} for role, content in messages]
    if not images:
        return out
    last_user = max(
        (i for i, (role, _) in enumerate(messages) if role == "user"), default=len(out) - 1
    )
    if last_user < 0:
        raise ValueError("an item with images needs at least one message")
    text = out[last_user]["content"]
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts.extend({"type": "image_url", "image_url": {"url": data_url(im)}} for im in images)
    out[last_user]["content"] = parts
    return out
