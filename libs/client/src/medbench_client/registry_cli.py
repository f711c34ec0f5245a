"""`python -m medbench_client registry ...`: the dataset registry's versions (show, versions) and
adding or revising a dataset (put), against the rotator's TaskPoolService.

A dataset file is one entry of the registry's "datasets" list, in the registry file's own JSON
(`registry show --dataset NAME` prints one, ready to edit).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_client.api import channel, service_stub


def _stub(address: str, key: str | None) -> taskpool_service_pb2_grpc.TaskPoolServiceStub:
    return service_stub(taskpool_service_pb2_grpc.TaskPoolServiceStub, channel(address, key))


def dataset_from_file(path: Path) -> taskpool_pb2.RegistryDataset:
    """The dataset a JSON file holds; ValueError naming the file and what is wrong (bad JSON,
    not an object, a field the registry does not have, a value of the wrong type)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a dataset is a JSON object (one entry of the registry)")
    if "datasets" in data:
        raise ValueError(
            f"{path}: this is a whole registry; put one dataset at a time (one entry of its "
            '"datasets" list)'
        )
    dataset = taskpool_pb2.RegistryDataset()
    try:
        json_format.ParseDict(data, dataset)
    except json_format.ParseError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return dataset


def _plain(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return out


def dataset_json(dataset: taskpool_pb2.RegistryDataset) -> str:
    return json.dumps(_plain(dataset), ensure_ascii=False, indent=2)


def registry_document(registry: taskpool_service_pb2.GetRegistryResponse) -> dict[str, Any]:
    """A version as a registry file (what MEDBENCH_REGISTRY_PATH can seed a new store with)."""

    def counted(message: Any) -> dict[str, Any]:
        # A count of 0 is a value here, not an unset field.
        out = _plain(message)
        out.setdefault("dataset_count", 0)
        return out

    return {
        "benchmark": registry.benchmark,
        "version": registry.edition,
        "tracks": [counted(t) | {"dimension_count": t.dimension_count} for t in registry.tracks],
        "dimensions": [counted(d) for d in registry.dimensions],
        "datasets": [_plain(d) for d in registry.datasets],
        "specialties": [_plain(s) | {"parent": s.parent or None} for s in registry.specialties],
    }


def _when(version: taskpool_pb2.RegistryVersion) -> str:
    when: str = version.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
    return when


def version_line(version: taskpool_pb2.RegistryVersion) -> str:
    mark = "*" if version.current else " "
    note = f"  ({version.note})" if version.note else ""
    return (
        f"{mark} {version.version:>4}  {_when(version)}  {version.created_by:<16}  "
        f"{version.change}{note}"
    )


def summary(registry: taskpool_service_pb2.GetRegistryResponse) -> str:
    v = registry.version
    lines = [
        f"registry version {v.version}{' (current)' if v.current else ''}: "
        f"{registry.benchmark} {registry.edition}, {v.change}, {_when(v)} by {v.created_by}"
    ]
    for track in registry.tracks:
        lines.append(f"{track.code}: {track.dataset_count} datasets")
        for dimension in (d for d in registry.dimensions if d.track == track.code):
            lines.append(f"  {dimension.code} ({dimension.name_zh}): {dimension.dataset_count}")
            for d in (x for x in registry.datasets if x.dimension == dimension.code):
                lines.append(f"    {d.name:22} {d.answer_format:14} {d.metric}")
    return "\n".join(lines)


async def run_show(address: str, key: str | None, version: int, dataset: str, as_json: bool) -> int:
    registry = await _stub(address, key).GetRegistry(
        taskpool_service_pb2.GetRegistryRequest(version=version)
    )
    if dataset:
        found = next((d for d in registry.datasets if d.name == dataset), None)
        if found is None:
            known = ", ".join(d.name for d in registry.datasets)
            print(
                f"registry version {registry.version.version} has no dataset {dataset!r}; "
                f"known: {known}",
                file=sys.stderr,
            )
            return 1
        print(dataset_json(found))
        return 0
    if as_json:
        print(json.dumps(registry_document(registry), ensure_ascii=False, indent=2))
        return 0
    print(summary(registry))
    return 0


async def run_put(address: str, key: str | None, path: Path, revises: int, note: str) -> int:
    dataset = dataset_from_file(path)
    try:
        put = await _stub(address, key).PutDataset(
            taskpool_service_pb2.PutDatasetRequest(revises=revises, dataset=dataset, note=note)
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.ABORTED:
            raise
        print(f"registry put failed: ABORTED: {exc.details()}", file=sys.stderr)
        print(
            f"  the registry changed since version {revises}: `registry show --dataset "
            f"{dataset.name}` shows the dataset as it is now; put your file again with the "
            "version it names",
            file=sys.stderr,
        )
        return 3
    v = put.version
    if put.unchanged:
        print(f"unchanged: registry version {v.version} already holds {dataset.name} as given")
    else:
        print(f"registry version {v.version}: {v.change} (current; new pools use it)")
    return 0


async def run_versions(address: str, key: str | None, limit: int) -> int:
    stub = _stub(address, key)
    before, shown = 0, 0
    while shown < limit:
        page = await stub.ListRegistryVersions(
            taskpool_service_pb2.ListRegistryVersionsRequest(
                before=before, limit=min(200, limit - shown)
            )
        )
        if not shown:
            print(f"current registry version: {page.current}")
        for version in page.versions:
            print(version_line(version))
        shown += len(page.versions)
        if not page.versions or page.versions[-1].version <= 1:
            break
        before = page.versions[-1].version
    return 0
