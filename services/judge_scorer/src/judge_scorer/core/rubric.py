"""Judge rubrics: versioned data files, validated on load, looked up by dataset (pure).

A rubric is identified by (id, version) and fingerprinted by `content_hash`. Published rubrics
are immutable: `published.lock` next to the rubric files records the hash of every published
version, so editing a rubric without bumping its version fails loading instead of silently
changing how old and new verdicts are scored.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from medbench_runtime.errors import InvalidArgument, MedbenchError

RUBRICS_PACKAGE = "judge_scorer.rubrics"
LOCK_FILE = "published.lock"
FALLBACK_ID = "generic"
"""The rubric used for datasets no rubric lists."""

_FIELDS = (
    "id",
    "version",
    "title",
    "description",
    "datasets",
    "scale",
    "criteria",
    "instructions",
    "output_schema",
)
_ID = re.compile(r"[a-z][a-z0-9_]*")
_WEIGHT_TOLERANCE = 1e-6


class RubricError(MedbenchError):
    """A rubric file or the set of rubric files is invalid; the message names file and field."""


class UnknownRubric(InvalidArgument):
    """No rubric with that id, version or dataset."""


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal data gives equal text, hence equal hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Anchor:
    """What a score on the scale means."""

    score: int | float
    description: str


@dataclass(frozen=True)
class Scale:
    """The ordinal range the judge scores on (inclusive)."""

    min: int | float
    max: int | float
    anchors: tuple[Anchor, ...]

    def clamp(self, score: float) -> float:
        return min(max(score, float(self.min)), float(self.max))

    def normalise(self, score: float) -> float:
        """Maps a score on the scale to [0, 1]."""
        return (self.clamp(score) - self.min) / (self.max - self.min)


@dataclass(frozen=True)
class Criterion:
    name: str
    weight: float
    """Share of the overall score; a rubric's weights sum to 1."""
    description: str


@dataclass(frozen=True)
class Rubric:
    """One version of a rubric, as read from its data file."""

    id: str
    version: int
    title: str
    description: str
    """What the rubric is for and why its scale was chosen."""
    datasets: tuple[str, ...]
    """Dataset codes (as in the registry) this rubric scores."""
    scale: Scale
    criteria: tuple[Criterion, ...]
    instructions: tuple[str, ...]
    output_schema_json: str
    """The JSON Schema of the judge's answer, as canonical JSON (kept as text: frozen data)."""

    @property
    def output_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = json.loads(self.output_schema_json)
        return schema

    @property
    def label(self) -> str:
        return f"{self.id} v{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """The rubric as the data its file holds."""
        return {
            "id": self.id,
            "version": self.version,
            "title": self.title,
            "description": self.description,
            "datasets": list(self.datasets),
            "scale": {
                "min": self.scale.min,
                "max": self.scale.max,
                "anchors": [
                    {"score": a.score, "description": a.description} for a in self.scale.anchors
                ],
            },
            "criteria": [
                {"name": c.name, "weight": c.weight, "description": c.description}
                for c in self.criteria
            ],
            "instructions": list(self.instructions),
            "output_schema": self.output_schema,
        }

    @functools.cached_property
    def content_hash(self) -> str:
        """sha256 of the canonical JSON of the rubric: any change of content changes it."""
        return sha256_hex(canonical_json(self.to_dict()))


def parse_rubric(data: Any, source: str = "<rubric>") -> Rubric:
    """Validates one rubric's data.

    Raises:
        RubricError: a field is missing, unknown or invalid; the message names source and field.
    """
    if not isinstance(data, dict):
        raise RubricError(f"{source}: a rubric is a JSON object, got {type(data).__name__}")
    missing = [name for name in _FIELDS if name not in data]
    if missing:
        raise RubricError(f"{source}: missing field(s) {', '.join(map(repr, missing))}")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise RubricError(f"{source}: unknown field(s) {', '.join(map(repr, unknown))}")
    rubric_id = data["id"]
    if not isinstance(rubric_id, str) or not _ID.fullmatch(rubric_id):
        raise RubricError(f"{source}: 'id' must be lower_snake_case text, got {rubric_id!r}")
    version = data["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RubricError(f"{source}: 'version' must be an integer >= 1, got {version!r}")
    where = f"{source} ({rubric_id} v{version})"
    scale = _parse_scale(data["scale"], where)
    return Rubric(
        id=rubric_id,
        version=version,
        title=_text(data["title"], "title", where),
        description=_text(data["description"], "description", where),
        datasets=_datasets(data["datasets"], where),
        scale=scale,
        criteria=_criteria(data["criteria"], where),
        instructions=_instructions(data["instructions"], where),
        output_schema_json=canonical_json(_output_schema(data["output_schema"], scale, where)),
    )


def _text(value: Any, name: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RubricError(f"{where}: {name!r} must be non-empty text, got {value!r}")
    return value


def _number(value: Any, name: str, where: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RubricError(f"{where}: {name} must be a finite number, got {value!r}")
    return value


def _parse_scale(raw: Any, where: str) -> Scale:
    if not isinstance(raw, dict):
        raise RubricError(f"{where}: 'scale' must be an object with min, max and anchors")
    unknown = sorted(set(raw) - {"min", "max", "anchors"})
    if unknown:
        raise RubricError(f"{where}: unknown scale field(s) {', '.join(map(repr, unknown))}")
    for name in ("min", "max", "anchors"):
        if name not in raw:
            raise RubricError(f"{where}: scale is missing {name!r}")
    low = _number(raw["min"], "scale.min", where)
    high = _number(raw["max"], "scale.max", where)
    if low >= high:
        raise RubricError(f"{where}: bad scale: min ({low}) must be below max ({high})")
    if not isinstance(raw["anchors"], list) or not raw["anchors"]:
        raise RubricError(f"{where}: scale.anchors must be a non-empty list")
    anchors: list[Anchor] = []
    for i, item in enumerate(raw["anchors"]):
        if not isinstance(item, dict) or set(item) != {"score", "description"}:
            raise RubricError(f"{where}: scale.anchors[{i}] must have exactly score, description")
        score = _number(item["score"], f"scale.anchors[{i}].score", where)
        if not low <= score <= high:
            raise RubricError(f"{where}: bad scale: anchor {score} lies outside [{low}, {high}]")
        if anchors and score <= anchors[-1].score:
            raise RubricError(f"{where}: bad scale: anchor scores must increase, {score} does not")
        anchors.append(Anchor(score, _text(item["description"], "anchor description", where)))
    if anchors[0].score != low or anchors[-1].score != high:
        raise RubricError(f"{where}: bad scale: anchors must describe both min and max")
    return Scale(low, high, tuple(anchors))


def _datasets(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(d, str) and d.strip() for d in raw):
        raise RubricError(f"{where}: 'datasets' must be a list of dataset codes")
    if len(set(raw)) != len(raw):
        raise RubricError(f"{where}: 'datasets' lists a dataset twice")
    return tuple(raw)


def _criteria(raw: Any, where: str) -> tuple[Criterion, ...]:
    if not isinstance(raw, list) or not raw:
        raise RubricError(f"{where}: 'criteria' must be a non-empty list")
    criteria: list[Criterion] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) != {"name", "weight", "description"}:
            raise RubricError(
                f"{where}: criteria[{i}] must have exactly name, weight and description"
            )
        weight = _number(item["weight"], f"criteria[{i}].weight", where)
        if weight <= 0:
            raise RubricError(f"{where}: criteria[{i}].weight must be positive, got {weight}")
        criteria.append(
            Criterion(
                _text(item["name"], f"criteria[{i}].name", where),
                weight,
                _text(item["description"], f"criteria[{i}].description", where),
            )
        )
    if len({c.name for c in criteria}) != len(criteria):
        raise RubricError(f"{where}: two criteria have the same name")
    total = sum(c.weight for c in criteria)
    if abs(total - 1) > _WEIGHT_TOLERANCE:
        raise RubricError(f"{where}: criteria weights must sum to 1, they sum to {total:g}")
    return tuple(criteria)


def _instructions(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise RubricError(f"{where}: 'instructions' must be a non-empty list of steps")
    return tuple(_text(step, f"instructions[{i}]", where) for i, step in enumerate(raw))


def _output_schema(raw: Any, scale: Scale, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or raw.get("type") != "object":
        raise RubricError(f"{where}: 'output_schema' must be a JSON Schema of type object")
    required = raw.get("required")
    if not isinstance(required, list) or "score" not in required:
        raise RubricError(f"{where}: output_schema must require 'score'")
    properties = raw.get("properties")
    score = properties.get("score") if isinstance(properties, dict) else None
    if not isinstance(score, dict):
        raise RubricError(f"{where}: output_schema must describe the 'score' property")
    if score.get("minimum") != scale.min or score.get("maximum") != scale.max:
        raise RubricError(
            f"{where}: bad scale: output_schema score range "
            f"[{score.get('minimum')}, {score.get('maximum')}] differs from the scale "
            f"[{scale.min}, {scale.max}]"
        )
    return raw


@dataclass(frozen=True)
class RubricBook:
    """Every loaded rubric version; a dataset belongs to the rubric whose latest version lists
    it, and datasets no rubric lists fall back to `FALLBACK_ID`."""

    rubrics: tuple[Rubric, ...]

    def __post_init__(self) -> None:
        seen: dict[tuple[str, int], Rubric] = {}
        for rubric in self.rubrics:
            other = seen.setdefault((rubric.id, rubric.version), rubric)
            if other is not rubric:
                raise RubricError(f"rubric {rubric.label} is given twice")
        owners: dict[str, str] = {}
        for rubric in self._latest().values():
            for dataset in rubric.datasets:
                owner = owners.setdefault(dataset, rubric.id)
                if owner != rubric.id:
                    raise RubricError(
                        f"dataset {dataset!r} is listed by the latest versions of both "
                        f"{owner!r} and {rubric.id!r}"
                    )

    def _latest(self) -> dict[str, Rubric]:
        latest: dict[str, Rubric] = {}
        for rubric in self.rubrics:
            if rubric.id not in latest or rubric.version > latest[rubric.id].version:
                latest[rubric.id] = rubric
        return latest

    @property
    def datasets(self) -> frozenset[str]:
        """Datasets a rubric lists explicitly (not counting the fallback)."""
        return frozenset(d for r in self._latest().values() for d in r.datasets)

    def get(self, rubric_id: str, version: int | None = None) -> Rubric:
        """A rubric by id; the latest version unless one is named.

        Raises:
            UnknownRubric: no such id or version.
        """
        versions = [r for r in self.rubrics if r.id == rubric_id]
        if not versions:
            raise UnknownRubric(f"no rubric {rubric_id!r}")
        if version is None:
            return max(versions, key=lambda r: r.version)
        for rubric in versions:
            if rubric.version == version:
                return rubric
        known = sorted(r.version for r in versions)
        raise UnknownRubric(f"rubric {rubric_id!r} has no version {version} (has {known})")

    def for_dataset(self, dataset: str, version: int | None = None) -> Rubric:
        """The rubric that scores a dataset (latest version unless one is named).

        Raises:
            UnknownRubric: the dataset's rubric has no such version, that version does not
                list the dataset, or nothing covers it and there is no fallback rubric.
        """
        owner = next((r.id for r in self._latest().values() if dataset in r.datasets), None)
        if owner is None:
            if not any(r.id == FALLBACK_ID for r in self.rubrics):
                raise UnknownRubric(
                    f"no rubric lists dataset {dataset!r} and there is no {FALLBACK_ID!r} rubric"
                )
            return self.get(FALLBACK_ID, version)
        rubric = self.get(owner, version)
        if dataset not in rubric.datasets:
            raise UnknownRubric(f"rubric {rubric.label} does not list dataset {dataset!r}")
        return rubric


def parse_rubric_book(sources: Iterable[tuple[str, str]], published: str | None) -> RubricBook:
    """Parses rubric files given as (name, text) and checks them against the published hashes
    (`published` is the lock file's text; None skips the check).

    Raises:
        RubricError: a file is invalid, two files define one (id, version), or a published
            rubric changed, is missing, or a rubric is not in the lock.
    """
    rubrics: list[Rubric] = []
    origin: dict[tuple[str, int], tuple[str, str]] = {}
    for name, text in sources:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise RubricError(f"{name}: not valid JSON: {err}") from err
        rubric = parse_rubric(data, name)
        key = (rubric.id, rubric.version)
        if key in origin:
            other, other_hash = origin[key]
            if other_hash == rubric.content_hash:
                raise RubricError(f"{name}: duplicate rubric {rubric.label} (also in {other})")
            raise RubricError(
                f"{name}: rubric {rubric.label} is also defined in {other} with different "
                f"content ({rubric.content_hash[:12]} vs {other_hash[:12]}); a changed rubric "
                f"needs a new version"
            )
        origin[key] = (name, rubric.content_hash)
        rubrics.append(rubric)
    rubrics.sort(key=lambda r: (r.id, r.version))
    if published is not None:
        _check_published(rubrics, parse_lock(published))
    return RubricBook(tuple(rubrics))


def parse_lock(text: str) -> dict[tuple[str, int], str]:
    """Reads `published.lock`: one `<id> <version> <sha256>` line per published rubric."""
    hashes: dict[tuple[str, int], str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if (
            len(fields) != 3
            or not fields[1].isdigit()
            or not re.fullmatch(r"[0-9a-f]{64}", fields[2])
        ):
            raise RubricError(f"{LOCK_FILE}:{number}: expected '<id> <version> <sha256>'")
        key = (fields[0], int(fields[1]))
        if key in hashes:
            raise RubricError(f"{LOCK_FILE}:{number}: {fields[0]} v{fields[1]} is listed twice")
        hashes[key] = fields[2]
    return hashes


def lock_line(rubric: Rubric) -> str:
    return f"{rubric.id} {rubric.version} {rubric.content_hash}"


def _check_published(rubrics: list[Rubric], published: Mapping[tuple[str, int], str]) -> None:
    present = {(r.id, r.version) for r in rubrics}
    for rubric in rubrics:
        expected = published.get((rubric.id, rubric.version))
        if expected is None:
            raise RubricError(
                f"rubric {rubric.label} is not in {LOCK_FILE}; add the line: {lock_line(rubric)}"
            )
        if expected != rubric.content_hash:
            raise RubricError(
                f"rubric {rubric.label} changed after it was published (hash "
                f"{rubric.content_hash[:12]}, published {expected[:12]}): give the change a "
                f"new version instead"
            )
    missing = sorted(published.keys() - present)
    if missing:
        names = ", ".join(f"{rubric_id} v{version}" for rubric_id, version in missing)
        raise RubricError(f"published rubric(s) missing: {names}")


def load_rubrics(root: Traversable | None = None) -> RubricBook:
    """Reads every `*.json` rubric in `root` (the packaged rubrics by default) and, when present,
    checks them against `published.lock` there.

    Raises:
        RubricError: see `parse_rubric_book`.
    """
    folder = root if root is not None else resources.files(RUBRICS_PACKAGE)
    sources = sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.endswith(".json")
    )
    lock = folder / LOCK_FILE
    published = lock.read_text(encoding="utf-8") if lock.is_file() else None
    return parse_rubric_book(sources, published)
