"""TaskPoolServicer: request -> use case -> response (mapping in convert)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from medbench.taskpool.v1 import taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_runtime.auth import current_principal
from rotator.entrypoints import convert
from rotator.usecases.bank import BankImport, DatasetListing
from rotator.usecases.disclosure import PoolDisclosure
from rotator.usecases.leaks import LeakTracing
from rotator.usecases.pool import PoolServing
from rotator.usecases.registry import RegistryVersions
from rotator.usecases.rotation import PoolRotation


class TaskPoolServicer(taskpool_service_pb2_grpc.TaskPoolServiceServicer):
    """Admin and internal API of the rotator."""

    def __init__(
        self,
        bank: BankImport,
        listing: DatasetListing,
        registry: RegistryVersions,
        rotation: PoolRotation,
        serving: PoolServing,
        leaks: LeakTracing,
        disclosure: PoolDisclosure,
    ) -> None:
        self._bank = bank
        self._listing = listing
        self._registry = registry
        self._rotation = rotation
        self._serving = serving
        self._leaks = leaks
        self._disclosure = disclosure

    async def ImportTasks(
        self,
        request_iterator: AsyncIterator[taskpool_service_pb2.ImportTasksRequest],
        context: grpc.aio.ServicerContext,
    ) -> taskpool_service_pb2.ImportTasksResponse:
        outcome = await self._bank.import_items(convert.import_batches(request_iterator))
        return convert.import_response(outcome)

    async def ListDatasets(
        self, request: taskpool_service_pb2.ListDatasetsRequest, context: grpc.aio.ServicerContext
    ) -> taskpool_service_pb2.ListDatasetsResponse:
        listed = await self._listing.list_datasets(
            convert.track_filter(request.track), request.version, request.pool_id
        )
        return convert.datasets_response(listed)

    async def PutDataset(
        self, request: taskpool_service_pb2.PutDatasetRequest, context: grpc.aio.ServicerContext
    ) -> taskpool_service_pb2.PutDatasetResponse:
        put = await self._registry.put_dataset(
            request.revises,
            convert.dataset_entry(request.dataset),
            current_principal().key_id,
            request.note,
        )
        return convert.put_response(put)

    async def GetRegistry(
        self, request: taskpool_service_pb2.GetRegistryRequest, context: grpc.aio.ServicerContext
    ) -> taskpool_service_pb2.GetRegistryResponse:
        return convert.registry_response(await self._registry.show(request.version))

    async def ListRegistryVersions(
        self,
        request: taskpool_service_pb2.ListRegistryVersionsRequest,
        context: grpc.aio.ServicerContext,
    ) -> taskpool_service_pb2.ListRegistryVersionsResponse:
        infos, current = await self._registry.versions(request.before, request.limit)
        return convert.versions_response(infos, current)

    async def RotatePool(
        self, request: taskpool_service_pb2.RotatePoolRequest, context: grpc.aio.ServicerContext
    ) -> taskpool_service_pb2.RotatePoolResponse:
        rotated = await self._rotation.rotate(convert.rotation_request(request))
        return taskpool_service_pb2.RotatePoolResponse(
            pool=convert.pool_to_proto(rotated.pool, current=True), shortfalls=rotated.shortfalls
        )

    async def PublishPool(
        self, request: taskpool_service_pb2.PublishPoolRequest, context: grpc.aio.ServicerContext
    ) -> taskpool_service_pb2.PublishPoolResponse:
        pool = await self._rotation.publish(
            request.pool_id,
            convert.track_name(request.track),
            convert.board_or_upload(request.board),
            tuple(request.datasets),
        )
        return taskpool_service_pb2.PublishPoolResponse(
            pool=convert.pool_to_proto(pool, current=True)
        )

    async def DisclosePool(
        self, request: taskpool_service_pb2.DisclosePoolRequest, context: grpc.aio.ServicerContext
    ) -> taskpool_service_pb2.DisclosePoolResponse:
        disclosed = await self._disclosure.disclose(request.pool_id)
        return taskpool_service_pb2.DisclosePoolResponse(
            # A disclosed pool is never a board's current one.
            pool=convert.pool_to_proto(disclosed.pool, current=False),
            retired_groups=disclosed.retired_groups,
            newly_disclosed=disclosed.newly,
        )

    async def GetPool(
        self, request: taskpool_service_pb2.GetPoolRequest, context: grpc.aio.ServicerContext
    ) -> taskpool_service_pb2.GetPoolResponse:
        if not request.pool_id:
            current = await self._serving.current_pool(
                convert.track_name(request.track), convert.board_or_upload(request.board)
            )
            return taskpool_service_pb2.GetPoolResponse(
                pool=convert.pool_to_proto(current, current=True)
            )
        pool, is_current = await self._serving.pool(request.pool_id)
        return taskpool_service_pb2.GetPoolResponse(
            pool=convert.pool_to_proto(pool, current=is_current)
        )

    async def AssignItems(
        self, request: taskpool_service_pb2.AssignItemsRequest, context: grpc.aio.ServicerContext
    ) -> taskpool_service_pb2.AssignItemsResponse:
        pool, variant = await self._serving.assign(
            request.submission_id,
            request.tenant_id,
            convert.track_name(request.track),
            convert.board_or_upload(request.board),
        )
        return taskpool_service_pb2.AssignItemsResponse(
            assignment=convert.assignment_to_proto(request.submission_id, pool, variant)
        )

    async def GetPrompts(
        self, request: taskpool_service_pb2.GetPromptsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[taskpool_service_pb2.GetPromptsResponse]:
        async for batch in self._serving.prompts(request.submission_id, request.include_prompts):
            yield convert.prompts_response(batch)

    async def GetImage(
        self, request: taskpool_service_pb2.GetImageRequest, context: grpc.aio.ServicerContext
    ) -> taskpool_service_pb2.GetImageResponse:
        if request.tenant_id:
            content, media_type, size, served = await self._serving.tenant_image(
                request.image_id,
                request.tenant_id,
                request.offset,
                request.max_bytes,
                not request.info_only,
            )
        else:
            content, media_type, size = await self._serving.image(
                request.image_id, request.offset, request.max_bytes, not request.info_only
            )
            served = request.image_id
        return taskpool_service_pb2.GetImageResponse(
            image_id=request.image_id,
            content=content,
            media_type=media_type,
            size=size,
            served_sha256=served,
        )

    async def TraceLeak(
        self,
        request_iterator: AsyncIterator[taskpool_service_pb2.TraceLeakRequest],
        context: grpc.aio.ServicerContext,
    ) -> taskpool_service_pb2.TraceLeakResponse:
        trace = await self._leaks.trace(convert.leaked_batches(request_iterator))
        return convert.trace_response(trace)

    async def ListLeakSignals(
        self,
        request: taskpool_service_pb2.ListLeakSignalsRequest,
        context: grpc.aio.ServicerContext,
    ) -> taskpool_service_pb2.ListLeakSignalsResponse:
        found = await self._leaks.signals(request.tenant_id, request.pool_id, request.limit)
        return convert.signals_response(found)
