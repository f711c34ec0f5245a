"""DownloadImages serves each tenant its own watermarked copies (the rotator makes them): content
ids are per tenant (the sha256 of the copy), the gateway's hash check and resumption hold for
them, and the bank's ids are never announced. In-memory fakes (no stack)."""

from __future__ import annotations

import hashlib

import pytest

from gateway.core.images import ImagesRequest
from gateway.core.submission import MODE_UPLOAD
from gateway.usecases.images import ImageBroken, ImageBytes, ImageHeader, Images
from medbench_runtime.errors import NotFound
from tests.services.gateway.fakes import FakePoolImages, InMemorySubmissionStore
from tests.services.gateway.test_images import BANK, IA, IB, IC, SERVED, assembled


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class World:
    def __init__(self) -> None:
        self.store = InMemorySubmissionStore()
        self.pool = FakePoolImages(dict(BANK), {"sub-a": SERVED, "sub-b": SERVED})
        self.pool.watermark = True
        self.images = Images(self.store, self.pool, chunk_bytes=10)
        for tenant, sid in (("tenant-a", "sub-a"), ("tenant-b", "sub-b")):
            self.store.records[(tenant, sid)] = {
                "_id": sid,
                "tenant_id": tenant,
                "mode": MODE_UPLOAD,
            }

    async def parts(
        self, tenant: str, sid: str, **request: object
    ) -> list[ImageHeader | ImageBytes]:
        return [
            p
            async for p in self.images.download(tenant, sid, ImagesRequest(**request))  # type: ignore[arg-type]
        ]


async def test_each_tenant_gets_its_own_copies_under_their_own_ids() -> None:
    world = World()
    got = {
        t: assembled(await world.parts(t, s))
        for t, s in (("tenant-a", "sub-a"), ("tenant-b", "sub-b"))
    }
    for tenant, images in got.items():
        expected = [world.pool.served_copy(i, tenant)[0] for i in (IA, IB, IC)]
        assert list(images) == [sha(c) for c in expected]
        for image_id, (header, data) in images.items():
            assert sha(data) == image_id and header.size == len(data)
    assert not set(got["tenant-a"]) & set(got["tenant-b"])
    assert not {IA, IB, IC} & set(got["tenant-a"])  # the bank's ids are never announced
    # Reads name the bank image and the tenant.
    assert {r[0] for r in world.pool.reads} == {IA, IB, IC}


async def test_a_tenants_ids_resume_and_select_and_the_bank_ids_are_not_found() -> None:
    world = World()
    listed = [p for p in await world.parts("tenant-a", "sub-a", info_only=True)]
    ids = [p.image_id for p in listed if isinstance(p, ImageHeader)]
    copy_b = world.pool.served_copy(IB, "tenant-a")[0]
    assert ids[1] == sha(copy_b)
    resumed = assembled(await world.parts("tenant-a", "sub-a", image_ids=(ids[1],), offset=13))
    header, data = resumed[ids[1]]
    assert (header.offset, header.size, data) == (13, len(copy_b), copy_b[13:])
    held = assembled(await world.parts("tenant-a", "sub-a", held_image_ids=(ids[0], ids[2])))
    assert list(held) == [ids[1]]
    with pytest.raises(NotFound):
        await world.parts("tenant-a", "sub-a", image_ids=(IB,))  # a bank id is no id of theirs
    other = sha(world.pool.served_copy(IB, "tenant-b")[0])
    with pytest.raises(NotFound):
        await world.parts("tenant-a", "sub-a", image_ids=(other,))  # nor another tenant's


async def test_a_copy_that_does_not_hash_to_its_id_is_held_back() -> None:
    world = World()
    ids = [
        p.image_id
        for p in await world.parts("tenant-a", "sub-a", info_only=True)
        if isinstance(p, ImageHeader)
    ]
    world.pool.bank[IB] = (BANK[IB][0][:-1] + b"!", "image/png")  # the rotator now serves otherwise
    parts: list[ImageHeader | ImageBytes] = []
    with pytest.raises(ImageBroken, match="hash"):
        async for part in world.images.download(
            "tenant-a", "sub-a", ImagesRequest(image_ids=(ids[1],))
        ):
            parts.append(part)
    sent = b"".join(p.data for p in parts if isinstance(p, ImageBytes))
    assert len(sent) < len(world.pool.served_copy(IB, "tenant-a")[0])  # the last run held back
