"""Per-tenant image watermarks (core/watermark.py) and the tenant copies GetImage serves
(PoolServing.tenant_image): imperceptible, deterministic, per tenant, traceable after a
lossless re-save; the bank's own image names nobody."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from medbench_runtime.errors import InvalidArgument
from rotator.core import watermark as wm
from rotator.core.leaktrace import CanaryHit, ImageHit, LeakEvidence
from rotator.usecases.pool import ImageDamaged, PoolServing
from tests.services.rotator.fakes import (
    InMemoryAssignmentStore,
    InMemoryImageStore,
    InMemoryPoolStore,
)

ROOT = Path(__file__).resolve().parents[3]
SECRET = b"s" * 32
TENANTS = ("tenant-a", "tenant-b", "tenant-c")


def _rgb_png() -> bytes:
    """A 512x512 RGB PNG with smooth gradients and a flat black border (LSBs all 0 there)."""
    image = Image.new("RGB", (512, 512))
    image.putdata(
        [
            (0, 0, 0) if min(x, y) < 40 else ((x * 7 + y) % 256, (x * y) % 256, (y * 3) % 256)
            for y in range(512)
            for x in range(512)
        ]
    )
    out = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "bank copy")
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


XRAY = (ROOT / "tests/data/pneumoniamnist/test_0001.png").read_bytes()
RGB = _rgb_png()
IMAGES = {"grey 28x28 x-ray": XRAY, "rgb 512x512": RGB}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def values(content: bytes) -> tuple[str, tuple[int, int], bytes]:
    image = Image.open(io.BytesIO(content))
    return image.mode, image.size, image.tobytes()


def resaved(content: bytes) -> bytes:
    """A lossless re-save by another tool: metadata dropped, the highest compression."""
    image = Image.open(io.BytesIO(content))
    out = io.BytesIO()
    Image.frombytes(image.mode, image.size, image.tobytes()).save(
        out, format="PNG", compress_level=9
    )
    return out.getvalue()


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_a_copy_moves_no_value_by_more_than_one_and_differs_per_tenant(name: str) -> None:
    bank = IMAGES[name]
    image_id = sha(bank)
    copies = {t: wm.mark(SECRET, t, image_id, bank) for t in TENANTS}
    mode, size, original = values(bank)
    changed = []
    for copy in copies.values():
        assert copy.startswith(wm.PNG) and copy != bank
        copy_mode, copy_size, pixels = values(copy)
        assert (copy_mode, copy_size) == (mode, size)
        diffs = [abs(a - b) for a, b in zip(original, pixels, strict=True)]
        assert max(diffs) == 1  # imperceptible: never more than 1 per channel value
        changed.append(sum(diffs))
    # About half of the 256 keyed values change (the others already held the bit).
    assert all(64 <= n <= 192 for n in changed), changed
    assert len({sha(c) for c in copies.values()}) == len(TENANTS)
    # Deterministic: the same copy every time (every replica serves the same bytes).
    assert wm.mark(SECRET, "tenant-a", image_id, bank) == copies["tenant-a"]
    # Another secret makes another copy.
    assert wm.mark(b"t" * 32, "tenant-a", image_id, bank) != copies["tenant-a"]


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_a_copy_or_its_lossless_resave_names_its_tenant_alone(name: str) -> None:
    bank = IMAGES[name]
    image_id = sha(bank)
    for tenant in TENANTS:
        copy = wm.mark(SECRET, tenant, image_id, bank)
        again = resaved(copy)
        assert sha(again) != sha(copy) and b"bank copy" not in again
        for posted in (copy, again):
            matches = wm.detect(SECRET, image_id, bank, posted, TENANTS)
            assert [m.tenant_id for m in matches if m.conclusive] == [tenant]
            top = matches[0]
            assert (top.agreeing, top.checked) == (256, 256) and top.chance == 2.0**-256
            assert all(m.chance > 1e-3 for m in matches[1:]), matches


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_the_banks_own_image_names_nobody(name: str) -> None:
    bank = IMAGES[name]
    for posted in (bank, resaved(bank)):
        matches = wm.detect(SECRET, sha(bank), bank, posted, TENANTS)
        assert len(matches) == len(TENANTS)
        assert not [m for m in matches if m.conclusive], matches


def test_a_grey_copy_saved_as_rgb_still_names_its_tenant() -> None:
    image_id = sha(XRAY)
    copy = wm.mark(SECRET, "tenant-b", image_id, XRAY)
    out = io.BytesIO()
    Image.open(io.BytesIO(copy)).convert("RGB").save(out, format="PNG")
    matches = wm.detect(SECRET, image_id, XRAY, out.getvalue(), TENANTS)
    assert [m.tenant_id for m in matches if m.conclusive] == ["tenant-b"]


def test_what_is_not_marked_is_served_as_in_the_bank() -> None:
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(RGB)).save(jpeg, format="JPEG")
    palette = io.BytesIO()
    Image.open(io.BytesIO(RGB)).convert("P").save(palette, format="PNG")
    tiny = io.BytesIO()
    Image.new("L", (16, 16)).save(tiny, format="PNG")  # 256 values: under MIN_VALUES
    for content in (jpeg.getvalue(), palette.getvalue(), tiny.getvalue(), b"\x89PNG\r\n\x1a\nbad"):
        assert wm.mark(SECRET, "tenant-a", sha(content), content) == content
        assert wm.detect(SECRET, sha(content), content, content, TENANTS) == []


def test_a_resized_or_lossy_copy_is_not_traced_and_chance_is_binomial() -> None:
    image_id = sha(RGB)
    copy = Image.open(io.BytesIO(wm.mark(SECRET, "tenant-a", image_id, RGB)))
    small = io.BytesIO()
    copy.resize((256, 256)).save(small, format="PNG")
    assert wm.detect(SECRET, image_id, RGB, small.getvalue(), TENANTS) == []
    lossy = io.BytesIO()
    copy.save(lossy, format="JPEG", quality=95)
    assert wm.detect(SECRET, image_id, RGB, lossy.getvalue(), TENANTS) == []
    assert wm.binomial_tail(0, 256) == 1.0
    assert wm.binomial_tail(128, 256) == pytest.approx(0.5249, abs=1e-4)
    assert wm.binomial_tail(167, 256) <= wm.MATCH_CHANCE < wm.binomial_tail(166, 256)


async def test_getimage_serves_each_tenant_its_copy_by_ranges_and_the_bank_its_own() -> None:
    pools = InMemoryPoolStore()
    images = InMemoryImageStore()
    image_id, _ = await images.put("x.png", RGB, "image/png")
    serving = PoolServing(pools, InMemoryAssignmentStore(pools), images, SECRET)
    whole, media_type, size, served = await serving.tenant_image(image_id, "tenant-a")
    assert whole == wm.mark(SECRET, "tenant-a", image_id, RGB)
    assert (media_type, size, served) == ("image/png", len(whole), sha(whole))
    part, _, _, _ = await serving.tenant_image(image_id, "tenant-a", 100, 50)
    assert part == whole[100:150]
    info = await serving.tenant_image(image_id, "tenant-a", content=False)
    assert info == (b"", "image/png", len(whole), sha(whole))
    other = (await serving.tenant_image(image_id, "tenant-b"))[3]
    assert other not in (served, image_id)
    assert (await serving.image(image_id))[0] == RGB  # scorers and judges: the bank's bytes
    with pytest.raises(InvalidArgument, match="past the end"):
        await serving.tenant_image(image_id, "tenant-a", len(whole) + 1)
    with pytest.raises(InvalidArgument, match="required"):
        await serving.tenant_image(image_id, "")
    images.images[image_id] = (RGB[:-1] + b"!", "image/png")
    with pytest.raises(ImageDamaged):
        await serving.tenant_image(image_id, "tenant-c")


def test_image_hits_rank_a_download_like_canaries_with_their_chance() -> None:
    evidence = LeakEvidence({})
    evidence.add_canary_hit(CanaryHit("tenant-b", "sub-b", "pool", "item-1", 1 / 119))
    hits = [
        ImageHit("tenant-a", "sub-a", "pool", "img-1", 2.0**-256),
        ImageHit("tenant-a", "sub-a", "pool", "img-1", 2.0**-256),  # the same image again
        ImageHit("tenant-a", "sub-a", "pool", "img-2", 1e-7),
    ]
    ranked = evidence.ranked_with_images(hits)
    assert [(s.submission_id, s.image_hits, s.canary_hits) for s in ranked] == [
        ("sub-a", 2, 0),
        ("sub-b", 0, 1),
    ]
    assert ranked[0].chance == pytest.approx(2.0**-256 * 1e-7)
    assert evidence.ranked_with_images([]) == evidence.ranked()
