"""Protobuf <-> core: the only module where the wire types and the rotator's own meet."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from medbench.common.v1 import common_pb2
from medbench.taskpool.v1 import taskpool_events_pb2, taskpool_pb2, taskpool_service_pb2
from medbench_runtime.errors import InvalidArgument
from rotator.core.bank import ImportItem, ImportOutcome, KeyRecord
from rotator.core.download import ServedItem
from rotator.core.leaktrace import LeakedLine, LeakSignal, Variant
from rotator.core.pools import DEFAULT_BOARD, PoolRecord
from rotator.core.versions import VersionInfo
from rotator.usecases.bank import DatasetList
from rotator.usecases.leaks import Trace
from rotator.usecases.pool import PromptBatch
from rotator.usecases.registry import Put, Shown
from rotator.usecases.rotation import RotationRequest

TRACKS = {
    common_pb2.TRACK_LLM: "llm",
    common_pb2.TRACK_MULTIMODAL: "multimodal",
    common_pb2.TRACK_AGENT: "agent",
}
TRACK_ENUMS = {v: k for k, v in TRACKS.items()}
BOARDS = {taskpool_pb2.BOARD_API: "api", taskpool_pb2.BOARD_UPLOAD: "upload"}
BOARD_ENUMS = {v: k for k, v in BOARDS.items()}


# -- enums ------------------------------------------------------------------------------------


def track_name(track: common_pb2.Track) -> str:
    """The registry name of a proto Track; INVALID_ARGUMENT for UNSPECIFIED."""
    if track not in TRACKS:
        raise InvalidArgument("track must be one of TRACK_LLM, TRACK_MULTIMODAL, TRACK_AGENT")
    return TRACKS[track]


def track_filter(track: common_pb2.Track) -> str | None:
    """A Track that filters a listing: None (all tracks) for UNSPECIFIED."""
    return None if track == common_pb2.TRACK_UNSPECIFIED else track_name(track)


def board_name(board: taskpool_pb2.Board, default: str | None = None) -> str:
    """The name of a proto Board; UNSPECIFIED means default, or INVALID_ARGUMENT without one."""
    if board in BOARDS:
        return BOARDS[board]
    if default is not None and board == taskpool_pb2.BOARD_UNSPECIFIED:
        return default
    raise InvalidArgument("board must be BOARD_API or BOARD_UPLOAD")


def board_or_upload(board: taskpool_pb2.Board) -> str:
    return board_name(board, default=DEFAULT_BOARD)


# -- pools ------------------------------------------------------------------------------------


def pool_to_proto(pool: PoolRecord, current: bool = False) -> taskpool_pb2.Pool:
    published = Timestamp()
    published.FromDatetime(pool.published_at)
    out = taskpool_pb2.Pool(
        pool_id=pool.pool_id,
        track=TRACK_ENUMS[pool.track],
        item_count=pool.item_count,
        datasets=[
            taskpool_pb2.DatasetCount(dataset=dataset, items=items)
            for dataset, items in pool.datasets
        ],
        published_at=published,
        digest=pool.digest,
        registry_version=pool.registry_version,
        board=BOARD_ENUMS.get(pool.board, taskpool_pb2.BOARD_UNSPECIFIED),
        cycle=pool.cycle,
        seed=pool.seed,
        anchor_groups=pool.anchor_groups,
        group_count=pool.group_count,
        current=current,
        method=pool.method,
    )
    if pool.disclosed_at is not None:
        out.disclosed_at.FromDatetime(pool.disclosed_at)
    return out


def pool_rotated(pool: PoolRecord) -> taskpool_events_pb2.PoolRotated:
    """The event announcing that a pool became its board's current one (one id per pool)."""
    return taskpool_events_pb2.PoolRotated(
        event_id=f"{pool.pool_id}:rotated", pool=pool_to_proto(pool, current=True)
    )


def rotation_request(request: taskpool_service_pb2.RotatePoolRequest) -> RotationRequest:
    return RotationRequest(
        track=track_name(request.track),
        board=board_name(request.board),
        cycle=request.cycle,
        seed=request.seed,
        groups_per_dataset=request.groups_per_dataset,
        exposure_cap=request.exposure_cap,
        anchors_per_dataset=request.anchors_per_dataset,
        datasets=tuple(request.datasets),
    )


def assignment_to_proto(
    submission_id: str, pool: PoolRecord, variant: Variant
) -> taskpool_pb2.Assignment:
    return taskpool_pb2.Assignment(
        submission_id=submission_id,
        pool_id=pool.pool_id,
        item_count=pool.item_count,
        datasets=[taskpool_pb2.DatasetCount(dataset=d, items=n) for d, n in pool.datasets],
        # Extra items of a download made before canaries were pool items (0 for every new one:
        # a canary is one of the pool's items, shown altered).
        canary_items=len(variant.legacy),
    )


def served_item_to_proto(item: ServedItem) -> taskpool_pb2.AssignedItem:
    return taskpool_pb2.AssignedItem(
        item_id=item.item_id,
        ordinal=item.ordinal,
        dataset=item.dataset,
        answer_format=item.answer_format,
        question=item.question,
        image_paths=item.image_paths,
        image_ids=item.image_ids,
        messages=[taskpool_pb2.ChatMessage(role=r, content=c) for r, c in item.messages],
        canary=item.canary,
        prompt_hash=item.prompt_hash,
    )


def prompts_response(batch: PromptBatch) -> taskpool_service_pb2.GetPromptsResponse:
    return taskpool_service_pb2.GetPromptsResponse(
        items=[served_item_to_proto(i) for i in batch.items],
        item_count=batch.pool.item_count,
        pool_id=batch.pool.pool_id,
    )


# -- the bank ---------------------------------------------------------------------------------


def import_item_from_proto(item: taskpool_pb2.ImportItem) -> ImportItem:
    t = item.task
    key = None
    if item.HasField("key"):
        key = KeyRecord(
            item.key.item_id,
            tuple(item.key.reference),
            tuple(item.key.key_points),
            item.key.rubric_id,
        )
    return ImportItem(
        item_id=t.item_id,
        dataset=t.dataset,
        source=t.source,
        answer_format=t.answer_format,
        # Unspecified (or unknown): the dataset's track.
        track=TRACKS.get(t.track),
        question=t.question,
        group_id=t.group_id,
        specialties=tuple(t.specialties),
        image_paths=tuple(t.image_paths),
        provenance=t.provenance,
        licence=t.licence,
        messages=tuple((m.role, m.content) for m in t.messages),
        key=key,
        # A path sent twice: the last copy counts.
        images={b.path: b.content for b in item.images},
        ref=item.ref,
    )


async def import_batches(
    requests: AsyncIterable[taskpool_service_pb2.ImportTasksRequest],
) -> AsyncIterator[list[ImportItem]]:
    async for request in requests:
        yield [import_item_from_proto(item) for item in request.items]


def import_response(outcome: ImportOutcome) -> taskpool_service_pb2.ImportTasksResponse:
    return taskpool_service_pb2.ImportTasksResponse(
        imported=outcome.imported,
        unchanged=outcome.unchanged,
        new_versions=outcome.new_versions,
        images_stored=outcome.images_stored,
        rejected=[
            taskpool_pb2.ImportRejection(
                ref=r.ref, item_id=r.item_id, field=r.field, reason=r.reason
            )
            for r in outcome.rejected
        ],
    )


def datasets_response(listed: DatasetList) -> taskpool_service_pb2.ListDatasetsResponse:
    return taskpool_service_pb2.ListDatasetsResponse(
        registry_version=listed.registry_version,
        datasets=[
            taskpool_pb2.DatasetInfo(
                dataset=d.name,
                track=TRACK_ENUMS[d.track],
                dimension=d.dimension,
                answer_formats=d.answer_formats,
                metric=d.metric,
                bank_items=d.bank_items,
                keyed_items=d.keyed_items,
                dimension_name=d.dimension_name,
                dimension_name_zh=d.dimension_name_zh,
            )
            for d in listed.datasets
        ],
    )


# -- the registry -----------------------------------------------------------------------------


def dataset_entry(dataset: taskpool_pb2.RegistryDataset) -> dict[str, Any]:
    """A RegistryDataset as a registry file's dataset entry (unset fields left out)."""
    entry: dict[str, Any] = json_format.MessageToDict(dataset, preserving_proto_field_name=True)
    return entry


def _timestamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def version_to_proto(info: VersionInfo, current: int) -> taskpool_pb2.RegistryVersion:
    return taskpool_pb2.RegistryVersion(
        version=info.number,
        created_at=_timestamp(info.created_at),
        created_by=info.created_by,
        change=info.change,
        dataset=info.dataset,
        note=info.note,
        digest=info.digest,
        current=info.number == current,
    )


def put_response(put: Put) -> taskpool_service_pb2.PutDatasetResponse:
    return taskpool_service_pb2.PutDatasetResponse(
        version=version_to_proto(put.version, put.current),
        added=put.added,
        unchanged=put.unchanged,
    )


def _entries(raw: Any, message: type[Message]) -> list[Any]:
    """Registry entries (dicts) as messages; fields the message lacks are skipped."""
    if not isinstance(raw, Sequence):
        return []
    return [
        json_format.ParseDict(entry, message(), ignore_unknown_fields=True)
        for entry in raw
        if isinstance(entry, Mapping)
    ]


def registry_response(shown: Shown) -> taskpool_service_pb2.GetRegistryResponse:
    data = shown.data
    return taskpool_service_pb2.GetRegistryResponse(
        version=version_to_proto(shown.info, shown.info.number if shown.current else 0),
        tracks=_entries(data.get("tracks"), taskpool_pb2.RegistryTrack),
        dimensions=_entries(data.get("dimensions"), taskpool_pb2.RegistryDimension),
        datasets=_entries(data.get("datasets"), taskpool_pb2.RegistryDataset),
        specialties=_entries(data.get("specialties"), taskpool_pb2.RegistrySpecialty),
        benchmark=str(data.get("benchmark", "")),
        edition=str(data.get("version", "")),
    )


def versions_response(
    infos: Sequence[VersionInfo], current: int
) -> taskpool_service_pb2.ListRegistryVersionsResponse:
    return taskpool_service_pb2.ListRegistryVersionsResponse(
        versions=[version_to_proto(info, current) for info in infos], current=current
    )


# -- leak tracing -----------------------------------------------------------------------------


async def leaked_batches(
    requests: AsyncIterable[taskpool_service_pb2.TraceLeakRequest],
) -> AsyncIterator[list[LeakedLine]]:
    async for request in requests:
        yield [LeakedLine(i.item_id, i.question, i.image, i.image_sha256) for i in request.items]


def trace_response(trace: Trace) -> taskpool_service_pb2.TraceLeakResponse:
    return taskpool_service_pb2.TraceLeakResponse(
        suspects=[
            taskpool_pb2.LeakSuspect(
                tenant_id=s.tenant_id,
                submission_id=s.submission_id,
                pool_id=s.pool_id,
                matched_items=s.matched_items,
                checked_items=s.checked_items,
                canary_hits=s.canary_hits,
                chance=s.chance,
                image_hits=s.image_hits,
            )
            for s in trace.suspects
        ],
        lines=trace.lines,
    )


def signals_response(signals: list[LeakSignal]) -> taskpool_service_pb2.ListLeakSignalsResponse:
    out = taskpool_service_pb2.ListLeakSignalsResponse()
    for s in signals:
        signal = out.signals.add(
            submission_id=s.submission_id,
            tenant_id=s.tenant_id,
            pool_id=s.pool_id,
            item_id=s.item_id,
            dataset=s.dataset,
            kind=s.kind,
            matched=s.matched,
        )
        signal.recorded_at.FromDatetime(s.recorded_at)
    return out
