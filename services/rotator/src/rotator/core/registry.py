"""The benchmark's tracks, dimensions, datasets and specialties, validated from registry data."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ANSWER_FORMATS = frozenset(
    {
        "choice_single",
        "choice_multi",
        "departments",
        "json_fields",
        "json_object",
        "free_text",
        "boxes",
        "label",
        "label_set",
        "mixed",
    }
)
""""mixed" is reserved for datasets split into parts with different formats."""

METRIC_COMPONENTS = frozenset(
    {
        "choice_single",
        "choice_multi",
        "department_set_accuracy",
        "field_accuracy",
        "label_accuracy",
        "label_set_accuracy",
        "micro_f1",
        "key_point_recall",
        "judge",
        "box_iou",
        "edit_similarity",
        "rouge_l",
        "bleu",
    }
)
"""The components the metric scorer implements (its metric library), plus "judge" (the judge
scorer); a test holds the two lists equal."""

METRIC_FORMATS: dict[str, frozenset[str]] = {
    "choice_single": frozenset({"choice_single"}),
    "choice_multi": frozenset({"choice_multi"}),
    "box_iou": frozenset({"boxes"}),
    "department_set_accuracy": frozenset({"departments"}),
    "label_set_accuracy": frozenset({"label_set"}),
}
"""Components that only read answers (and keys) of some formats; the others take any format.
A choice format's key is option letters, so its metric must hold the matching choice
component."""

DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A dataset's (or part's) name: it becomes a pool file tag and a leaderboard column."""

DATASET_RULES = frozenset({"mean", "all_permutations"})

# Pool files tag items "MedExam_V4", "MedTreat_v4", "MedRxCheck_V4_SCQ".
_VERSION_TAG = re.compile(r"_[Vv]4(?=_|$)")

PRIMARY_SPECIALTY_COUNT = 24
SECONDARY_SPECIALTY_COUNT = 91
"""MedBench v4 covers 24 primary and 91 secondary specialties (the list itself is ours)."""

# "IM" is a primary specialty, "IM.CARD" a secondary one under it.
_SPECIALTY_CODE = re.compile(r"[A-Z]+(?:\.[A-Z]+)?")

_T = TypeVar("_T")


class RegistryError(ValueError):
    """The registry data is malformed or inconsistent.

    field names the offending field of a dataset entry, relative to it ("metric",
    "parts[1].answer_format"), when the problem is one dataset's; "" otherwise.
    """

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class UnknownEntry(RegistryError, KeyError):
    """A lookup named a track, dimension, dataset or pool source the registry does not hold.

    Also a KeyError, so that callers treating the registry as a mapping can catch it as one.
    """

    # KeyError would render the message with quotes around it.
    __str__ = RegistryError.__str__


@dataclass(frozen=True)
class Track:
    code: str
    name: str
    name_zh: str
    dataset_count: int
    dimension_count: int
    note: str = ""


@dataclass(frozen=True)
class Dimension:
    code: str
    track: str
    name: str
    name_zh: str
    dataset_count: int
    note: str = ""


@dataclass(frozen=True)
class DatasetPart:
    """A separately shipped portion of a dataset (one pool file); most datasets have one."""

    name: str
    answer_format: str
    metric: str
    permutations: int
    """Option-order permutations shipped per question (1 = not shuffled)."""
    pool_lines: int
    sources: tuple[str, ...]
    """Pool `other.source` tags, without the _V4 suffix, that belong to this part."""

    @property
    def metric_components(self) -> tuple[str, ...]:
        return tuple(self.metric.split("+"))


@dataclass(frozen=True)
class Dataset:
    name: str
    track: str
    dimension: str
    description: str
    answer_format: str
    metric: str
    """"+"-joined metric components; for a split dataset, the union over its parts."""
    dataset_rule: str
    permutations: int
    pool_lines: int
    parts: tuple[DatasetPart, ...]
    note: str = ""

    @property
    def metric_components(self) -> tuple[str, ...]:
        return tuple(self.metric.split("+"))

    @property
    def answer_formats(self) -> frozenset[str]:
        """The formats items of this dataset can have (one per part)."""
        return frozenset(part.answer_format for part in self.parts)

    def part_for_format(self, answer_format: str) -> DatasetPart:
        """The part whose items have answer_format.

        Raises:
            UnknownEntry: no part has that format.
        """
        for part in self.parts:
            if part.answer_format == answer_format:
                return part
        raise UnknownEntry(
            f"dataset {self.name!r} has no part with answer format {answer_format!r}"
        )


@dataclass(frozen=True)
class Specialty:
    """A clinical specialty of the benchmark's taxonomy: primary, or secondary under a primary."""

    code: str
    """Stable ASCII code: "IM" for a primary; "IM.CARD" (parent, dot, suffix) for a secondary."""
    name: str
    name_zh: str
    parent: str | None
    """The primary's code for a secondary specialty; None for a primary."""

    @property
    def is_primary(self) -> bool:
        return self.parent is None


@dataclass(frozen=True)
class Registry:
    tracks: tuple[Track, ...]
    dimensions: tuple[Dimension, ...]
    datasets: tuple[Dataset, ...]
    specialties: tuple[Specialty, ...]

    def track(self, code: str) -> Track:
        return _lookup(self.tracks, code, "track", lambda t: t.code)

    def dimension(self, code: str) -> Dimension:
        return _lookup(self.dimensions, code, "dimension", lambda d: d.code)

    def dataset(self, name: str) -> Dataset:
        return _lookup(self.datasets, name, "dataset", lambda d: d.name)

    def specialty(self, code: str) -> Specialty:
        return _lookup(self.specialties, code, "specialty", lambda s: s.code)

    def primary_specialty(self, code: str) -> str:
        """The primary specialty a code belongs to: a secondary's parent, a primary itself.

        Raises:
            UnknownEntry: no specialty has that code.
        """
        specialty = self.specialty(code)
        return specialty.code if specialty.parent is None else specialty.parent

    def dimensions_in(self, track: str) -> tuple[Dimension, ...]:
        return tuple(d for d in self.dimensions if d.track == track)

    def datasets_in(self, track: str) -> tuple[Dataset, ...]:
        return tuple(d for d in self.datasets if d.track == track)

    def rules(self) -> dict[str, str]:
        """Dataset name -> dataset rule, as the aggregator takes it."""
        return {d.name: d.dataset_rule for d in self.datasets}

    def dataset_for_source(self, source: str) -> tuple[Dataset, DatasetPart]:
        """Resolves a pool file's `other.source` tag (e.g. "MedRxCheck_V4_SCQ").

        Raises:
            UnknownEntry: no dataset part claims the tag.
        """
        tag = normalise_source(source)
        for dataset in self.datasets:
            for part in dataset.parts:
                if tag in part.sources:
                    return dataset, part
        raise UnknownEntry(f"no dataset for pool source {source!r} (normalised {tag!r})")


def normalise_source(source: str) -> str:
    """Drops the pool's version tag: "MedRxCheck_V4_SCQ" -> "MedRxCheck_SCQ"."""
    return _VERSION_TAG.sub("", source)


def _lookup(values: tuple[_T, ...], key: str, kind: str, key_of: Callable[[_T], str]) -> _T:
    for value in values:
        if key_of(value) == key:
            return value
    raise UnknownEntry(f"unknown {kind} {key!r}")


def _field(raw: Mapping[str, Any], name: str, kind: type, where: str, prefix: str = "") -> Any:
    if name not in raw:
        raise RegistryError(f"{where}: missing field {name!r}", prefix + name)
    value = raw[name]
    # bool is an int subclass; a count of True is a typo, not a number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RegistryError(
            f"{where}: field {name!r} must be {kind.__name__}, got {value!r}", prefix + name
        )
    return value


def _list(raw: Mapping[str, Any], name: str, where: str) -> list[Any]:
    return list(_field(raw, name, list, where))


def _parse_track(raw: Mapping[str, Any]) -> Track:
    where = f"track {raw.get('code', '?')!r}"
    return Track(
        code=_field(raw, "code", str, where),
        name=_field(raw, "name", str, where),
        name_zh=_field(raw, "name_zh", str, where),
        dataset_count=_field(raw, "dataset_count", int, where),
        dimension_count=_field(raw, "dimension_count", int, where),
        note=str(raw.get("note", "")),
    )


def _parse_dimension(raw: Mapping[str, Any]) -> Dimension:
    where = f"dimension {raw.get('code', '?')!r}"
    return Dimension(
        code=_field(raw, "code", str, where),
        track=_field(raw, "track", str, where),
        name=_field(raw, "name", str, where),
        name_zh=_field(raw, "name_zh", str, where),
        dataset_count=_field(raw, "dataset_count", int, where),
        note=str(raw.get("note", "")),
    )


def _parse_specialty(raw: Mapping[str, Any]) -> Specialty:
    where = f"specialty {raw.get('code', '?')!r}"
    code = _field(raw, "code", str, where)
    parent = raw.get("parent")
    if parent is not None and not isinstance(parent, str):
        raise RegistryError(f"{where}: field 'parent' must be str or null, got {parent!r}")
    if not _SPECIALTY_CODE.fullmatch(code):
        raise RegistryError(
            f"{where}: code must be upper-case ASCII, 'IM' for a primary or 'IM.CARD' "
            "for a secondary"
        )
    primary_code = "." not in code
    if primary_code and parent is not None:
        raise RegistryError(
            f"{where}: a primary specialty has no parent, got {parent!r} "
            "(a secondary's code starts with its parent's code and a dot)"
        )
    if not primary_code and parent != code.split(".")[0]:
        raise RegistryError(
            f"{where}: a secondary specialty's parent must be the primary its code starts "
            f"with, {code.split('.')[0]!r}; got {parent!r}"
        )
    return Specialty(
        code=code,
        name=_field(raw, "name", str, where),
        name_zh=_field(raw, "name_zh", str, where),
        parent=parent,
    )


def _check_specialties(specialties: tuple[Specialty, ...]) -> None:
    primaries = {s.code for s in specialties if s.parent is None}
    for specialty in specialties:
        if specialty.parent is not None and specialty.parent not in primaries:
            raise RegistryError(
                f"specialty {specialty.code!r}: unknown parent {specialty.parent!r} "
                "(not a primary specialty)"
            )
    n_secondary = len(specialties) - len(primaries)
    if (len(primaries), n_secondary) != (PRIMARY_SPECIALTY_COUNT, SECONDARY_SPECIALTY_COUNT):
        raise RegistryError(
            f"registry: expected {PRIMARY_SPECIALTY_COUNT} primary and "
            f"{SECONDARY_SPECIALTY_COUNT} secondary specialties, found {len(primaries)} "
            f"and {n_secondary}"
        )


def _check_format_and_metric(answer_format: str, metric: str, where: str, prefix: str) -> None:
    if answer_format not in ANSWER_FORMATS:
        raise RegistryError(
            f"{where}: unknown answer_format {answer_format!r}; known: {sorted(ANSWER_FORMATS)}",
            prefix + "answer_format",
        )
    components = metric.split("+")
    unknown = [c for c in components if c not in METRIC_COMPONENTS]
    if unknown:
        raise RegistryError(
            f"{where}: unknown metric component(s) {unknown}; known: {sorted(METRIC_COMPONENTS)}",
            prefix + "metric",
        )
    if len(set(components)) != len(components):
        raise RegistryError(
            f"{where}: metric {metric!r} names a component twice", prefix + "metric"
        )
    if answer_format == "mixed":
        return
    for component in components:
        formats = METRIC_FORMATS.get(component)
        if formats is not None and answer_format not in formats:
            raise RegistryError(
                f"{where}: metric component {component!r} scores answers in format "
                f"{sorted(formats)}, not {answer_format!r}",
                prefix + "metric",
            )
    if answer_format.startswith("choice") and answer_format not in components:
        raise RegistryError(
            f"{where}: a {answer_format!r} item's key is option letters; its metric must hold "
            f"{answer_format!r}",
            prefix + "metric",
        )


def _aliases(raw: Mapping[str, Any], where: str, prefix: str) -> tuple[str, ...]:
    aliases = raw.get("source_aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise RegistryError(
            f"{where}: source_aliases must be a list of non-empty strings",
            prefix + "source_aliases",
        )
    return tuple(aliases)


def _name(raw: Mapping[str, Any], where: str, prefix: str) -> str:
    name: str = _field(raw, "name", str, where, prefix)
    if not DATASET_NAME.fullmatch(name):
        raise RegistryError(
            f"{where}: name {name!r} must be 1-64 characters of [A-Za-z0-9._-], starting with "
            "a letter or digit",
            prefix + "name",
        )
    return name


def _parse_part(raw: Mapping[str, Any], where: str, prefix: str) -> DatasetPart:
    name = _name(raw, where, prefix)
    where = f"{where} part {name!r}"
    part = DatasetPart(
        name=name,
        answer_format=_field(raw, "answer_format", str, where, prefix),
        metric=_field(raw, "metric", str, where, prefix),
        permutations=_field(raw, "permutations", int, where, prefix),
        pool_lines=_field(raw, "pool_lines", int, where, prefix),
        sources=(name, *_aliases(raw, where, prefix)),
    )
    if part.answer_format == "mixed":
        raise RegistryError(
            f"{where}: a part cannot have answer_format 'mixed'", prefix + "answer_format"
        )
    _check_format_and_metric(part.answer_format, part.metric, where, prefix)
    if part.permutations < 1:
        raise RegistryError(f"{where}: permutations must be positive", prefix + "permutations")
    if part.pool_lines < 1:
        raise RegistryError(f"{where}: pool_lines must be positive", prefix + "pool_lines")
    return part


def parse_dataset(raw: Mapping[str, Any]) -> Dataset:
    """Builds and validates one dataset entry on its own (parse_registry checks it against the
    tracks, dimensions and other datasets).

    Raises:
        RegistryError: with field naming the offending field of the entry.
    """
    if not isinstance(raw, Mapping):
        raise RegistryError("a dataset must be a JSON object")
    where = f"dataset {raw.get('name', '?')!r}"
    name = _name(raw, where, "")
    answer_format = _field(raw, "answer_format", str, where)
    metric = _field(raw, "metric", str, where)
    permutations = _field(raw, "permutations", int, where)
    pool_lines = _field(raw, "pool_lines", int, where)
    dataset_rule = _field(raw, "dataset_rule", str, where)
    _check_format_and_metric(answer_format, metric, where, "")
    if dataset_rule not in DATASET_RULES:
        raise RegistryError(
            f"{where}: unknown dataset_rule {dataset_rule!r}; known: {sorted(DATASET_RULES)}",
            "dataset_rule",
        )
    if "parts" in raw:
        if raw.get("source_aliases"):
            raise RegistryError(
                f"{where}: a split dataset's source aliases go on its parts", "source_aliases"
            )
        parts = tuple(
            _parse_part(part, where, f"parts[{n}].")
            for n, part in enumerate(_list(raw, "parts", where))
        )
        _check_parts(where, parts, answer_format, metric, permutations, pool_lines)
    else:
        if answer_format == "mixed":
            raise RegistryError(
                f"{where}: answer_format 'mixed' needs a 'parts' list", "answer_format"
            )
        parts = (
            _parse_part(
                {
                    "name": name,
                    "answer_format": answer_format,
                    "metric": metric,
                    "permutations": permutations,
                    "pool_lines": pool_lines,
                    "source_aliases": raw.get("source_aliases", []),
                },
                where,
                "",
            ),
        )
    shuffled = max(part.permutations for part in parts) > 1
    # Scoring shuffled copies as separate items would count each question several times.
    if shuffled != (dataset_rule == "all_permutations"):
        raise RegistryError(
            f"{where}: dataset_rule {dataset_rule!r} does not fit permutations "
            f"{[part.permutations for part in parts]}; shuffled datasets need 'all_permutations'",
            "dataset_rule",
        )
    for name_of in ("description", "note"):
        if not isinstance(raw.get(name_of, ""), str):
            raise RegistryError(f"{where}: field {name_of!r} must be str", name_of)
    return Dataset(
        name=name,
        track=_field(raw, "track", str, where),
        dimension=_field(raw, "dimension", str, where),
        description=str(raw.get("description", "")),
        answer_format=answer_format,
        metric=metric,
        dataset_rule=dataset_rule,
        permutations=permutations,
        pool_lines=pool_lines,
        parts=parts,
        note=str(raw.get("note", "")),
    )


def _check_parts(
    where: str,
    parts: tuple[DatasetPart, ...],
    answer_format: str,
    metric: str,
    permutations: int,
    pool_lines: int,
) -> None:
    if len(parts) < 2:
        raise RegistryError(f"{where}: 'parts' is for datasets split in two or more parts", "parts")
    formats = {part.answer_format for part in parts}
    expected_format = "mixed" if len(formats) > 1 else formats.pop()
    if answer_format != expected_format:
        raise RegistryError(
            f"{where}: answer_format {answer_format!r} should be {expected_format!r} for its parts",
            "answer_format",
        )
    components = {c for part in parts for c in part.metric_components}
    if set(metric.split("+")) != components:
        raise RegistryError(
            f"{where}: metric {metric!r} should list its parts' components {sorted(components)}",
            "metric",
        )
    if permutations != max(part.permutations for part in parts):
        raise RegistryError(
            f"{where}: permutations should be the largest of its parts'", "permutations"
        )
    if pool_lines != sum(part.pool_lines for part in parts):
        raise RegistryError(f"{where}: pool_lines should be the sum of its parts'", "pool_lines")


def _duplicates(values: list[str]) -> list[str]:
    return sorted(value for value, count in Counter(values).items() if count > 1)


def parse_registry(data: Mapping[str, Any]) -> Registry:
    """Builds and validates a Registry from decoded registry JSON.

    Raises:
        RegistryError: a missing or mistyped field, an unknown track, dimension, answer format,
            metric or rule, a duplicate code, name or pool source, counts that differ
            from the ones the tracks and dimensions declare, a specialty whose parent is
            unknown, not a primary or not the one its code names, a primary with a parent, or
            other than 24 primary and 91 secondary specialties.
    """
    if not isinstance(data, Mapping):
        raise RegistryError("registry: top level must be a JSON object")
    tracks = tuple(_parse_track(raw) for raw in _list(data, "tracks", "registry"))
    dimensions = tuple(_parse_dimension(raw) for raw in _list(data, "dimensions", "registry"))
    datasets = tuple(parse_dataset(raw) for raw in _list(data, "datasets", "registry"))
    specialties = tuple(_parse_specialty(raw) for raw in _list(data, "specialties", "registry"))

    for kind, names, field in (
        ("track", [t.code for t in tracks], ""),
        ("dimension", [d.code for d in dimensions], ""),
        ("dataset", [d.name for d in datasets], "name"),
        (
            "pool source",
            [s for d in datasets for p in d.parts for s in p.sources],
            "source_aliases",
        ),
        ("specialty", [s.code for s in specialties], ""),
    ):
        duplicated = _duplicates(names)
        if duplicated:
            raise RegistryError(f"registry: duplicate {kind} {duplicated}", field)

    track_codes = {t.code for t in tracks}
    for dimension in dimensions:
        if dimension.track not in track_codes:
            raise RegistryError(f"dimension {dimension.code!r}: unknown track {dimension.track!r}")
    dimension_track = {d.code: d.track for d in dimensions}
    for dataset in datasets:
        if dataset.track not in track_codes:
            raise RegistryError(
                f"dataset {dataset.name!r}: unknown track {dataset.track!r}; known: "
                f"{sorted(track_codes)}",
                "track",
            )
        if dataset.dimension not in dimension_track:
            raise RegistryError(
                f"dataset {dataset.name!r}: unknown dimension {dataset.dimension!r}; known in "
                f"{dataset.track}: "
                f"{[d.code for d in dimensions if d.track == dataset.track]}",
                "dimension",
            )
        if dimension_track[dataset.dimension] != dataset.track:
            raise RegistryError(
                f"dataset {dataset.name!r} (track {dataset.track!r}) is in dimension "
                f"{dataset.dimension!r} of track {dimension_track[dataset.dimension]!r}",
                "dimension",
            )

    for track in tracks:
        n_datasets = sum(1 for d in datasets if d.track == track.code)
        n_dimensions = sum(1 for d in dimensions if d.track == track.code)
        if (n_datasets, n_dimensions) != (track.dataset_count, track.dimension_count):
            raise RegistryError(
                f"track {track.code!r}: declares {track.dataset_count} datasets and "
                f"{track.dimension_count} dimensions, found {n_datasets} and {n_dimensions}"
            )
    for dimension in dimensions:
        n_datasets = sum(1 for d in datasets if d.dimension == dimension.code)
        if n_datasets != dimension.dataset_count:
            raise RegistryError(
                f"dimension {dimension.code!r}: declares {dimension.dataset_count} datasets, "
                f"found {n_datasets}"
            )
    _check_specialties(specialties)
    return Registry(
        tracks=tracks, dimensions=dimensions, datasets=datasets, specialties=specialties
    )


def load_registry(path: Path | str) -> Registry:
    """Reads and validates a registry JSON file (the one I/O step; parsing is parse_registry).

    Raises:
        RegistryError: the file is not valid JSON or fails validation (see parse_registry).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RegistryError(f"{path}: not valid JSON: {err}") from err
    return parse_registry(data)
