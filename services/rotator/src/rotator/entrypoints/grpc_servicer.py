"""TaskPoolServicer: proto <-> task bank, rotation and assignment."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
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
from medbench_runtime.errors import AlreadyExists, InvalidArgument, NotFound
from medbench_storage.client import in_transaction
from medbench_storage.infra import Infrastructure
from rotator.adapters.gridfs_images import ImageStore
from rotator.adapters.mongo_bank import Incoming, MongoTaskBank
from rotator.catalog import DatasetCatalog
from rotator.core.bank import (
    ItemRejected,
    KeyRecord,
    TaskRecord,
    check_id,
    content_hash,
    freeze_pool,
    normalise_key,
    validate_item,
)
from rotator.core.rotation import RotationParams, RotationPlan, seed_for_cycle

TRACKS = {
    common_pb2.TRACK_LLM: "llm",
    common_pb2.TRACK_MULTIMODAL: "multimodal",
    common_pb2.TRACK_AGENT: "agent",
}
TRACK_ENUMS = {v: k for k, v in TRACKS.items()}
BOARDS = {taskpool_pb2.BOARD_API: "api", taskpool_pb2.BOARD_UPLOAD: "upload"}
BOARD_ENUMS = {v: k for k, v in BOARDS.items()}
CYCLE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_IMPORT_BATCH = 5000
STREAM_BATCH = 500


def track_name(track: int) -> str:
    """The registry name of a proto Track; INVALID_ARGUMENT for UNSPECIFIED."""
    if track not in TRACKS:
        raise InvalidArgument("track must be one of TRACK_LLM, TRACK_MULTIMODAL, TRACK_AGENT")
    return TRACKS[track]


def board_name(board: int, default: str | None = None) -> str:
    if board in BOARDS:
        return BOARDS[board]
    if default is not None and board == taskpool_pb2.BOARD_UNSPECIFIED:
        return default
    raise InvalidArgument("board must be BOARD_API or BOARD_UPLOAD")


def pool_to_proto(doc: dict[str, Any], current: bool = False) -> taskpool_pb2.Pool:
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
        board=BOARD_ENUMS.get(doc.get("board", "upload"), taskpool_pb2.BOARD_UNSPECIFIED),
        cycle=doc.get("cycle", ""),
        seed=doc.get("seed", 0),
        anchor_groups=doc.get("anchor_groups", 0),
        group_count=doc.get("group_count", 0),
        current=current,
        method=doc.get("method", ""),
    )


class TaskPoolServicer(taskpool_service_pb2_grpc.TaskPoolServiceServicer):
    """Admin and internal API of the rotator."""

    def __init__(
        self,
        infra: Infrastructure,
        bank: MongoTaskBank,
        catalog: DatasetCatalog,
        images: ImageStore,
    ) -> None:
        self._infra = infra
        self._bank = bank
        self._catalog = catalog
        self._images = images

    # -- import ---------------------------------------------------------------------------

    async def ImportTasks(
        self,
        request_iterator: AsyncIterator[taskpool_service_pb2.ImportTasksRequest],
        context: grpc.aio.ServicerContext,
    ) -> taskpool_service_pb2.ImportTasksResponse:
        response = taskpool_service_pb2.ImportTasksResponse()
        async for request in request_iterator:
            if len(request.items) > MAX_IMPORT_BATCH:
                raise InvalidArgument(
                    f"{len(request.items)} items in one message; at most {MAX_IMPORT_BATCH}"
                )
            batch: list[Incoming] = []
            seen: set[str] = set()
            for item in request.items:
                try:
                    incoming, stored = await self._incoming(item)
                    if incoming.task.item_id in seen:
                        raise ItemRejected(
                            "task.item_id", f"item {incoming.task.item_id} appears twice"
                        )
                except ItemRejected as rejected:
                    response.rejected.append(
                        taskpool_pb2.ImportRejection(
                            ref=item.ref,
                            item_id=item.task.item_id,
                            field=rejected.field,
                            reason=str(rejected),
                        )
                    )
                    continue
                seen.add(incoming.task.item_id)
                response.images_stored += stored
                batch.append(incoming)
            counts = await self._bank.import_items(batch)
            response.imported += counts.imported
            response.unchanged += counts.unchanged
            response.new_versions += counts.new_versions
        return response

    async def _incoming(self, item: taskpool_pb2.ImportItem) -> tuple[Incoming, int]:
        t = item.task
        if t.track not in TRACKS:
            raise ItemRejected("task.track", f"item {t.item_id}: track is not set")
        resolved = self._catalog.resolve(t.item_id, t.dataset, t.source, t.answer_format)
        task = TaskRecord(
            item_id=t.item_id,
            dataset=resolved.info.name,
            track=TRACKS[t.track],
            question=t.question or (t.messages[-1].content if t.messages else ""),
            answer_format=resolved.answer_format,
            group_id=t.group_id or t.item_id,
            specialties=tuple(t.specialties),
            image_paths=tuple(t.image_paths),
            provenance=t.provenance,
            licence=t.licence,
            source=t.source,
            messages=tuple((m.role, m.content) for m in t.messages),
        )
        key = None
        if item.HasField("key") and (
            item.key.reference or item.key.key_points or item.key.rubric_id
        ):
            key = normalise_key(
                KeyRecord(
                    item.key.item_id or t.item_id,
                    tuple(item.key.reference),
                    tuple(item.key.key_points),
                    item.key.rubric_id,
                ),
                resolved.answer_format,
            )
        validate_item(task, key, resolved.info)
        primary = self._catalog.primary_specialty(task.item_id, task.specialties)
        blobs = {b.path: b for b in item.images}
        unknown = sorted(set(blobs) - set(task.image_paths))
        if unknown:
            raise ItemRejected(
                "images", f"item {task.item_id}: images {unknown} not in image_paths"
            )
        image_ids: list[str] = []
        stored = 0
        for path in task.image_paths:
            blob = blobs.get(path)
            if blob is None:
                continue
            image_id, new = await self._images.put(path, blob.content, blob.media_type)
            image_ids.append(image_id)
            stored += new
        incoming = Incoming(
            task, key, content_hash(task, key, image_ids), tuple(image_ids), primary
        )
        return incoming, stored

    async def ListDatasets(
        self, request: taskpool_service_pb2.ListDatasetsRequest, context: grpc.aio.ServicerContext
    ) -> taskpool_service_pb2.ListDatasetsResponse:
        track = None if request.track == common_pb2.TRACK_UNSPECIFIED else track_name(request.track)
        counts = await self._bank.dataset_counts(track)
        return taskpool_service_pb2.ListDatasetsResponse(
            registry_version=self._catalog.version,
            datasets=[
                taskpool_pb2.DatasetInfo(
                    dataset=d.name,
                    track=TRACK_ENUMS[d.track],
                    dimension=d.dimension,
                    answer_formats=sorted(d.answer_formats),
                    metric=d.metric,
                    bank_items=counts.get(d.name, (0, 0))[0],
                    keyed_items=counts.get(d.name, (0, 0))[1],
                )
                for d in self._catalog.datasets_in(track)
            ],
        )

    # -- pools ----------------------------------------------------------------------------

    async def RotatePool(
        self, request: taskpool_service_pb2.RotatePoolRequest, context: grpc.aio.ServicerContext
    ) -> taskpool_service_pb2.RotatePoolResponse:
        track = track_name(request.track)
        board = board_name(request.board)
        if not CYCLE.match(request.cycle):
            raise InvalidArgument("cycle must be 1-64 characters of [A-Za-z0-9._-]")
        params = RotationParams(
            board=board,
            seed=request.seed or seed_for_cycle(request.cycle),
            groups_per_dataset=request.groups_per_dataset or 30,
            exposure_cap=request.exposure_cap or 3,
            anchors_per_dataset=request.anchors_per_dataset or 3,
        )
        if (
            params.groups_per_dataset < 1
            or params.exposure_cap < 1
            or params.anchors_per_dataset < 0
        ):
            raise InvalidArgument("groups_per_dataset and exposure_cap must be positive")
        pool_id = f"{track}-{board}-{request.cycle}"
        names = list(request.datasets) or [d.name for d in self._catalog.datasets_in(track)]
        for name in names:
            if name not in {d.name for d in self._catalog.datasets_in(track)}:
                raise InvalidArgument(f"dataset {name!r} is not a {track} dataset")
        existing = await self._bank.find_pool(pool_id)
        shortfalls: list[str] = []
        if existing is not None:
            if existing.get("params") != _params_doc(params, names):
                raise AlreadyExists(
                    f"pool {pool_id} exists with other parameters; a cycle is rotated once"
                )
            shortfalls = existing.get("shortfalls", [])
        else:
            previous = await self._bank.previous_pool(track, board)
            anchors = {} if previous is None else await self._bank.pool_groups(previous["_id"])
            plan = RotationPlan(params, await self._bank.exposures(), anchors)
            async for dataset, group_id, specialty in self._bank.stream_candidates(track, names):
                plan.offer(dataset, group_id, specialty)
            selection = plan.choose(names)
            chosen = [g for groups in selection.groups.values() for g in groups]
            entries = await self._bank.group_entries(chosen)
            infos = {}
            for task, _, _, _ in entries:
                infos[task.item_id] = self._catalog.resolve(
                    task.item_id, task.dataset, "", task.answer_format
                ).info
            frozen = freeze_pool(
                pool_id, track, [(t, v, k, infos[t.item_id]) for t, v, k, _ in entries]
            )
            shortfalls = list(selection.shortfalls)
            await self._bank.store_pool(
                frozen,
                {
                    "board": board,
                    "cycle": request.cycle,
                    "seed": params.seed,
                    "method": "rotation",
                    "registry_version": self._catalog.version,
                    "anchor_groups": sum(len(a) for a in selection.anchors.values()),
                    "params": _params_doc(params, names),
                    "shortfalls": shortfalls,
                    "previous_pool": None if previous is None else previous["_id"],
                },
                {t.item_id: images for t, _, _, images in entries},
            )
            await self._bank.count_exposures(pool_id, chosen)
            existing = await self._bank.find_pool(pool_id)
            assert existing is not None
        pool = await self._make_current(existing, track, board)
        return taskpool_service_pb2.RotatePoolResponse(pool=pool, shortfalls=shortfalls)

    async def PublishPool(
        self, request: taskpool_service_pb2.PublishPoolRequest, context: grpc.aio.ServicerContext
    ) -> taskpool_service_pb2.PublishPoolResponse:
        pool_id = check_id("pool_id", request.pool_id)
        track = track_name(request.track)
        board = board_name(request.board, default="upload")
        existing = await self._bank.find_pool(pool_id)
        if existing is None:
            entries = await self._bank.bank_entries(track, request.datasets)
            frozen = freeze_pool(
                pool_id,
                track,
                [
                    (t, v, k, self._catalog.resolve(t.item_id, t.dataset, "", t.answer_format).info)
                    for t, v, k, _ in entries
                ],
            )
            await self._bank.store_pool(
                frozen,
                {"board": board, "method": "whole-bank", "registry_version": self._catalog.version},
                {t.item_id: images for t, _, _, images in entries},
            )
            existing = await self._bank.find_pool(pool_id)
            assert existing is not None
        elif existing["track"] != track or existing.get("board", "upload") != board:
            raise AlreadyExists(
                f"pool {pool_id} exists for track {existing['track']}, board "
                f"{existing.get('board', 'upload')}"
            )
        return taskpool_service_pb2.PublishPoolResponse(
            pool=await self._make_current(existing, track, board)
        )

    async def _make_current(self, doc: dict[str, Any], track: str, board: str) -> taskpool_pb2.Pool:
        pool = pool_to_proto(doc, current=True)
        event = taskpool_events_pb2.PoolRotated(event_id=f"{doc['_id']}:rotated", pool=pool)

        async def commit(session: Any) -> None:
            await self._bank.make_current(session, track, board, doc["_id"])
            await self._infra.outbox.collection.delete_one({"_id": event.event_id}, session=session)
            await self._infra.outbox.add(
                session, [(event.event_id, Outgoing(topics.POOL_ROTATED, event, key=track))]
            )

        await in_transaction(self._infra.client, commit)
        self._infra.relay.notify()
        return pool

    async def GetPool(
        self, request: taskpool_service_pb2.GetPoolRequest, context: grpc.aio.ServicerContext
    ) -> taskpool_service_pb2.GetPoolResponse:
        doc = await self._bank.find_pool(request.pool_id)
        if doc is None:
            raise NotFound(f"pool {request.pool_id!r} not found")
        return taskpool_service_pb2.GetPoolResponse(
            pool=pool_to_proto(doc, current=await self._bank.is_current(doc))
        )

    # -- assignment -----------------------------------------------------------------------

    async def AssignItems(
        self, request: taskpool_service_pb2.AssignItemsRequest, context: grpc.aio.ServicerContext
    ) -> taskpool_service_pb2.AssignItemsResponse:
        check_id("submission_id", request.submission_id)
        doc = await self._bank.assign(
            request.submission_id,
            request.tenant_id,
            track_name(request.track),
            board_name(request.board, default="upload"),
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

    async def GetPrompts(
        self, request: taskpool_service_pb2.GetPromptsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[taskpool_service_pb2.GetPromptsResponse]:
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
                        item.messages.extend(
                            taskpool_pb2.ChatMessage(role=m["role"], content=m["content"])
                            for m in it.get("messages", ())
                        )
                    out.append(item)
                yield taskpool_service_pb2.GetPromptsResponse(
                    items=out, item_count=pool["item_count"], pool_id=pool["_id"]
                )


def _params_doc(params: RotationParams, datasets: list[str]) -> dict[str, Any]:
    return {
        "seed": params.seed,
        "groups_per_dataset": params.groups_per_dataset,
        "exposure_cap": params.exposure_cap,
        "anchors_per_dataset": params.anchors_per_dataset,
        "datasets": sorted(datasets),
    }
