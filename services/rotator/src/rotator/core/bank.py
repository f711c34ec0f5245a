"""Task-bank rules: validating imported items and freezing a pool (pure, no I/O)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from medbench_runtime.errors import InvalidArgument

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:#/-]{0,127}$")
CHOICE_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Items per stored chunk of a pool: big enough that a 100k pool is ~100 documents.
CHUNK_SIZE = 1000
# What one item may carry (UTF-8 bytes): its prompt (question and messages) and its key
# (references, key points, rubric id). Checked at import, so that every later hop holds any
# item: pool chunks and prompt stream messages are cut at CHUNK_BYTES, well under MongoDB's
# 16 MiB documents and gRPC's 16 MiB messages even with one more item of the largest size.
MAX_PROMPT_BYTES = 256 * 1024
MAX_KEY_BYTES = 64 * 1024
CHUNK_BYTES = 4 * 1024 * 1024
# Items (or leaked lines) in one message of an import (or a trace) stream.
MAX_IMPORT_BATCH = 5000


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
    source: str = ""
    messages: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class KeyRecord:
    """Sealed side of an item."""

    item_id: str
    reference: tuple[str, ...]
    key_points: tuple[str, ...] = ()
    rubric_id: str = ""


class ItemRejected(InvalidArgument):
    """One imported item is refused; the others go on."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


@dataclass(frozen=True)
class ImportItem:
    """One item as an import sends it, before the registry and the rules have seen it."""

    item_id: str
    dataset: str = ""
    source: str = ""
    answer_format: str = ""
    track: str | None = None
    """None: the dataset's track."""
    question: str = ""
    """Empty: the content of the last message."""
    group_id: str = ""
    """Empty: the item's own id."""
    specialties: tuple[str, ...] = ()
    image_paths: tuple[str, ...] = ()
    provenance: str = ""
    licence: str = ""
    messages: tuple[tuple[str, str], ...] = ()
    key: KeyRecord | None = None
    images: Mapping[str, bytes] = field(default_factory=dict)
    """path -> content of the images sent with the item."""
    ref: str = ""
    """The sender's reference, echoed in a rejection."""


@dataclass(frozen=True)
class Incoming:
    """One validated item to store."""

    task: TaskRecord
    key: KeyRecord | None
    hash: str
    image_ids: tuple[str, ...] = ()
    primary_specialty: str = ""


@dataclass(frozen=True)
class ImportCounts:
    """What storing an import batch did."""

    imported: int
    unchanged: int
    new_versions: int


@dataclass(frozen=True)
class Rejection:
    """An item an import refused, and why."""

    ref: str
    item_id: str
    field: str
    reason: str


@dataclass(frozen=True)
class ImportOutcome:
    """What an import did, over all its batches."""

    imported: int = 0
    unchanged: int = 0
    new_versions: int = 0
    images_stored: int = 0
    rejected: tuple[Rejection, ...] = ()


BankEntry = tuple[TaskRecord, int, KeyRecord, tuple[str, ...]]
"""A keyed task as a pool takes it: the task, its version, its key and its image ids."""


CHOICE_REFERENCE = re.compile(r"[A-J]")
ROLES = frozenset({"system", "user", "assistant"})


def normalise_key(key: KeyRecord, answer_format: str) -> KeyRecord:
    """Choice keys become sorted option letters ("<A, C>" and "CA" both give ("A", "C"))."""
    if not answer_format.startswith("choice"):
        return key
    letters = sorted(set(CHOICE_REFERENCE.findall("".join(key.reference))))
    return KeyRecord(key.item_id, tuple(letters), key.key_points, key.rubric_id)


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
    if not ID_PATTERN.fullmatch(value or ""):
        raise InvalidArgument(
            f"{kind} {value!r} is not valid: use 1-128 characters of letters, digits and ._:#/-"
        )
    return value


def validate_item(task: TaskRecord, key: KeyRecord | None, dataset: DatasetInfo | None) -> None:
    """Raises ItemRejected naming the field and the first problem of an imported item."""
    try:
        check_id("item_id", task.item_id)
    except InvalidArgument as exc:
        raise ItemRejected("task.item_id", str(exc)) from exc
    _validate(task, key, dataset)
    if (size := prompt_bytes(task)) > MAX_PROMPT_BYTES:
        raise ItemRejected(
            "task.question",
            f"item {task.item_id}: the prompt (question and messages) is {size} bytes; at most "
            f"{MAX_PROMPT_BYTES}",
        )
    if key is not None and (size := key_bytes(key)) > MAX_KEY_BYTES:
        raise ItemRejected(
            "key.reference",
            f"item {task.item_id}: the key (references and key points) is {size} bytes; at most "
            f"{MAX_KEY_BYTES}",
        )
    for role, content in task.messages:
        if role not in ROLES or not content.strip():
            raise ItemRejected(
                "task.messages",
                f"item {task.item_id}: a message needs a role in "
                f"{sorted(ROLES)} and non-empty content",
            )


def _validate(task: TaskRecord, key: KeyRecord | None, dataset: DatasetInfo | None) -> None:
    if dataset is None:
        raise ItemRejected(
            "task.dataset", f"item {task.item_id}: dataset {task.dataset!r} is not in the registry"
        )
    if task.track != dataset.track:
        raise ItemRejected(
            "task.track",
            f"item {task.item_id}: dataset {task.dataset} belongs to track {dataset.track}, "
            f"not {task.track}",
        )
    if not task.question.strip():
        raise ItemRejected("task.question", f"item {task.item_id}: question is empty")
    if task.answer_format != dataset.answer_format:
        raise ItemRejected(
            "task.answer_format",
            f"item {task.item_id}: answer_format {task.answer_format!r} does not match "
            f"dataset {task.dataset} ({dataset.answer_format!r})",
        )
    if key is None:
        return
    if key.item_id != task.item_id:
        raise ItemRejected(
            "key.item_id", f"item {task.item_id}: its key names item {key.item_id!r}"
        )
    if not key.reference and not key.key_points and not key.rubric_id:
        raise ItemRejected("key.reference", f"item {task.item_id}: the key is empty")
    if task.answer_format.startswith("choice"):
        if not key.reference:
            raise ItemRejected("key.reference", f"item {task.item_id}: reference is empty")
        bad = [r for r in key.reference if r not in CHOICE_LETTERS]
        if bad:
            raise ItemRejected(
                "key.reference", f"item {task.item_id}: reference {bad} is not an option letter"
            )
        if task.answer_format == "choice_single" and len(key.reference) != 1:
            raise ItemRejected(
                "key.reference",
                f"item {task.item_id}: single-choice item has {len(key.reference)} references",
            )


def content_hash(task: TaskRecord, key: KeyRecord | None, images: Sequence[str] = ()) -> str:
    """Identity of an item's content (prompt, images, key); a change makes a new version."""
    payload = json.dumps(
        [
            task.dataset,
            task.track,
            task.question,
            task.answer_format,
            task.group_id,
            list(task.image_paths),
            [list(m) for m in task.messages],
            list(images),
            None if key is None else [list(key.reference), list(key.key_points), key.rubric_id],
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


def prompt_bytes(task: TaskRecord) -> int:
    """UTF-8 bytes of an item's prompt: its question and message contents."""
    return len(task.question.encode()) + sum(len(c.encode()) for _, c in task.messages)


def key_bytes(key: KeyRecord) -> int:
    """UTF-8 bytes of an item's key."""
    return sum(len(t.encode()) for t in (*key.reference, *key.key_points, key.rubric_id))


def chunks(
    items: Sequence[PoolItem], size: int = CHUNK_SIZE, max_bytes: int = CHUNK_BYTES
) -> list[Sequence[PoolItem]]:
    """Splits a pool into storage chunks of at most size items and about max_bytes of prompt
    or key text (deterministic: the same pool gives the same chunks)."""
    out: list[Sequence[PoolItem]] = []
    start, prompts, keys = 0, 0, 0
    for i, item in enumerate(items):
        p, k = prompt_bytes(item.task), key_bytes(item.key)
        if i > start and (i - start >= size or prompts + p > max_bytes or keys + k > max_bytes):
            out.append(items[start:i])
            start, prompts, keys = i, 0, 0
        prompts += p
        keys += k
    if start < len(items):
        out.append(items[start:])
    return out
