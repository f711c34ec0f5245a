"""TaskPoolServicer: proto <-> task bank, rotation and assignment."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
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
from medbench_runtime.images import FORMATS as IMAGE_FORMATS
from medbench_runtime.images import image_type
from medbench_storage.client import in_transaction
from medbench_storage.infra import Infrastructure
from rotator.adapters.gridfs_images import ImageStore
from rotator.adapters.mongo_bank import Incoming, MongoTaskBank
from rotator.catalog import DatasetCatalog
from rotator.core.bank import (
    CHUNK_BYTES,
    ItemRejected,
    KeyRecord,
    TaskRecord,
    check_id,
    content_hash,
    freeze_pool,
    normalise_key,
    validate_item,
)
from rotator.core.leaktrace import canaries, chance, fingerprint, observed_order
from rotator.core.options import parse_options, permutation_for, relabel
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
MAX_TRACE_LINES = 1_000_000
log = logging.getLogger(__name__)
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


def prompt_hash(
    question: str, messages: Sequence[tuple[str, str]], image_ids: Iterable[str]
) -> str:
    """The identity of a prompt as shown: 32 hex digits of sha256 over its parts."""
    h = hashlib.sha256(question.encode())
    for role, content in messages:
        h.update(b"\0" + role.encode() + b"\0" + content.encode())
    for image_id in image_ids:
        h.update(b"\1" + image_id.encode())
    return h.hexdigest()[:32]


class TaskPoolServicer(taskpool_service_pb2_grpc.TaskPoolServiceServicer):
    """Admin and internal API of the rotator."""

    def __init__(
        self,
        infra: Infrastructure,
        bank: MongoTaskBank,
        catalog: DatasetCatalog,
        images: ImageStore,
        leak_secret: bytes,
        canaries_per_download: int = 3,
    ) -> None:
        self._infra = infra
        self._bank = bank
        self._catalog = catalog
        self._images = images
        self._secret = leak_secret
        self._canaries = canaries_per_download

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
        resolved = self._catalog.resolve(t.item_id, t.dataset, t.source, t.answer_format)
        task = TaskRecord(
            item_id=t.item_id,
            dataset=resolved.info.name,
            # Unset: the dataset's track; set: checked against it by validate_item.
            track=TRACKS.get(t.track, resolved.info.track),
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
        # Every image is checked before any is stored: a rejected item stores nothing.
        media_types: dict[str, str] = {}
        for path, blob in blobs.items():
            media_type = image_type(blob.content)
            if media_type is None:
                raise ItemRejected(
                    "images",
                    f"item {task.item_id}: image {path} is not a {IMAGE_FORMATS} file (by its "
                    f"first bytes)",
                )
            media_types[path] = media_type
        image_ids: list[str] = []
        stored = 0
        for path in task.image_paths:
            blob = blobs.get(path)
            if blob is None:
                continue
            # The type the bytes have, whatever the client or the file name says.
            image_id, new = await self._images.put(path, blob.content, media_types[path])
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
        names = {d.code: d for d in self._catalog.registry.dimensions}
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
                    dimension_name=names[d.dimension].name if d.dimension in names else "",
                    dimension_name_zh=names[d.dimension].name_zh if d.dimension in names else "",
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
        if not CYCLE.fullmatch(request.cycle):
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
            started = time.perf_counter()
            plan = RotationPlan(params, await self._bank.exposures(), anchors)
            async for dataset, group_id, specialty in self._bank.stream_candidates(track, names):
                plan.offer(dataset, group_id, specialty)
            selection = plan.choose(names)
            streamed = time.perf_counter()
            chosen = [g for groups in selection.groups.values() for g in groups]
            entries = await self._bank.group_entries(chosen)
            fetched = time.perf_counter()
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
            log.info(
                "rotated %s: %d bank items streamed in %.1f s, %d groups fetched in %.1f s, "
                "stored in %.1f s",
                pool_id,
                plan.offered,
                streamed - started,
                len(chosen),
                fetched - streamed,
                time.perf_counter() - fetched,
            )
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
        if not request.pool_id:
            # The board's current pool: the gateway asks before it calls a partner's endpoint.
            current = await self._bank.current_pool(
                track_name(request.track), board_name(request.board, default="upload")
            )
            return taskpool_service_pb2.GetPoolResponse(pool=pool_to_proto(current, current=True))
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
        variant = await self._variant(request.submission_id, doc["tenant_id"], pool)
        return taskpool_service_pb2.AssignItemsResponse(
            assignment=taskpool_pb2.Assignment(
                submission_id=request.submission_id,
                pool_id=pool["_id"],
                item_count=pool["item_count"],
                datasets=[
                    taskpool_pb2.DatasetCount(dataset=d["dataset"], items=d["items"])
                    for d in pool["datasets"]
                ],
                canary_items=len(variant["canaries"]),
            )
        )

    async def _variant(
        self, submission_id: str, tenant_id: str, pool: dict[str, Any]
    ) -> dict[str, Any]:
        """The download's option orders and canaries, stored sealed before anyone can
        download or score (deterministic, so a retry stores the same)."""
        found = await self._bank.variant(submission_id)
        if found is not None:
            return found
        orders: list[list[str]] = []
        choice_datasets: set[str] = set()
        async for chunk in self._bank.pool_chunks(pool["_id"]):
            for it in chunk["items"]:
                n = it.get("n_options", 0)
                if n >= 2:
                    order = permutation_for(self._secret, tenant_id, it["item_id"], n)
                    orders.append([it["item_id"], ",".join(map(str, order))])
                    choice_datasets.add(it["dataset"])
        made = canaries(
            self._secret, tenant_id, submission_id, sorted(choice_datasets), self._canaries
        )
        doc = {
            "_id": submission_id,
            "tenant_id": tenant_id,
            "pool_id": pool["_id"],
            "orders": orders,
            "canaries": [
                {
                    "item_id": c.item_id,
                    "dataset": c.dataset,
                    "question": c.question,
                    "fingerprint": c.fingerprint,
                    "ordinal": pool["item_count"] + k,
                    "after": int(c.fingerprint[:8], 16) % max(pool["item_count"], 1),
                }
                for k, c in enumerate(made)
            ],
        }
        await self._bank.store_variant(doc)
        return doc

    async def GetPrompts(
        self, request: taskpool_service_pb2.GetPromptsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[taskpool_service_pb2.GetPromptsResponse]:
        assignment = await self._bank.assignment(request.submission_id)
        pool = await self._bank.find_pool(assignment["pool_id"])
        assert pool is not None
        variant = await self._variant(request.submission_id, assignment["tenant_id"], pool)
        orders = {
            item_id: tuple(map(int, order.split(","))) for item_id, order in variant["orders"]
        }
        canaries_after: dict[int, list[dict[str, Any]]] = {}
        for canary in variant["canaries"]:
            canaries_after.setdefault(canary["after"], []).append(canary)
        out: list[taskpool_pb2.AssignedItem] = []
        # A message ends at STREAM_BATCH items or CHUNK_BYTES of prompts, whichever comes first
        # (an item's prompt is at most MAX_PROMPT_BYTES: far under gRPC's 16 MiB message).
        out_bytes = 0
        async for chunk in self._bank.pool_chunks(pool["_id"]):
            for it in chunk["items"]:
                item = taskpool_pb2.AssignedItem(
                    item_id=it["item_id"],
                    ordinal=it["ordinal"],
                    dataset=it["dataset"],
                    answer_format=it["answer_format"],
                )
                shown = _shown(it["question"], orders.get(it["item_id"]))
                messages = [(m["role"], m["content"]) for m in it.get("messages", ())]
                item.prompt_hash = prompt_hash(shown, messages, it.get("image_ids", ()))
                if request.include_prompts:
                    item.question = shown
                    item.image_paths.extend(it["image_paths"])
                    item.image_ids.extend(it.get("image_ids", ()))
                    item.messages.extend(
                        taskpool_pb2.ChatMessage(role=m["role"], content=m["content"])
                        for m in it.get("messages", ())
                    )
                out.append(item)
                # Characters, at most 3 UTF-8 bytes each (counted without encoding).
                out_bytes += 3 * (len(item.question) + sum(len(m.content) for m in item.messages))
                for canary in canaries_after.get(it["ordinal"], ()):
                    out.append(
                        taskpool_pb2.AssignedItem(
                            item_id=canary["item_id"],
                            ordinal=canary["ordinal"],
                            dataset=canary["dataset"],
                            answer_format="choice_single",
                            question=canary["question"] if request.include_prompts else "",
                            canary=True,
                            prompt_hash=prompt_hash(canary["question"], [], ()),
                        )
                    )
                if len(out) >= STREAM_BATCH or out_bytes >= CHUNK_BYTES:
                    yield taskpool_service_pb2.GetPromptsResponse(
                        items=out, item_count=pool["item_count"], pool_id=pool["_id"]
                    )
                    out, out_bytes = [], 0
        if out:
            yield taskpool_service_pb2.GetPromptsResponse(
                items=out, item_count=pool["item_count"], pool_id=pool["_id"]
            )

    async def GetImage(
        self, request: taskpool_service_pb2.GetImageRequest, context: grpc.aio.ServicerContext
    ) -> taskpool_service_pb2.GetImageResponse:
        if not request.image_id:
            raise InvalidArgument("image_id is required")
        content, media_type = await self._images.get(request.image_id)
        return taskpool_service_pb2.GetImageResponse(
            image_id=request.image_id, content=content, media_type=media_type
        )

    async def TraceLeak(
        self,
        request_iterator: AsyncIterator[taskpool_service_pb2.TraceLeakRequest],
        context: grpc.aio.ServicerContext,
    ) -> taskpool_service_pb2.TraceLeakResponse:
        leaked: list[taskpool_pb2.LeakedItem] = []
        async for request in request_iterator:
            if len(request.items) > MAX_IMPORT_BATCH:
                raise InvalidArgument(
                    f"{len(request.items)} lines in one message; at most {MAX_IMPORT_BATCH}"
                )
            leaked.extend(request.items)
            if len(leaked) > MAX_TRACE_LINES:
                raise InvalidArgument(f"a leaked file is traced {MAX_TRACE_LINES} lines at most")
        suspects: dict[str, taskpool_pb2.LeakSuspect] = {}
        for hit in await self._bank.canary_hits([fingerprint(i.question) for i in leaked]):
            suspect = suspects.setdefault(
                hit["submission_id"],
                taskpool_pb2.LeakSuspect(
                    tenant_id=hit["tenant_id"],
                    submission_id=hit["submission_id"],
                    pool_id=hit["pool_id"],
                    chance=1.0,
                ),
            )
            suspect.canary_hits += 1
            suspect.chance = 0.0  # a canary exists in one download only
        tasks = await self._bank.tasks_by_id([i.item_id for i in leaked if i.item_id])
        observed: dict[str, tuple[int, ...]] = {}
        for item in leaked:
            task = tasks.get(item.item_id)
            canonical = parse_options(task["question"]) if task else None
            if canonical is not None:
                order = observed_order(canonical.texts, item.question)
                if order is not None:
                    observed[item.item_id] = order
        async for variant in self._bank.all_variants():
            orders = dict(variant["orders"])
            checked = [i for i in observed if i in orders]
            if not checked:
                continue
            matched = [i for i in checked if orders[i] == ",".join(map(str, observed[i]))]
            suspect = suspects.setdefault(
                variant["_id"],
                taskpool_pb2.LeakSuspect(
                    tenant_id=variant["tenant_id"],
                    submission_id=variant["_id"],
                    pool_id=variant["pool_id"],
                    chance=1.0,
                ),
            )
            suspect.checked_items = len(checked)
            suspect.matched_items = len(matched)
            if not suspect.canary_hits:
                suspect.chance = chance([len(observed[i]) for i in matched]) if matched else 1.0
        ranked = sorted(
            (s for s in suspects.values() if s.canary_hits or s.matched_items),
            key=lambda s: (-s.canary_hits, -s.matched_items, s.chance, s.submission_id),
        )
        return taskpool_service_pb2.TraceLeakResponse(suspects=ranked, lines=len(leaked))


def _shown(question: str, order: tuple[int, ...] | None) -> str:
    """The question as this download shows it (options in the tenant's order)."""
    if order is None:
        return question
    block = parse_options(question)
    return question if block is None or len(block.texts) != len(order) else relabel(block, order)


def _params_doc(params: RotationParams, datasets: list[str]) -> dict[str, Any]:
    return {
        "seed": params.seed,
        "groups_per_dataset": params.groups_per_dataset,
        "exposure_cap": params.exposure_cap,
        "anchors_per_dataset": params.anchors_per_dataset,
        "datasets": sorted(datasets),
    }
