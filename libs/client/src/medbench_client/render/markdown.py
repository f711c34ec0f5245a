"""The report as Markdown: the shared tables and text, every piece of text made inert."""

from __future__ import annotations

import html
import posixpath
import re

from medbench_client.render.charts import BARS_FILE, RADAR_FILE
from medbench_client.render.document import ReportDocument
from medbench_client.render.rows import (
    Cell,
    Table,
    Text,
    Verbatim,
    bars_alt,
    dataset_table,
    dimension_table,
    equated_text,
    fmt_interval,
    fmt_score,
    how_to_read,
    level,
    lineage_table,
    meta,
    partial_text,
    radar_alt,
)

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_MD_CODE_SAFE = re.compile(r"[\w.:/@+=,-]+")


def _md(text: str) -> str:
    """Inert Markdown text: HTML escaped (renderers pass raw HTML) and syntax backslashed."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(" ".join(text.split()), quote=False))


def _md_cell(cell: Cell) -> str:
    if isinstance(cell, Verbatim) and _MD_CODE_SAFE.fullmatch(cell.value):
        return f"`{cell.value}`"
    return _md(cell.text) if isinstance(cell, Text) else cell.text


def _md_table(table: Table) -> list[str]:
    right = table.numeric
    align = ["---:" if i in right else "---" for i in range(len(table.columns))]
    return [
        "| " + " | ".join(table.titles) + " |",
        "| " + " | ".join(align) + " |",
        *("| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in table.rows),
    ]


def _overall_line(doc: ReportDocument) -> str:
    return (
        f"{fmt_score(doc.overall)} ({level(doc)} interval "
        f"{fmt_interval(doc.overall_low, doc.overall_high)}); equated score {equated_text(doc)}"
    )


def to_markdown(doc: ReportDocument, chart_dir_rel: str = ".") -> str:
    """A Markdown report; charts are linked as `<chart_dir_rel>/radar.png` and `datasets.png`."""

    def chart(name: str) -> str:
        return name if chart_dir_rel in ("", ".") else posixpath.join(chart_dir_rel, name)

    lines = [
        f"# MedBench report: {_md(doc.model)}",
        "",
        *(f"- **{key}:** {_md(value)}" for key, value in meta(doc)),
        "",
        f"**Overall score:** {_overall_line(doc)}",
        "",
        *((f"> **{_md(partial_text(doc))}**", "") if doc.partial else ()),
        "## Dimensions",
        "",
        *_md_table(dimension_table(doc)),
        "",
        "## Datasets",
        "",
        *_md_table(dataset_table(doc)),
        "",
        "## Charts",
        "",
        f"![{_md(radar_alt(doc))}]({chart(RADAR_FILE)})",
        "",
        f"![{_md(bars_alt(doc))}]({chart(BARS_FILE)})",
        "",
        "## Lineage",
        "",
        *_md_table(lineage_table(doc)),
        "",
        "## How to read this",
        "",
        *(line for paragraph in how_to_read(doc) for line in (_md(paragraph), "")),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"
