"""The report document: what one submission's report shows, validated, and its JSON form.

The model is self-contained on purpose: a `ReportDocument` is what a submission's owner may see.
Per-item results carry the model's parsed answer and its score, never the reference answer; the
types have no field for one, so no caller can leak it by accident. While the submission's pool is
live they are withheld (`items_withheld` says why) and the document has aggregates only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

SCHEMA = "medbench.report_document.v1"
"""Value of the "schema" key of `to_json`; `from_json` refuses anything else."""


def _finite(name: str, value: float, low: float = 0.0, high: float = 100.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be a finite number in [{low:g}, {high:g}], got {value!r}")
    return value


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


def _interval(owner: str, score: float, low: float, high: float) -> tuple[float, float, float]:
    score = _finite(f"{owner} score", score)
    low = _finite(f"{owner} low", low)
    high = _finite(f"{owner} high", high)
    if not low <= high:
        raise ValueError(f"{owner}: interval [{low}, {high}] is reversed")
    return score, low, high


def _text(name: str, value: object, *, empty: bool = False) -> None:
    if not isinstance(value, str) or (not empty and not value):
        raise ValueError(f"{name} must be a {'' if empty else 'non-empty '}string, got {value!r}")


@dataclass(frozen=True)
class DimensionRow:
    """One dimension's score; `name` is its display (usually Chinese) name."""

    code: str
    name: str | None
    score: float
    """0-100."""
    low: float
    high: float
    n_datasets: int

    def __post_init__(self) -> None:
        _text("dimension code", self.code)
        if self.name is not None:
            _text(f"name of dimension {self.code}", self.name)
        score, low, high = _interval(f"dimension {self.code}", self.score, self.low, self.high)
        object.__setattr__(self, "score", score)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        _count(f"dimension {self.code} n_datasets", self.n_datasets)


@dataclass(frozen=True)
class DatasetRow:
    """One dataset's score; `name` is an optional display (usually Chinese) name."""

    code: str
    dimension: str
    score: float
    """0-100."""
    low: float
    high: float
    n_items: int
    n_units: int
    """Scoring units: items under "mean", permutation groups under "all_permutations"."""
    rule: str
    metric: str
    """The metric spec the dataset was scored under (the registry's name)."""
    name: str | None = None
    item_mean: float | None = None
    """0-100 mean over items: for shuffled-option sets the per-permutation accuracy (the score
    counts a question only when all its permutations are right); None when not reported."""

    def __post_init__(self) -> None:
        _text("dataset code", self.code)
        _text(f"dimension of dataset {self.code}", self.dimension)
        if self.name is not None:
            _text(f"name of dataset {self.code}", self.name)
        score, low, high = _interval(f"dataset {self.code}", self.score, self.low, self.high)
        object.__setattr__(self, "score", score)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        _count(f"dataset {self.code} n_items", self.n_items)
        _count(f"dataset {self.code} n_units", self.n_units)
        _text(f"rule of dataset {self.code}", self.rule)
        _text(f"metric of dataset {self.code}", self.metric)
        if self.item_mean is not None:
            object.__setattr__(
                self, "item_mean", _finite(f"dataset {self.code} item_mean", self.item_mean)
            )


@dataclass(frozen=True)
class ItemResult:
    """One item as its owner sees it: the model's parsed answer and its score, nothing more."""

    item_id: str
    dataset: str
    score: float
    """0-1."""
    parsed_answer: str
    """The answer as parsed from the model's output (may be empty when parsing failed)."""

    def __post_init__(self) -> None:
        _text("item_id", self.item_id)
        _text(f"dataset of item {self.item_id}", self.dataset)
        object.__setattr__(
            self, "score", _finite(f"item {self.item_id} score", self.score, 0.0, 1.0)
        )
        _text(f"parsed_answer of item {self.item_id}", self.parsed_answer, empty=True)


@dataclass(frozen=True)
class ReportDocument:
    """Everything one submission's report shows.

    `lineage` maps names (pool version, item versions digest, prompt hash, endpoint/model, judge
    models, rubric versions, calibration ids, scorer and aggregator code versions, item-scores
    digest) to values; it is copied on construction, so later changes to the caller's dict do
    not show through.
    """

    submission_id: str
    model: str
    track: str
    board: str
    pool_id: str
    created_at: datetime
    """Timezone-aware."""
    overall: float
    """0-100: the unweighted mean of the dimension scores."""
    overall_low: float
    overall_high: float
    equated: float | None
    """The overall score on the common (equated) scale, when a calibration was applied."""
    dimensions: tuple[DimensionRow, ...]
    datasets: tuple[DatasetRow, ...]
    items: tuple[ItemResult, ...]
    lineage: dict[str, str] = field(default_factory=dict)
    interval_level: float = 0.95
    """Coverage of the intervals (low, high), e.g. 0.95."""
    partial: bool = False
    """Some dataset of the track has no scored item: the overall is the mean of the dimensions
    present only, not comparable with a complete report's, and leaderboards do not rank it."""
    missing_dimensions: tuple[str, ...] = ()
    """The track's dimensions with no scored item (a partial report only)."""
    missing_datasets: tuple[str, ...] = ()
    """The track's datasets with no scored item (at least one in a partial report)."""
    items_withheld: str = ""
    """Why there are no per-item results (the gateway's reason: the pool is live and per-item
    scores would reveal its keys); "" when they are shown. A document with a reason has no
    items."""
    live_steps: tuple[tuple[str, float], ...] = ()
    """(dataset, step in points) of a live view: the pool is live, so each dataset's score is
    shown rounded to its step, and intervals, dimensions and the overall come from the shown
    scores (README, "What partners see"); empty for an exact report."""

    def __post_init__(self) -> None:
        for name in ("submission_id", "model", "track", "board", "pool_id"):
            _text(name, getattr(self, name))
        if not isinstance(self.created_at, datetime) or self.created_at.utcoffset() is None:
            raise ValueError(f"created_at must be a timezone-aware datetime: {self.created_at!r}")
        overall, low, high = _interval("overall", self.overall, self.overall_low, self.overall_high)
        object.__setattr__(self, "overall", overall)
        object.__setattr__(self, "overall_low", low)
        object.__setattr__(self, "overall_high", high)
        if self.equated is not None:
            # An equated score is on another scale and may leave 0-100 slightly; it must be finite.
            object.__setattr__(
                self, "equated", _finite("equated", self.equated, -math.inf, math.inf)
            )
        level = _finite("interval_level", self.interval_level, 0.0, 1.0)
        if not 0.0 < level < 1.0:
            raise ValueError(f"interval_level must lie strictly between 0 and 1, got {level}")
        object.__setattr__(self, "interval_level", level)
        for name, kind in (("dimensions", DimensionRow), ("datasets", DatasetRow)):
            rows = _typed_rows(name, getattr(self, name), kind)
            if not rows:
                raise ValueError(f"a report needs at least one entry in {name}")
            _unique(name, [row.code for row in rows])
            object.__setattr__(self, name, rows)
        object.__setattr__(
            self, "live_steps", tuple((str(name), float(step)) for name, step in self.live_steps)
        )
        items = _typed_rows("items", self.items, ItemResult)
        _text("items_withheld", self.items_withheld, empty=True)
        if self.items_withheld and items:
            raise ValueError("a report whose per-item results are withheld has no items")
        _unique("items", [item.item_id for item in items])
        object.__setattr__(self, "items", items)
        dimension_codes = {row.code for row in self.dimensions}
        dataset_codes = {row.code for row in self.datasets}
        for dataset in self.datasets:
            if dataset.dimension not in dimension_codes:
                raise ValueError(
                    f"dataset {dataset.code} names unknown dimension {dataset.dimension!r}"
                )
        for item in items:
            if item.dataset not in dataset_codes:
                raise ValueError(f"item {item.item_id} names unknown dataset {item.dataset!r}")
        lineage = dict(self.lineage)
        for key, value in lineage.items():
            _text("lineage key", key)
            _text(f"lineage {key}", value, empty=True)
        object.__setattr__(self, "lineage", lineage)
        self._check_coverage(dimension_codes, dataset_codes)

    def _check_coverage(self, dimension_codes: set[str], dataset_codes: set[str]) -> None:
        if not isinstance(self.partial, bool):
            raise TypeError(f"partial must be a bool, got {self.partial!r}")
        for name, present in (
            ("missing_dimensions", dimension_codes),
            ("missing_datasets", dataset_codes),
        ):
            raw = getattr(self, name)
            if isinstance(raw, str):
                raise TypeError(f"{name} must be a list of codes, not a string")
            codes = tuple(raw)
            for code in codes:
                _text(f"a code in {name}", code)
                if code in present:
                    raise ValueError(f"{name}: {code!r} has scores in this report")
            _unique(name, codes)
            object.__setattr__(self, name, codes)
        if self.partial != bool(self.missing_datasets):
            raise ValueError(
                "a partial report lists its missing datasets, and only a partial report has any"
            )


def _typed_rows(name: str, rows: Sequence[Any], kind: type) -> tuple[Any, ...]:
    rows = tuple(rows)
    for row in rows:
        if not isinstance(row, kind):
            raise TypeError(f"{name} must hold {kind.__name__} values, got {row!r}")
    return rows


def _unique(name: str, codes: Sequence[str]) -> None:
    seen: set[str] = set()
    for code in codes:
        if code in seen:
            raise ValueError(f"{name}: {code!r} appears twice")
        seen.add(code)


def _item_dict(row: Any) -> dict[str, Any]:
    return {f.name: getattr(row, f.name) for f in fields(row)}


def to_json(doc: ReportDocument) -> str:
    """The document as JSON: sorted keys, UTF-8 text (not \\u-escaped), no NaN, newline-ended."""
    payload: dict[str, Any] = {
        f.name: getattr(doc, f.name)
        for f in fields(doc)
        if f.name not in ("dimensions", "datasets", "items", "created_at")
    }
    payload["schema"] = SCHEMA
    payload["created_at"] = doc.created_at.isoformat()
    payload["dimensions"] = [_item_dict(row) for row in doc.dimensions]
    payload["datasets"] = [_item_dict(row) for row in doc.datasets]
    payload["items"] = [_item_dict(row) for row in doc.items]
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, sort_keys=True, indent=2) + "\n"


def _rows(kind: type, raw: object) -> tuple[Any, ...]:
    if not isinstance(raw, list):
        raise ValueError(f"expected a list of {kind.__name__} objects")
    names = {f.name for f in fields(kind)}
    rows = []
    for entry in raw:
        if not isinstance(entry, dict) or not set(entry) <= names:
            raise ValueError(f"bad {kind.__name__} entry: {entry!r}")
        rows.append(kind(**entry))
    return tuple(rows)


def _no_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} in report JSON")


def from_json(text: str) -> ReportDocument:
    """Parses `to_json` output back; `from_json(to_json(doc)) == doc`.

    Raises:
        ValueError: not a report document of this schema, unknown keys, or invalid values.
    """
    raw = json.loads(text, parse_constant=_no_constant)
    if not isinstance(raw, dict) or raw.pop("schema", None) != SCHEMA:
        raise ValueError(f"not a {SCHEMA} document")
    known = {f.name for f in fields(ReportDocument)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"unknown keys in report JSON: {sorted(unknown)}")
    created_at = raw.pop("created_at")
    if not isinstance(created_at, str):
        raise ValueError("created_at must be an ISO 8601 string")
    try:
        return ReportDocument(
            **{
                **raw,
                "created_at": datetime.fromisoformat(created_at),
                "dimensions": _rows(DimensionRow, raw.get("dimensions")),
                "datasets": _rows(DatasetRow, raw.get("datasets")),
                "items": _rows(ItemResult, raw.get("items")),
            }
        )
    except TypeError as error:  # missing keys, or values of the wrong type
        raise ValueError(f"invalid report JSON: {error}") from error
