"""The report's PNG charts: a radar of the dimension scores and bars of the dataset scores.

Both write into the path they are given. Chinese names are drawn with a font that has their
glyphs when one is installed, else the charts fall back to the codes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medbench_client.render.document import ReportDocument
from medbench_client.render.rows import (
    dataset_label,
    dimension_label,
    fmt_score,
    grouped_datasets,
    level,
)

CHART_DPI = 100
RADAR_FILE = "radar.png"
BARS_FILE = "datasets.png"
RADAR_SIZE_PX = (720, 720)
"""(width, height) of the radar chart."""
BARS_WIDTH_PX = 1000


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
            label=f"{level(doc)} interval",
        )
    ax.plot(closed, ring([row.score for row in dims]), color="#1f77b4", linewidth=2, marker="o")
    ax.set_ylim(0, 100)
    ax.set_yticks([20, 40, 60, 80, 100])
    ax.set_yticklabels(["20", "40", "60", "80", "100"], fontproperties=font.props(8))
    ax.set_xticks(theta)
    ax.set_xticklabels(
        [font.pick(_one_line(dimension_label(row), 22), _one_line(row.code, 22)) for row in dims],
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


def dataset_bars(doc: ReportDocument, path: Path) -> Path:
    """Writes a PNG of horizontal bars per dataset, coloured by dimension, with interval whiskers.

    The height grows with the number of datasets; see `bars_size_px`.
    """
    from matplotlib.patches import Patch

    font = _chart_font()
    rows = grouped_datasets(doc)
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
            font.pick(_one_line(dataset_label(r)), _one_line(r.code), f"#{number[r.code]}")
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
        f"Dataset scores with {level(doc)} intervals",
        fontproperties=font.props(12),
        parse_math=False,
    )
    legend = ax.legend(
        handles=[
            Patch(color=colour[d.code], label=font.pick(_one_line(dimension_label(d)), d.code))
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
