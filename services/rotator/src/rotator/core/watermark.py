"""Per-tenant image watermarks (pure): every image that leaves the platform names its tenant.

A PNG image of the bank is served to each tenant with the least significant bit of
WATERMARK_VALUES of its channel values (never alpha) set to bits keyed by the leak secret, the
tenant and the image id; both the positions and the bits follow from HMAC-SHA256, so each
tenant's copy differs from the bank's and from every other tenant's in about half of those
values, and no value moves by more than 1. The copy is re-encoded as PNG (lossless: same mode,
size, bit depth, ICC profile, gamma, resolution and transparency key), so its bytes, and its
content id, are the tenant's own.

A posted image is traced by decoding its pixels and counting, for a tenant, the values whose
LSB is that tenant's bit: an image not made from the tenant's copy (the bank's own, another
tenant's) agrees in each by chance (1/2, independently: the bits are keyed), so the count of
agreements is binomial and `binomial_tail` is the honest chance of as many by luck. A lossless
re-save, stripped metadata or another PNG encoder keep every agreement.

Not marked (served as in the bank, and so never evidence): other formats (JPEG, GIF, WebP: a
lossless change of their pixels would need another format, which is visible), palette, 1-bit
and 16-bit PNGs, and images with fewer than MIN_VALUES channel values. A lossy re-encoding
(JPEG), a resize or a crop of a posted copy destroys the mark.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

__all__ = [
    "MATCH_CHANCE",
    "MAX_POSTED_BYTES",
    "WATERMARK_VALUES",
    "ImageMatch",
    "PostedImage",
    "binomial_tail",
    "detect",
    "mark",
    "pixels",
    "trace_image",
]

WATERMARK_VALUES = 256
"""Channel values a copy keys (about half of them change): an unrelated image agrees with all of
them with chance 2^-256."""
MIN_VALUES = 2 * WATERMARK_VALUES
"""Smaller images (under 512 colour values) are served unmarked: the mark would cover most."""
MATCH_CHANCE = 1e-6
"""A posted image is a tenant's copy when so many of its values agree by chance at most this
often (for 256 values: 167 agreements or more; the tenant's own copy agrees in all 256)."""
MARKED_MODES = {"L": 1, "LA": 1, "RGB": 3, "RGBA": 3}
"""PNG modes marked -> their colour channels (the first ones; alpha is never touched)."""
PNG = b"\x89PNG\r\n\x1a\n"
_LABEL = b"medbench-image-watermark/v1\0"


@dataclass(frozen=True)
class Pixels:
    """A decoded image: mode, size and its raw channel values (8 bits each)."""

    mode: str
    size: tuple[int, int]
    values: bytes

    def colours(self) -> int:
        """How many colour (non-alpha) channel values the image has."""
        return len(self.values) // len(self.mode) * MARKED_MODES[self.mode]


def _open(content: bytes) -> Image.Image | None:
    if not content.startswith(PNG):
        return None
    try:
        image = Image.open(io.BytesIO(content))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    return image


def pixels(content: bytes, mode: str = "") -> Pixels | None:
    """The channel values of a PNG in a marked mode (converted to mode when given and
    different, e.g. a grey image re-saved as RGB); None for anything else."""
    image = _open(content)
    if image is None:
        return None
    if mode and image.mode != mode:
        if mode not in MARKED_MODES:
            return None
        try:
            image = image.convert(mode)
        except (ValueError, OSError):
            return None
    if image.mode not in MARKED_MODES:
        return None
    return Pixels(image.mode, image.size, image.tobytes())


def _positions(
    secret: bytes, tenant_id: str, image_id: str, found: Pixels
) -> list[tuple[int, int]]:
    """(index into found.values, bit) of the tenant's mark: WATERMARK_VALUES distinct colour
    values, from an HMAC-SHA256 counter stream (so the same on every replica and version)."""
    bands = len(found.mode)
    colours = MARKED_MODES[found.mode]
    n = found.colours()
    key = hmac.new(
        secret, _LABEL + tenant_id.encode() + b"\0" + image_id.encode(), hashlib.sha256
    ).digest()
    want = min(WATERMARK_VALUES, n)
    chosen: dict[int, int] = {}
    counter = 0
    while len(chosen) < want:
        block = hmac.new(key, counter.to_bytes(8, "big"), hashlib.sha256).digest()
        counter += 1
        for k in range(0, 32, 8):
            word = int.from_bytes(block[k : k + 8], "big")
            colour = (word >> 1) % n
            pixel, channel = divmod(colour, colours)
            chosen.setdefault(pixel * bands + channel, word & 1)
            if len(chosen) == want:
                break
    return list(chosen.items())


def _markable(found: Pixels | None) -> bool:
    return found is not None and found.colours() >= MIN_VALUES


def mark(secret: bytes, tenant_id: str, image_id: str, content: bytes) -> bytes:
    """The tenant's copy of a bank image (content, whose id is image_id): a marked PNG, or
    content itself when the image is not marked (see the module's docstring). Deterministic."""
    image = _open(content)
    if image is None or image.mode not in MARKED_MODES:
        return content
    found = Pixels(image.mode, image.size, image.tobytes())
    if not _markable(found):
        return content
    values = bytearray(found.values)
    for index, bit in _positions(secret, tenant_id, image_id, found):
        values[index] = (values[index] & 0xFE) | bit
    copy = Image.frombytes(found.mode, found.size, bytes(values))
    options: dict[str, object] = {"optimize": False, "compress_level": 6}
    for name in ("icc_profile", "gamma", "dpi", "transparency", "srgb"):
        if name in image.info:
            options[name] = image.info[name]
    out = io.BytesIO()
    copy.save(out, format="PNG", **options)
    return out.getvalue()


def binomial_tail(agreeing: int, checked: int) -> float:
    """P(X >= agreeing) for X ~ Binomial(checked, 1/2): the chance that an image not made from
    a tenant's copy agrees with its mark in so many values."""
    if agreeing <= 0:
        return 1.0
    return sum(math.comb(checked, j) for j in range(agreeing, checked + 1)) / (1 << checked)


@dataclass(frozen=True)
class ImageMatch:
    """A posted image compared with one tenant's copy of a bank image."""

    tenant_id: str
    image_id: str
    """The bank image (its content id)."""
    agreeing: int
    checked: int
    chance: float
    """binomial_tail(agreeing, checked)."""

    @property
    def conclusive(self) -> bool:
        return self.checked > 0 and self.chance <= MATCH_CHANCE


def detect(
    secret: bytes,
    image_id: str,
    bank: bytes | Pixels,
    posted: bytes | Pixels,
    tenants: Iterable[str],
) -> list[ImageMatch]:
    """The posted image compared with each tenant's copy of the bank image (bank: its bytes or
    pixels): one ImageMatch per tenant, most agreements first; none when either image is not
    a marked kind or their sizes differ (the posted image is not that image, or was resized)."""
    original = bank if isinstance(bank, Pixels) else pixels(bank)
    if original is None or not _markable(original):
        return []
    seen = posted if isinstance(posted, Pixels) else pixels(posted, original.mode)
    if seen is not None and seen.mode != original.mode:
        seen = None
    if seen is None or seen.size != original.size:
        return []
    matches = []
    for tenant_id in dict.fromkeys(tenants):
        pattern = _positions(secret, tenant_id, image_id, original)
        agreeing = sum(1 for index, bit in pattern if seen.values[index] & 1 == bit)
        matches.append(
            ImageMatch(
                tenant_id,
                image_id,
                agreeing,
                len(pattern),
                binomial_tail(agreeing, len(pattern)),
            )
        )
    return sorted(matches, key=lambda m: (-m.agreeing, m.tenant_id))


MAX_POSTED_BYTES = 8 * 1024 * 1024
"""A posted image TraceLeak reads (LeakedItem.image)."""


@dataclass(frozen=True)
class PostedImage:
    """An image posted with a leaked line: its bytes, or only their sha256."""

    content: bytes = b""
    sha256: str = ""

    def digest(self) -> str:
        return hashlib.sha256(self.content).hexdigest() if self.content else self.sha256.lower()


def trace_image(
    secret: bytes,
    posted: PostedImage,
    candidates: Iterable[tuple[str, bytes]],
    tenants_of: Callable[[str], Iterable[str]],
    decoded: dict[str, Pixels | None] | None = None,
) -> list[ImageMatch]:
    """The conclusive matches of a posted image among the candidate bank images ((image id,
    bytes): those of its line's item, or every image of the downloaded pools), each compared
    with the copies of the tenants tenants_of(image id) names. The bank's own bytes match
    nobody. Bytes are compared by their pixels (an exact copy agrees in every keyed value, so
    does a lossless re-save); a bare sha256 only with each tenant's exact copy (made again:
    about 70 ms per 512x512 image and tenant), weighed like a full pixel match. decoded: bank
    image id -> its pixels, kept across calls."""
    decoded = {} if decoded is None else decoded
    digest = posted.digest()
    seen: dict[str, Pixels | None] = {}
    found: list[ImageMatch] = []
    for image_id, bank in candidates:
        if digest == image_id:
            continue
        tenants = list(dict.fromkeys(tenants_of(image_id)))
        if not tenants:
            continue
        if not posted.content:
            for tenant_id in tenants:
                if hashlib.sha256(mark(secret, tenant_id, image_id, bank)).hexdigest() == digest:
                    n = WATERMARK_VALUES
                    found.append(ImageMatch(tenant_id, image_id, n, n, binomial_tail(n, n)))
            continue
        if image_id not in decoded:
            decoded[image_id] = pixels(bank)
        original = decoded[image_id]
        if original is None or not _markable(original):
            continue
        if original.mode not in seen:
            seen[original.mode] = pixels(posted.content, original.mode)
        mine = seen[original.mode]
        if mine is None or mine.size != original.size:
            continue
        found.extend(m for m in detect(secret, image_id, original, mine, tenants) if m.conclusive)
    return found
