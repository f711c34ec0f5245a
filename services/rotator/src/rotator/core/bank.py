"""Task-bank rules: validating imported items and freezing a pool (pure, no I/O)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from medbench_runtime.errors import InvalidArgument

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:#/-]{0,127}$")
CHOICE_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Items per stored chunk of a pool: big enough that a 100k pool is ~100 documents.
CHUNK_SIZE = 1000


@dataclass(frozen=True)
class TaskRecord:
    """Prompt side of an item, as stored in the bank."""

    item_id: str
    dataset: str
    track: str
    question: str
    answer_format: str
    group_id: str
    specialties: tuple[str, ...] = ()
    image_paths: tuple[str, ...] = ()
    provenance: str = ""
    licence: str = ""


@dataclass(frozen=True)
class KeyRecord:
    """Sealed side of an item."""

    item_id: str
    reference: tuple[str, ...]


@dataclass(frozen=True)
class DatasetInfo:
    """What the pool needs to know of a dataset (from the registry)."""

    name: str
    track: str
    dimension: str
    answer_format: str
    metric: str
    rule: str


@dataclass(frozen=True)
class PoolItem:
    """One item of a frozen pool, with its ordinal."""

    ordinal: int
    task: TaskRecord
    version: int
    key: KeyRecord
    dataset: DatasetInfo


@dataclass(frozen=True)
class FrozenPool:
    """A pool ready to store."""

    pool_id: str
    track: str
    items: tuple[PoolItem, ...]
    digest: str
    dataset_counts: tuple[tuple[str, int], ...] = field(default_factory=tuple)


def check_id(kind: str, value: str) -> str:
    """Raises InvalidArgument unless value is a well-formed id."""
    if not ID_PATTERN.match(value or ""):
        raise InvalidArgument(
            f"{kind} {value!r} is not valid: use 1-128 characters of letters, digits and ._:#/-"
        )
    return value


def validate_item(task: TaskRecord, key: KeyRecord, dataset: DatasetInfo | None) -> None:
    """Raises InvalidArgument naming the first problem of an imported item."""
    check_id("item_id", task.item_id)
    if dataset is None:
        raise InvalidArgument(
            f"item {task.item_id}: dataset {task.dataset!r} is not in the registry"
        )
    if task.track != dataset.track:
        raise InvalidArgument(
            f"item {task.item_id}: dataset {task.dataset} belongs to track {dataset.track}, "
            f"not {task.track}"
        )
    if not task.question.strip():
        raise InvalidArgument(f"item {task.item_id}: question is empty")
    if task.answer_format != dataset.answer_format:
        raise InvalidArgument(
            f"item {task.item_id}: answer_format {task.answer_format!r} does not match "
            f"dataset {task.dataset} ({dataset.answer_format!r})"
        )
    if key.item_id != task.item_id:
        raise InvalidArgument(f"item {task.item_id}: its key names item {key.item_id!r}")
    if not key.reference:
        raise InvalidArgument(f"item {task.item_id}: reference is empty")
    if task.answer_format.startswith("choice"):
        bad = [r for r in key.reference if r not in CHOICE_LETTERS]
        if bad:
            raise InvalidArgument(f"item {task.item_id}: reference {bad} is not an option letter")
        if task.answer_format == "choice_single" and len(key.reference) != 1:
            raise InvalidArgument(
                f"item {task.item_id}: single-choice item has {len(key.reference)} references"
            )


def content_hash(task: TaskRecord, key: KeyRecord) -> str:
    """Identity of an item's content; a change makes a new version."""
    payload = json.dumps(
        [
            task.dataset,
            task.track,
            task.question,
            task.answer_format,
            task.group_id,
            list(task.image_paths),
            list(key.reference),
        ],
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def freeze_pool(
    pool_id: str,
    track: str,
    entries: Iterable[tuple[TaskRecord, int, KeyRecord, DatasetInfo]],
) -> FrozenPool:
    """Orders items (dataset, item_id), numbers them, and digests (item_id, version) pairs."""
    ordered = sorted(entries, key=lambda e: (e[0].dataset, e[0].item_id))
    if not ordered:
        raise InvalidArgument(f"pool {pool_id}: the bank has no items for track {track}")
    items = tuple(
        PoolItem(ordinal=i, task=t, version=v, key=k, dataset=d)
        for i, (t, v, k, d) in enumerate(ordered)
    )
    digest = hashlib.sha256(
        "\n".join(f"{p.task.item_id}@{p.version}" for p in items).encode()
    ).hexdigest()
    counts: dict[str, int] = {}
    for p in items:
        counts[p.task.dataset] = counts.get(p.task.dataset, 0) + 1
    return FrozenPool(pool_id, track, items, digest, tuple(sorted(counts.items())))


def chunks(items: Sequence[PoolItem], size: int = CHUNK_SIZE) -> list[Sequence[PoolItem]]:
    """Splits a pool into storage chunks."""
    return [items[i : i + size] for i in range(0, len(items), size)]
