"""The report as one self-contained HTML page: inline CSS, charts embedded as data URLs."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from pathlib import Path

from medbench_client.render.document import ReportDocument
from medbench_client.render.rows import (
    Table,
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

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","PingFang SC",
"Microsoft YaHei",sans-serif;margin:2rem auto;max-width:68rem;padding:0 1rem;color:#1d1d1f;
line-height:1.5}
h1{font-size:1.6rem;margin-bottom:.3rem}h2{font-size:1.2rem;margin-top:2rem}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.1rem 1rem;margin:0}
dl.meta dt{font-weight:600}dl.meta dd{margin:0}
.overall{font-size:1.25rem;margin:1rem 0;padding:.8rem 1rem;background:#f2f6fb;
border-left:4px solid #1f77b4}
.partial{margin:1rem 0;padding:.8rem 1rem;background:#fff8e6;border-left:4px solid #9a6700}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.92rem}
caption{text-align:left;font-weight:600;padding:.3rem 0}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;vertical-align:top}
thead th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1rem 0}img{max-width:100%;height:auto}figcaption{font-size:.85rem;color:#555}
""".strip()


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _html_table(table: Table) -> list[str]:
    """A table whose first column heads its row; all cells are escaped here."""
    numeric = table.numeric
    out = [
        "<table>",
        f"<caption>{_e(table.caption)}</caption>",
        "<thead><tr>"
        + "".join(f'<th scope="col">{_e(h)}</th>' for h in table.titles)
        + "</tr></thead>",
        "<tbody>",
    ]
    for row in table.rows:
        cells = [f'<th scope="row">{_e(row[0].text)}</th>']
        cells += [
            f'<td class="num">{_e(cell.text)}</td>' if i in numeric else f"<td>{_e(cell.text)}</td>"
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
    charts = [
        (key, alt, caption)
        for key, alt, caption in (
            ("radar", radar_alt(doc), "Dimension scores (line) and intervals (band)."),
            ("datasets", bars_alt(doc), "Dataset scores by dimension, with interval whiskers."),
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
        *(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in meta(doc)),
        "</dl>",
        f'<p class="overall"><strong>Overall score: {_e(fmt_score(doc.overall))}</strong> '
        f"({_e(level(doc))} interval {_e(fmt_interval(doc.overall_low, doc.overall_high))}); "
        f"equated score {_e(equated_text(doc))}</p>",
        *(
            [f'<p class="partial" id="partial"><strong>{_e(partial_text(doc))}</strong></p>']
            if doc.partial
            else []
        ),
        "<section>",
        "<h2>Dimensions</h2>",
        *_html_table(dimension_table(doc)),
        "</section>",
        "<section>",
        "<h2>Datasets</h2>",
        *_html_table(dataset_table(doc)),
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
        *_html_table(lineage_table(doc)),
        "</section>",
        "<section>",
        "<h2>How to read this</h2>",
        *(f"<p>{_e(paragraph)}</p>" for paragraph in how_to_read(doc)),
        "</section>",
        "</main>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"
