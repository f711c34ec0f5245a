"""TaskPoolServicer: proto <-> bank, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from medbench.common.v1 import common_pb2
from medbench.taskpool.v1 import (
    taskpool_events_pb2,
    taskpool_pb2,
    taskpool_service_pb2,
    taskpool_service_pb2_grpc,
)
from medbench_messaging import topics
from medbench_messaging.publisher import Outgoing
from medbench_runtime.errors import AlreadyExists, InvalidArgument
from medbench_storage.client import in_transaction
from medbench_storage.infra import Infrastructure
from rotator.adapters.mongo_bank import MongoTaskBank
from rotator.core.bank import (
    DatasetInfo,
    KeyRecord,
    TaskRecord,
    check_id,
    freeze_pool,
    validate_item,
)

TRACKS = {
    common_pb2.TRACK_LLM: "llm",
    common_pb2.TRACK_MULTIMODAL: "multimodal",
    common_pb2.TRACK_AGENT: "agent",
}
TRACK_ENUMS = {v: k for k, v in TRACKS.items()}
MAX_IMPORT_BATCH = 5000
STREAM_BATCH = 500


def track_name(track: int) -> str:
    """The registry name of a proto Track; INVALID_ARGUMENT for UNSPECIFIED."""
    if track not in TRACKS:
        raise InvalidArgument("track must be one of TRACK_LLM, TRACK_MULTIMODAL, TRACK_AGENT")
    return TRACKS[track]


def _pool_to_proto(doc: dict[str, Any]) -> taskpool_pb2.Pool:
    published = Timestamp()
    published.FromDatetime(doc["published_at"])
    return taskpool_pb2.Pool(
        pool_id=doc["_id"],
        track=TRACK_ENUMS[doc["track"]],
        item_count=doc["item_count"],
        datasets=[
            taskpool_pb2.DatasetCount(dataset=d["dataset"], items=d["items"])
            for d in doc["datasets"]
        ],
        published_at=published,
        digest=doc["digest"],
        registry_version=doc.get("registry_version", ""),
    )


class TaskPoolServicer(taskpool_service_pb2_grpc.TaskPoolServiceServicer):
    """Admin and internal API of the rotator."""

    def __init__(
        self,
        infra: Infrastructure,
        bank: MongoTaskBank,
        datasets: Callable[[str, str], DatasetInfo | None],
        registry_version: str,
    ) -> None:
        self._infra = infra
        self._bank = bank
        self._datasets = datasets
        self._registry_version = registry_version

    async def ImportTasks(
        self,
        request_iterator: AsyncIterator[taskpool_service_pb2.ImportTasksRequest],
        context: grpc.aio.ServicerContext,
    ) -> taskpool_service_pb2.ImportTasksResponse:
        imported = unchanged = 0
        async for request in request_iterator:
            if len(request.items) > MAX_IMPORT_BATCH:
                raise InvalidArgument(
                    f"{len(request.items)} items in one message; at most {MAX_IMPORT_BATCH}"
                )
            batch = []
            seen: set[str] = set()
            for item in request.items:
                task = TaskRecord(
                    item_id=item.task.item_id,
                    dataset=item.task.dataset,
                    track=TRACKS.get(item.task.track, "unspecified"),
                    question=item.task.question,
                    answer_format=item.task.answer_format,
                    group_id=item.task.group_id or item.task.item_id,
                    specialties=tuple(item.task.specialties),
                    image_paths=tuple(item.task.image_paths),
                    provenance=item.task.provenance,
                    licence=item.task.licence,
                )
                key = KeyRecord(item.key.item_id, tuple(item.key.reference))
                validate_item(task, key, self._datasets(task.dataset, task.answer_format))
                if task.item_id in seen:
                    raise InvalidArgument(f"item {task.item_id} appears twice in one message")
                seen.add(task.item_id)
                batch.append((task, key))
            new, same = await self._bank.import_items(batch)
            imported += new
            unchanged += same
        return taskpool_service_pb2.ImportTasksResponse(imported=imported, unchanged=unchanged)

    async def PublishPool(
        self, request: taskpool_service_pb2.PublishPoolRequest, context: grpc.aio.ServicerContext
    ) -> taskpool_service_pb2.PublishPoolResponse:
        pool_id = check_id("pool_id", request.pool_id)
        track = track_name(request.track)
        existing = await self._bank.find_pool(pool_id)
        if existing is None:
            entries = []
            async for task, version, key in self._bank.bank_entries(track, request.datasets):
                info = self._datasets(task.dataset, task.answer_format)
                assert info is not None  # validated on import
                entries.append((task, version, key, info))
            frozen = freeze_pool(pool_id, track, entries)
            await self._bank.store_pool(frozen, self._registry_version)
            existing = await self._bank.find_pool(pool_id)
            assert existing is not None
        elif existing["track"] != track:
            raise AlreadyExists(f"pool {pool_id} exists for track {existing['track']}")
        pool = _pool_to_proto(existing)
        event = taskpool_events_pb2.PoolRotated(event_id=f"{pool_id}:rotated", pool=pool)

        async def commit(session: Any) -> None:
            await self._bank.make_current(session, track, pool_id)
            await self._infra.outbox.collection.delete_one({"_id": event.event_id}, session=session)
            await self._infra.outbox.add(
                session, [(event.event_id, Outgoing(topics.POOL_ROTATED, event, key=track))]
            )

        await in_transaction(self._infra.client, commit)
        self._infra.relay.notify()
        return taskpool_service_pb2.PublishPoolResponse(pool=pool)

    async def AssignItems(
        self, request: taskpool_service_pb2.AssignItemsRequest, context: grpc.aio.ServicerContext
    ) -> taskpool_service_pb2.AssignItemsResponse:
        check_id("submission_id", request.submission_id)
        doc = await self._bank.assign(
            request.submission_id, request.tenant_id, track_name(request.track)
        )
        pool = await self._bank.find_pool(doc["pool_id"])
        assert pool is not None
        return taskpool_service_pb2.AssignItemsResponse(
            assignment=taskpool_pb2.Assignment(
                submission_id=request.submission_id,
                pool_id=pool["_id"],
                item_count=pool["item_count"],
                datasets=[
                    taskpool_pb2.DatasetCount(dataset=d["dataset"], items=d["items"])
                    for d in pool["datasets"]
                ],
            )
        )

    async def StreamAssignedItems(
        self,
        request: taskpool_service_pb2.StreamAssignedItemsRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[taskpool_service_pb2.StreamAssignedItemsResponse]:
        assignment = await self._bank.assignment(request.submission_id)
        pool = await self._bank.find_pool(assignment["pool_id"])
        assert pool is not None
        async for chunk in self._bank.pool_chunks(pool["_id"]):
            items = chunk["items"]
            for i in range(0, len(items), STREAM_BATCH):
                out = []
                for it in items[i : i + STREAM_BATCH]:
                    item = taskpool_pb2.AssignedItem(
                        item_id=it["item_id"],
                        ordinal=it["ordinal"],
                        dataset=it["dataset"],
                        answer_format=it["answer_format"],
                    )
                    if request.include_prompts:
                        item.question = it["question"]
                        item.image_paths.extend(it["image_paths"])
                    out.append(item)
                yield taskpool_service_pb2.StreamAssignedItemsResponse(
                    items=out, item_count=pool["item_count"], pool_id=pool["_id"]
                )
