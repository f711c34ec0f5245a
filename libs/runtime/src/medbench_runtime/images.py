"""Which image formats a task image may have, told by the file's first bytes (magic numbers)."""

from __future__ import annotations

# (media type, signature); WebP is a RIFF container whose form type is WEBP.
SIGNATURES = (
    ("image/png", b"\x89PNG\r\n\x1a\n"),
    ("image/jpeg", b"\xff\xd8\xff"),
    ("image/gif", b"GIF87a"),
    ("image/gif", b"GIF89a"),
)
FORMATS = "PNG, JPEG, GIF or WebP"


def image_type(content: bytes) -> str | None:
    """The media type of an image in one of FORMATS, or None when content is not one."""
    for media_type, signature in SIGNATURES:
        if content.startswith(signature):
            return media_type
    if len(content) >= 12 and content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    return None
