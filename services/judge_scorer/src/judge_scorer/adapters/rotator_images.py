"""RotatorImages: the bank's own images from the rotator (`TaskPoolService.GetImage` without a
tenant: never a tenant's watermarked copy; read in ranges: medbench_runtime.image_reads),
cached by bytes. Images are immutable (the id is the
hash of the bytes), so a cached one is never stale."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import grpc

from judge_scorer.core.ports import ImageMissing
from judge_scorer.core.prompt import ImageMismatch, JudgeImage
from medbench.taskpool.v1 import taskpool_service_pb2_grpc
from medbench_runtime.errors import Unavailable
from medbench_runtime.image_reads import ImageHashMismatch, ImageReadFailed, read_image


class ImageUnavailable(Unavailable):
    """The rotator could not be asked for an image (down, deadline, refused): transient, the
    judge request is retried later, never judged without its images (and a reviewer's
    GetReviewImage answers UNAVAILABLE)."""


class RotatorImages:
    """ItemImages over the rotator's GetImage; concurrent asks for one image share one call."""

    def __init__(
        self,
        rotator: taskpool_service_pb2_grpc.TaskPoolServiceStub,
        cache_bytes: int = 256 << 20,
        timeout_s: float = 30.0,
    ) -> None:
        self._rotator = rotator
        self._cache: OrderedDict[str, JudgeImage] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._timeout_s = timeout_s
        self._held = 0
        self._loading: dict[str, asyncio.Future[JudgeImage]] = {}

    async def image(self, image_id: str) -> JudgeImage:
        image = self._cache.get(image_id)
        if image is not None:
            self._cache.move_to_end(image_id)
            return image
        loading = self._loading.get(image_id)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[JudgeImage] = asyncio.get_running_loop().create_future()
        self._loading[image_id] = future
        try:
            image = await self._fetch(image_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody else must
            raise
        finally:
            del self._loading[image_id]
        future.set_result(image)
        self._keep(image)
        return image

    async def _fetch(self, image_id: str) -> JudgeImage:
        try:
            # No tenant_id: the bank's bytes, as imported; in ranges (the largest image an
            # import admits does not fit one reply).
            whole = await read_image(self._rotator, image_id, timeout_s=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise ImageMissing(f"image {image_id} is not in the bank") from exc
            raise ImageUnavailable(
                f"image {image_id}: the rotator answered {exc.code().name}: {exc.details()}"
            ) from exc
        except ImageHashMismatch as exc:
            raise ImageMismatch(str(exc)) from exc
        except ImageReadFailed as exc:
            raise ImageUnavailable(str(exc)) from exc
        return JudgeImage(image_id, whole.media_type, whole.content)

    def _keep(self, image: JudgeImage) -> None:
        if len(image.content) > self._cache_bytes // 4:
            return  # one huge image must not flush the cache
        self._cache[image.image_id] = image
        self._held += len(image.content)
        while self._held > self._cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._held -= len(old.content)
