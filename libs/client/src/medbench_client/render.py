"""Renders one submission's report to files: JSON, CSV, PNG charts, Markdown and HTML.

Everything here is pure apart from `radar_chart`, `dataset_bars` and `write_report`, which write
into the path or folder they are given (and `to_html`, which reads the chart files it is handed).

The input model is self-contained on purpose: a `ReportDocument` is what a submission's owner
may see. Per-item results carry the model's parsed answer and its score, never the reference
answer; the types have no field for one, so no caller can leak it by accident.
"""

from __future__ import annotations

import base64
import csv
import functools
import html
import io
import json
import math
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

SCHEMA = "medbench.report_document.v1"
"""Value of the "schema" key of `to_json`; `from_json` refuses anything else."""

CHART_DPI = 100
RADAR_FILE = "radar.png"
BARS_FILE = "datasets.png"
RADAR_SIZE_PX = (720, 720)
"""(width, height) of the radar chart."""
BARS_WIDTH_PX = 1000

_RULE_HELP = {
    "mean": "mean of the item scores",
    "all_permutations": "a question counts only when every option order is answered correctly",
}


# --------------------------------------------------------------------------- input model


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
    name: str | None = None

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
        items = _typed_rows("items", self.items, ItemResult)
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


# --------------------------------------------------------------------------- display helpers


def fmt_score(value: float) -> str:
    """A 0-100 score as displayed everywhere: one decimal."""
    return f"{value:.1f}"


def fmt_interval(low: float, high: float) -> str:
    """An interval as displayed everywhere, e.g. "[68.1, 76.4]"."""
    return f"[{low:.1f}, {high:.1f}]"


def fmt_item_score(value: float) -> str:
    """A 0-1 item score as displayed in items.csv: four decimals."""
    return f"{value:.4f}"


def _level(doc: ReportDocument) -> str:
    return f"{doc.interval_level * 100:g}%"


def _dimension_label(row: DimensionRow) -> str:
    return f"{row.name} ({row.code})" if row.name else row.code


def _dataset_label(row: DatasetRow) -> str:
    return f"{row.name} ({row.code})" if row.name else row.code


# --------------------------------------------------------------------------- JSON


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


# --------------------------------------------------------------------------- CSV

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    """Neutralises spreadsheet formulas: model output like "=HYPERLINK(...)" stays text."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def to_csv(doc: ReportDocument) -> dict[str, str]:
    """ "datasets.csv" and "items.csv" as RFC 4180 text (CRLF rows, quoted where needed).

    Scores are written as displayed (0-100 with one decimal; item scores 0-1 with four). Text
    cells that a spreadsheet would run as a formula are prefixed with "'".
    """
    datasets = _csv(
        (
            "dataset",
            "name",
            "dimension",
            "score",
            "low",
            "high",
            "n_items",
            "n_units",
            "rule",
            "metric",
        ),
        [
            (
                _cell(row.code),
                _cell(row.name or ""),
                _cell(row.dimension),
                fmt_score(row.score),
                fmt_score(row.low),
                fmt_score(row.high),
                str(row.n_items),
                str(row.n_units),
                _cell(row.rule),
                _cell(row.metric),
            )
            for row in doc.datasets
        ],
    )
    items = _csv(
        ("item_id", "dataset", "score", "parsed_answer"),
        [
            (_cell(i.item_id), _cell(i.dataset), fmt_item_score(i.score), _cell(i.parsed_answer))
            for i in doc.items
        ],
    )
    return {"datasets.csv": datasets, "items.csv": items}


# --------------------------------------------------------------------------- charts

_CJK_PROBE = "中文医学评测临床诊断"
_PREFERRED_CJK = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Microsoft YaHei",
    "PingFang SC",
    "SimHei",
    "Heiti SC",
)


@functools.cache
def _charmap(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


@functools.cache
def cjk_font_path() -> str | None:
    """A font file that has real Chinese glyphs, or None.

    Fonts that map every code point to a placeholder (matplotlib ships "Last Resort") are
    skipped: they would draw boxes, not characters.
    """
    from matplotlib import font_manager

    entries = sorted(
        font_manager.fontManager.ttflist,
        key=lambda e: (e.name not in _PREFERRED_CJK, e.name, e.fname),
    )
    for entry in entries:
        if "last resort" in entry.name.lower():
            continue
        charmap = _charmap(entry.fname)
        # A real font maps no noncharacters; a catch-all placeholder font maps them all.
        if 0xFDD0 in charmap:
            continue
        if all(ord(ch) in charmap for ch in _CJK_PROBE):
            return entry.fname
    return None


@dataclass(frozen=True)
class _Font:
    path: str
    charmap: frozenset[int]

    def props(self, size: float) -> Any:
        from matplotlib.font_manager import FontProperties

        return FontProperties(fname=self.path, size=size)

    def can_draw(self, text: str) -> bool:
        return all(ord(ch) in self.charmap for ch in text)

    def pick(self, *candidates: str) -> str:
        """The first candidate this font draws in full; else an ASCII-safe last resort."""
        for text in candidates:
            if text and self.can_draw(text):
                return text
        last = candidates[-1] if candidates else ""
        return "".join(ch if ord(ch) < 128 else "?" for ch in last)


def _chart_font() -> _Font:
    import matplotlib

    path = cjk_font_path() or str(
        Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    )
    return _Font(path, _charmap(path))


def _one_line(text: str, limit: int = 28) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _new_figure(width_px: int, height_px: int) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_px / CHART_DPI, height_px / CHART_DPI), dpi=CHART_DPI)
    return figure, FigureCanvasAgg(figure)


def _save(figure: Any, path: Path) -> None:
    # No "Software" entry: the same document gives the same bytes across patch versions.
    figure.savefig(path, format="png", dpi=CHART_DPI, metadata={"Software": None})
    figure.clear()


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def radar_chart(doc: ReportDocument, path: Path) -> Path:
    """Writes a PNG radar chart of the dimension scores (0-100), with the interval band."""
    import numpy as np

    font = _chart_font()
    figure, _ = _new_figure(*RADAR_SIZE_PX)
    ax = figure.add_subplot(projection="polar")
    dims = doc.dimensions
    n = len(dims)
    theta = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    closed = np.append(theta, theta[:1])

    def ring(values: Sequence[float]) -> Any:
        return np.append(np.asarray(values, dtype=float), values[0])

    ax.set_theta_offset(np.pi / 2)
    ax.set_theta_direction(-1)
    if any(row.low != row.high for row in dims):
        ax.fill_between(
            closed,
            ring([row.low for row in dims]),
            ring([row.high for row in dims]),
            color="#1f77b4",
            alpha=0.18,
            linewidth=0,
            label=f"{_level(doc)} interval",
        )
    ax.plot(closed, ring([row.score for row in dims]), color="#1f77b4", linewidth=2, marker="o")
    ax.set_ylim(0, 100)
    ax.set_yticks([20, 40, 60, 80, 100])
    ax.set_yticklabels(["20", "40", "60", "80", "100"], fontproperties=font.props(8))
    ax.set_xticks(theta)
    ax.set_xticklabels(
        [font.pick(_one_line(_dimension_label(row), 22), _one_line(row.code, 22)) for row in dims],
        fontproperties=font.props(10),
        parse_math=False,
    )
    ax.tick_params(axis="x", pad=12)
    ax.set_title(
        font.pick(
            f"{_one_line(doc.model, 40)}: overall {fmt_score(doc.overall)}",
            f"Overall {fmt_score(doc.overall)}",
        ),
        fontproperties=font.props(12),
        parse_math=False,
        pad=20,
    )
    if any(row.low != row.high for row in dims):
        ax.legend(loc="lower right", bbox_to_anchor=(1.1, -0.1), prop=font.props(8))
    figure.subplots_adjust(left=0.14, right=0.86, top=0.86, bottom=0.1)
    _save(figure, path)
    return path


def bars_size_px(n_datasets: int) -> tuple[int, int]:
    """(width, height) of the dataset bar chart: the height grows with the number of datasets."""
    return BARS_WIDTH_PX, 160 + 30 * max(n_datasets, 1)


def _grouped_datasets(doc: ReportDocument) -> list[DatasetRow]:
    order = {row.code: i for i, row in enumerate(doc.dimensions)}
    return sorted(doc.datasets, key=lambda row: order[row.dimension])  # stable within dimension


def dataset_bars(doc: ReportDocument, path: Path) -> Path:
    """Writes a PNG of horizontal bars per dataset, coloured by dimension, with interval whiskers.

    The height grows with the number of datasets; see `bars_size_px`.
    """
    from matplotlib.patches import Patch

    font = _chart_font()
    rows = _grouped_datasets(doc)
    number = {row.code: i for i, row in enumerate(doc.datasets, start=1)}
    width, height = bars_size_px(len(rows))
    figure, _ = _new_figure(width, height)
    ax = figure.add_subplot()
    colour = dict(zip((d.code for d in doc.dimensions), _palette(len(doc.dimensions)), strict=True))
    positions = list(range(len(rows)))
    ax.barh(
        positions,
        [row.score for row in rows],
        color=[colour[row.dimension] for row in rows],
        height=0.7,
    )
    with_interval = [i for i, row in enumerate(rows) if row.low != row.high]
    if with_interval:
        ax.errorbar(
            [rows[i].score for i in with_interval],
            with_interval,
            xerr=[
                # Clamped: a point estimate a hair outside its interval must not break the plot.
                [max(rows[i].score - rows[i].low, 0.0) for i in with_interval],
                [max(rows[i].high - rows[i].score, 0.0) for i in with_interval],
            ],
            fmt="none",
            ecolor="#333333",
            elinewidth=1,
            capsize=3,
        )
    for i, row in enumerate(rows):
        ax.text(
            min(row.high, 100.0) + 1.0,
            i,
            fmt_score(row.score),
            va="center",
            fontproperties=font.props(8),
        )
    ax.set_yticks(positions)
    ax.set_yticklabels(
        [
            # Last resort "#n": the row's position in the dataset table of the report.
            font.pick(_one_line(_dataset_label(r)), _one_line(r.code), f"#{number[r.code]}")
            for r in rows
        ],
        fontproperties=font.props(9),
        parse_math=False,
    )
    ax.invert_yaxis()
    ax.set_xlim(0, 108)
    ax.set_xticks([0, 20, 40, 60, 80, 100])
    ax.set_xticklabels(["0", "20", "40", "60", "80", "100"], fontproperties=font.props(9))
    ax.set_xlabel("score (0-100)", fontproperties=font.props(9))
    ax.grid(axis="x", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.set_title(
        f"Dataset scores with {_level(doc)} intervals",
        fontproperties=font.props(12),
        parse_math=False,
    )
    legend = ax.legend(
        handles=[
            Patch(color=colour[d.code], label=font.pick(_one_line(_dimension_label(d)), d.code))
            for d in doc.dimensions
        ],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        prop=font.props(8),
        title="dimension",
        title_fontproperties=font.props(9),
    )
    for text in legend.get_texts():
        text.set_parse_math(False)  # a "$" in a name is text, not TeX
    figure.subplots_adjust(left=0.26, right=0.78, top=1 - 60 / height, bottom=55 / height)
    _save(figure, path)
    return path


def _radar_alt(doc: ReportDocument) -> str:
    parts = ", ".join(f"{row.code} {fmt_score(row.score)}" for row in doc.dimensions)
    return f"Radar chart of dimension scores (0-100): {parts}"


def _bars_alt(doc: ReportDocument) -> str:
    parts = ", ".join(
        f"{row.code} {fmt_score(row.score)} {fmt_interval(row.low, row.high)}"
        for row in _grouped_datasets(doc)
    )
    return f"Bar chart of dataset scores with {_level(doc)} intervals: {parts}"


# --------------------------------------------------------------------------- Markdown

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_MD_CODE_SAFE = re.compile(r"[\w.:/@+=,-]+")


def _md(text: str) -> str:
    """Inert Markdown text: HTML escaped (renderers pass raw HTML) and syntax backslashed."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(" ".join(text.split()), quote=False))


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    align = ["---:" if i in right else "---" for i in range(len(header))]
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(align) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _how_to_read(doc: ReportDocument) -> list[str]:
    level = _level(doc)
    rules = sorted({row.rule for row in doc.datasets})
    rule_text = "; ".join(f"{rule}: {_RULE_HELP[rule]}" for rule in rules if rule in _RULE_HELP)
    return [
        "Scores run from 0 to 100. "
        + (f"A dataset's score follows its rule ({rule_text}). " if rule_text else "")
        + "A dimension's score is the unweighted mean of its datasets, and the overall score "
        "is the unweighted mean of the dimensions, so every dimension weighs the same.",
        f"The range in brackets is the {level} interval: the scores this model could plausibly "
        "have got on other samples of items. When the intervals of two scores overlap, the "
        "difference between them may be noise. The equated score places the overall score on "
        "the common scale shared by all item pools, so that submissions scored on different "
        "pools can be compared; it is n/a when no calibration was applied.",
        "Per-item results (your model's parsed answers and their scores) are in items.csv; "
        "reference answers are not published. The lineage table identifies the item pool, "
        "prompts, judges and code that produced these numbers.",
    ]


def _overall_line(doc: ReportDocument) -> str:
    equated = fmt_score(doc.equated) if doc.equated is not None else "n/a"
    return (
        f"{fmt_score(doc.overall)} ({_level(doc)} interval "
        f"{fmt_interval(doc.overall_low, doc.overall_high)}); equated score {equated}"
    )


def to_markdown(doc: ReportDocument, chart_dir_rel: str = ".") -> str:
    """A Markdown report; charts are linked as `<chart_dir_rel>/radar.png` and `datasets.png`."""

    def chart(name: str) -> str:
        return name if chart_dir_rel in ("", ".") else posixpath.join(chart_dir_rel, name)

    meta = [
        ("Submission", doc.submission_id),
        ("Model", doc.model),
        ("Track", doc.track),
        ("Board", doc.board),
        ("Item pool", doc.pool_id),
        ("Created", doc.created_at.isoformat()),
    ]
    lines = [
        f"# MedBench report: {_md(doc.model)}",
        "",
        *(f"- **{key}:** {_md(value)}" for key, value in meta),
        "",
        f"**Overall score:** {_overall_line(doc)}",
        "",
        "## Dimensions",
        "",
        *_md_table(
            ("Dimension", "Code", "Score", f"{_level(doc)} interval", "Datasets"),
            [
                (
                    _md(row.name or ""),
                    _md(row.code),
                    fmt_score(row.score),
                    fmt_interval(row.low, row.high),
                    str(row.n_datasets),
                )
                for row in doc.dimensions
            ],
            right={2, 3, 4},
        ),
        "",
        "## Datasets",
        "",
        *_md_table(
            (
                "Dataset",
                "Name",
                "Dimension",
                "Score",
                f"{_level(doc)} interval",
                "Items",
                "Units",
                "Rule",
                "Metric",
            ),
            [
                (
                    _md(row.code),
                    _md(row.name or ""),
                    _md(row.dimension),
                    fmt_score(row.score),
                    fmt_interval(row.low, row.high),
                    str(row.n_items),
                    str(row.n_units),
                    _md(row.rule),
                    _md(row.metric),
                )
                for row in doc.datasets
            ],
            right={3, 4, 5, 6},
        ),
        "",
        "## Charts",
        "",
        f"![{_md(_radar_alt(doc))}]({chart(RADAR_FILE)})",
        "",
        f"![{_md(_bars_alt(doc))}]({chart(BARS_FILE)})",
        "",
        "## Lineage",
        "",
        *_md_table(
            ("Input", "Value"),
            [
                (_md(key), f"`{value}`" if _MD_CODE_SAFE.fullmatch(value) else _md(value))
                for key, value in sorted(doc.lineage.items())
            ],
            right=set(),
        ),
        "",
        "## How to read this",
        "",
        *(line for paragraph in _how_to_read(doc) for line in (_md(paragraph), "")),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","PingFang SC",
"Microsoft YaHei",sans-serif;margin:2rem auto;max-width:68rem;padding:0 1rem;color:#1d1d1f;
line-height:1.5}
h1{font-size:1.6rem;margin-bottom:.3rem}h2{font-size:1.2rem;margin-top:2rem}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.1rem 1rem;margin:0}
dl.meta dt{font-weight:600}dl.meta dd{margin:0}
.overall{font-size:1.25rem;margin:1rem 0;padding:.8rem 1rem;background:#f2f6fb;
border-left:4px solid #1f77b4}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.92rem}
caption{text-align:left;font-weight:600;padding:.3rem 0}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;vertical-align:top}
thead th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1rem 0}img{max-width:100%;height:auto}figcaption{font-size:.85rem;color:#555}
""".strip()


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _html_table(
    caption: str,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    numeric: set[int],
) -> list[str]:
    """A table whose first column heads its row; all cells are escaped here."""
    out = [
        "<table>",
        f"<caption>{_e(caption)}</caption>",
        "<thead><tr>" + "".join(f'<th scope="col">{_e(h)}</th>' for h in header) + "</tr></thead>",
        "<tbody>",
    ]
    for row in rows:
        cells = [f'<th scope="row">{_e(row[0])}</th>']
        cells += [
            f'<td class="num">{_e(cell)}</td>' if i in numeric else f"<td>{_e(cell)}</td>"
            for i, cell in enumerate(row[1:], start=1)
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out += ["</tbody>", "</table>"]
    return out


def _data_url(source: Path | bytes) -> str:
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def to_html(doc: ReportDocument, chart_files: Mapping[str, Path | bytes]) -> str:
    """A self-contained HTML report: inline CSS, charts embedded as base64 data URLs.

    Args:
        doc: the report.
        chart_files: "radar" and/or "datasets" -> PNG path or bytes; a missing key leaves its
            chart out.
    """
    level = _level(doc)
    meta = [
        ("Submission", doc.submission_id),
        ("Model", doc.model),
        ("Track", doc.track),
        ("Board", doc.board),
        ("Item pool", doc.pool_id),
        ("Created", doc.created_at.isoformat()),
    ]
    charts = [
        (key, alt, caption)
        for key, alt, caption in (
            ("radar", _radar_alt(doc), "Dimension scores (line) and intervals (band)."),
            ("datasets", _bars_alt(doc), "Dataset scores by dimension, with interval whiskers."),
        )
        if key in chart_files
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        # Defence in depth: nothing but inline style and embedded images may load or run.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>MedBench report: {_e(doc.model)} ({_e(doc.submission_id)})</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>MedBench report: {_e(doc.model)}</h1>",
        '<dl class="meta">',
        *(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in meta),
        "</dl>",
        f'<p class="overall"><strong>Overall score: {_e(fmt_score(doc.overall))}</strong> '
        f"({_e(level)} interval {_e(fmt_interval(doc.overall_low, doc.overall_high))}); "
        f"equated score "
        f"{_e(fmt_score(doc.equated)) if doc.equated is not None else 'n/a'}</p>",
        "<section>",
        "<h2>Dimensions</h2>",
        *_html_table(
            "Scores per dimension (unweighted mean of its datasets)",
            ("Code", "Dimension", "Score", f"{level} interval", "Datasets"),
            [
                (
                    row.code,
                    row.name or "",
                    fmt_score(row.score),
                    fmt_interval(row.low, row.high),
                    str(row.n_datasets),
                )
                for row in doc.dimensions
            ],
            numeric={2, 3, 4},
        ),
        "</section>",
        "<section>",
        "<h2>Datasets</h2>",
        *_html_table(
            "Scores per dataset",
            (
                "Dataset",
                "Name",
                "Dimension",
                "Score",
                f"{level} interval",
                "Items",
                "Units",
                "Rule",
                "Metric",
            ),
            [
                (
                    row.code,
                    row.name or "",
                    row.dimension,
                    fmt_score(row.score),
                    fmt_interval(row.low, row.high),
                    str(row.n_items),
                    str(row.n_units),
                    row.rule,
                    row.metric,
                )
                for row in doc.datasets
            ],
            numeric={3, 4, 5, 6},
        ),
        "</section>",
    ]
    if charts:
        parts += ["<section>", "<h2>Charts</h2>"]
        for key, alt, caption in charts:
            parts += [
                "<figure>",
                f'<img src="{_data_url(chart_files[key])}" alt="{_e(alt)}">',
                f"<figcaption>{_e(caption)}</figcaption>",
                "</figure>",
            ]
        parts.append("</section>")
    parts += [
        "<section>",
        "<h2>Lineage</h2>",
        *_html_table(
            "Inputs and code versions behind these numbers",
            ("Input", "Value"),
            sorted(doc.lineage.items()),
            numeric=set(),
        ),
        "</section>",
        "<section>",
        "<h2>How to read this</h2>",
        *(f"<p>{_e(paragraph)}</p>" for paragraph in _how_to_read(doc)),
        "</section>",
        "</main>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- files


def write_report(doc: ReportDocument, folder: Path) -> dict[str, Path]:
    """Writes every rendering into `folder` (created if missing); returns file name -> path.

    CSV files get a UTF-8 byte-order mark so spreadsheet programs read the Chinese text right.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        path = folder / name
        path.write_bytes(data)
        paths[name] = path

    put("report.json", to_json(doc).encode("utf-8"))
    for name, text in to_csv(doc).items():
        put(name, text.encode("utf-8-sig"))
    paths[RADAR_FILE] = radar_chart(doc, folder / RADAR_FILE)
    paths[BARS_FILE] = dataset_bars(doc, folder / BARS_FILE)
    put("report.md", to_markdown(doc, ".").encode("utf-8"))
    charts = {"radar": paths[RADAR_FILE], "datasets": paths[BARS_FILE]}
    put("report.html", to_html(doc, charts).encode("utf-8"))
    return paths
