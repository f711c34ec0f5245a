"""RotatorImages: item images fetched from the rotator by content id, each tenant's own
watermarked copy (the rotator makes it: rotator README, "Image watermarks"), cached by bytes."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import grpc

from dispatcher.core.multimodal import Image, ImageNotSendable
from medbench.taskpool.v1 import taskpool_service_pb2_grpc
from medbench_runtime.image_reads import read_image


class RotatorImages:
    """Images are immutable (their id is their hash, a tenant's copy is made the same every
    time), so a cached one is never stale."""

    def __init__(
        self, rotator: taskpool_service_pb2_grpc.TaskPoolServiceStub, cache_bytes: int = 256 << 20
    ) -> None:
        self._rotator = rotator
        self._cache: OrderedDict[tuple[str, str], Image] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._held = 0
        self._loading: dict[tuple[str, str], asyncio.Future[Image]] = {}

    async def get(self, image_id: str, tenant_id: str) -> Image:
        """The image as tenant_id is shown it; ImageNotSendable when the rotator has no image
        with that id."""
        key = (tenant_id, image_id)
        image = self._cache.get(key)
        if image is not None:
            self._cache.move_to_end(key)
            return image
        loading = self._loading.get(key)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[Image] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            image = await self._fetch(image_id, tenant_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody else must
            raise
        finally:
            del self._loading[key]
        future.set_result(image)
        self._keep(key, image)
        return image

    async def _fetch(self, image_id: str, tenant_id: str) -> Image:
        try:
            # In ranges: the largest image an import admits does not fit one reply.
            whole = await read_image(self._rotator, image_id, tenant_id)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise ImageNotSendable(f"image {image_id} is not stored") from exc
            raise
        return Image(whole.content, whole.media_type)

    def _keep(self, key: tuple[str, str], image: Image) -> None:
        if len(image.content) > self._cache_bytes // 4:
            return  # one huge image must not flush the cache
        self._cache[key] = image
        self._held += len(image.content)
        while self._held > self._cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._held -= len(old.content)
