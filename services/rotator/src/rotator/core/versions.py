"""Registry versions (pure): the registry document as immutable numbered versions, and the rule
that makes version n+1 from version n with one dataset added or replaced.

Version 1 is the bundled registry file the store was seeded with. A change names the version it
revises; only the current version can be revised, so versions form one line, never a tree.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from medbench_runtime.errors import InvalidArgument
from rotator.core.registry import Dataset, Registry, RegistryError, parse_dataset, parse_registry

SEED_AUTHOR = "seed"
"""created_by of version 1."""
MAX_NOTE = 1000
"""Characters of a change's note."""

# A dataset entry's fields, in the order a stored entry lists them (the registry file's).
DATASET_FIELDS = (
    "name",
    "track",
    "dimension",
    "description",
    "answer_format",
    "metric",
    "dataset_rule",
    "permutations",
    "pool_lines",
    "source_aliases",
    "parts",
    "note",
)
PART_FIELDS = ("name", "answer_format", "metric", "permutations", "pool_lines", "source_aliases")


@dataclass(frozen=True)
class VersionInfo:
    """What a version is, without its content."""

    number: int
    created_at: datetime
    created_by: str
    """The maintainer's API key id; SEED_AUTHOR for version 1."""
    action: str
    """"seed", "add" or "revise"."""
    dataset: str = ""
    """The dataset added or revised ("" for the seed)."""
    note: str = ""
    digest: str = ""
    """SHA-256 of the document's canonical JSON."""
    source: str = ""
    """The seed's file name (version 1 only)."""
    legacy_label: str = ""
    """Version 1 only: the label pools built from the same file recorded before the registry
    was versioned ("v4+<sha256 prefix>"), so that such pools find their version."""

    @property
    def change(self) -> str:
        if self.action == "seed":
            return f"seeded from {self.source}"
        return f"{'added' if self.action == 'add' else 'revised'} dataset {self.dataset}"

    @property
    def label(self) -> str:
        """How pools and listings name the version (Pool.registry_version)."""
        return str(self.number)


@dataclass(frozen=True)
class StoredVersion:
    """A version with its registry document (the registry file's JSON shape)."""

    info: VersionInfo
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Revision:
    """The document of the next version, and what changed."""

    data: dict[str, Any]
    dataset: Dataset
    added: bool


class DatasetRejected(InvalidArgument):
    """A dataset the registry cannot take; field names the offending field ("metric",
    "parts[1].answer_format"); the message starts with "dataset.<field>: "."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"dataset.{field}: {reason}" if field else f"dataset: {reason}")
        self.field = field


def digest_of(data: Mapping[str, Any]) -> str:
    """SHA-256 of a document's canonical JSON (key order and spacing do not matter)."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def legacy_label(raw: bytes, data: Mapping[str, Any]) -> str:
    """The label a registry file's pools carried before versions were stored (what the
    rotator named the file it loaded at start-up)."""
    return f"{data.get('version', '?')}+{hashlib.sha256(raw).hexdigest()[:12]}"


def seed_version(raw: bytes, source: str, now: datetime) -> StoredVersion:
    """Version 1 from a registry file's bytes.

    Raises:
        RegistryError: the file is not JSON or not a valid registry.
    """
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RegistryError(f"{source}: not valid JSON: {err}") from err
    parse_registry(data)
    info = VersionInfo(
        number=1,
        created_at=now,
        created_by=SEED_AUTHOR,
        action="seed",
        digest=digest_of(data),
        source=source,
        legacy_label=legacy_label(raw, data),
    )
    return StoredVersion(info, data)


def canonical_dataset(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A dataset entry in its stored form: fields in registry order, empty ones ("", [], None)
    left out, parts likewise. DatasetRejected for a field the registry does not know."""
    if not isinstance(raw, Mapping):
        raise DatasetRejected("", "a dataset must be a JSON object")
    _known(raw, DATASET_FIELDS, "")
    out = {k: raw[k] for k in DATASET_FIELDS if k in raw and not _empty(raw[k])}
    if "parts" in out:
        if not isinstance(out["parts"], list):
            raise DatasetRejected("parts", "parts must be a list")
        parts = []
        for n, part in enumerate(out["parts"]):
            if not isinstance(part, Mapping):
                raise DatasetRejected(f"parts[{n}]", "a part must be a JSON object")
            _known(part, PART_FIELDS, f"parts[{n}].")
            parts.append({k: part[k] for k in PART_FIELDS if k in part and not _empty(part[k])})
        out["parts"] = parts
    return out


def _known(raw: Mapping[str, Any], fields: tuple[str, ...], prefix: str) -> None:
    for key in raw:
        if key not in fields:
            raise DatasetRejected(f"{prefix}{key}", f"unknown field; known: {list(fields)}")


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == []


def entry_of(data: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """The dataset entry of that name in a document, or None."""
    for entry in data.get("datasets", ()):
        if isinstance(entry, Mapping) and entry.get("name") == name:
            return entry
    return None


def unchanged(data: Mapping[str, Any], raw: Mapping[str, Any]) -> bool:
    """Whether the document already holds this dataset exactly (empty fields aside)."""
    current = entry_of(data, str(raw.get("name", "")))
    return current is not None and canonical_dataset(current) == canonical_dataset(raw)


def revise(data: Mapping[str, Any], raw: Mapping[str, Any]) -> Revision:
    """The document with one dataset added (a new name) or replaced (an existing name).

    A replaced dataset keeps its place in registry order unless its dimension changes (then it
    moves, as a new one does, after the last dataset of its dimension); the tracks' and
    dimensions' dataset counts follow. A dataset never changes track: its bank items and pools
    belong to the old one.

    Raises:
        DatasetRejected: naming the field; anything parse_dataset or parse_registry refuses,
            an unknown track or dimension, a track change, a pool source tag another dataset
            claims.
    """
    entry = canonical_dataset(raw)
    try:
        dataset = parse_dataset(entry)
    except RegistryError as exc:
        raise DatasetRejected(exc.field, str(exc)) from exc
    registry = parse_registry(data)
    _check_against(registry, dataset)
    try:
        existing = registry.dataset(dataset.name)
    except KeyError:
        existing = None
    new = copy.deepcopy(dict(data))
    datasets: list[dict[str, Any]] = new["datasets"]
    at = next((n for n, d in enumerate(datasets) if d.get("name") == dataset.name), None)
    if at is not None and existing is not None and existing.dimension == dataset.dimension:
        datasets[at] = entry
    else:
        if at is not None:
            del datasets[at]
        datasets.insert(_place(datasets, dataset), entry)
    for track in new["tracks"]:
        track["dataset_count"] = sum(1 for d in datasets if d.get("track") == track["code"])
    for dimension in new["dimensions"]:
        dimension["dataset_count"] = sum(
            1 for d in datasets if d.get("dimension") == dimension["code"]
        )
    try:
        parse_registry(new)
    except RegistryError as exc:
        raise DatasetRejected(exc.field, str(exc)) from exc
    return Revision(new, dataset, added=existing is None)


def _check_against(registry: Registry, dataset: Dataset) -> None:
    """The checks parse_registry would make too, with the field and the known values named."""
    tracks = [t.code for t in registry.tracks]
    if dataset.track not in tracks:
        raise DatasetRejected("track", f"unknown track {dataset.track!r}; known: {tracks}")
    try:
        existing = registry.dataset(dataset.name)
    except KeyError:
        existing = None
    if existing is not None and existing.track != dataset.track:
        raise DatasetRejected(
            "track",
            f"dataset {dataset.name} is a {existing.track} dataset; a dataset cannot move to "
            f"another track (its bank items and pools are {existing.track}'s): add a new dataset",
        )
    dimensions = [d.code for d in registry.dimensions_in(dataset.track)]
    if dataset.dimension not in dimensions:
        raise DatasetRejected(
            "dimension",
            f"unknown dimension {dataset.dimension!r} of track {dataset.track}; known: "
            f"{dimensions}",
        )
    claimed = {
        source: other.name
        for other in registry.datasets
        if other.name != dataset.name
        for part in other.parts
        for source in part.sources
    }
    split = len(dataset.parts) > 1
    for n, part in enumerate(dataset.parts):
        prefix = f"parts[{n}]." if split else ""
        for k, source in enumerate(part.sources):
            if source in claimed:
                field = f"{prefix}name" if k == 0 else f"{prefix}source_aliases"
                raise DatasetRejected(
                    field,
                    f"pool source tag {source!r} already belongs to dataset {claimed[source]}",
                )


def _place(datasets: list[dict[str, Any]], dataset: Dataset) -> int:
    """Where a new entry goes: after the last dataset of its dimension, else of its track,
    else at the end."""
    for key, value in (("dimension", dataset.dimension), ("track", dataset.track)):
        last = [n for n, d in enumerate(datasets) if d.get(key) == value]
        if last:
            return last[-1] + 1
    return len(datasets)


def next_version(
    current: StoredVersion, revision: Revision, author: str, note: str, now: datetime
) -> StoredVersion:
    """The version after current, holding revision's document."""
    if len(note) > MAX_NOTE:
        raise InvalidArgument(f"note: at most {MAX_NOTE} characters")
    info = VersionInfo(
        number=current.info.number + 1,
        created_at=now,
        created_by=author,
        action="add" if revision.added else "revise",
        dataset=revision.dataset.name,
        note=note,
        digest=digest_of(revision.data),
    )
    return StoredVersion(info, revision.data)


def is_retry(
    made: StoredVersion, revises: int, raw: Mapping[str, Any], author: str, note: str
) -> bool:
    """Whether made is what this very request (revising `revises`) made before: a retry of a
    request whose answer was lost gets the version back instead of ABORTED."""
    entry = entry_of(made.data, str(raw.get("name", "")))
    return (
        made.info.number == revises + 1
        and made.info.action in ("add", "revise")
        and made.info.dataset == raw.get("name")
        and made.info.created_by == author
        and made.info.note == note
        and entry is not None
        and canonical_dataset(entry) == canonical_dataset(raw)
    )
