"""The report's one row builder: every renderer shows the same cells of the same rows."""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Callable

import pytest

from medbench_client.render import ReportDocument, to_csv, to_html, to_markdown
from medbench_client.render.rows import (
    Count,
    Interval,
    ItemScore,
    Score,
    Table,
    Text,
    Verbatim,
    dataset_table,
    dimension_table,
    item_table,
    lineage_table,
)
from tests.libs.client.test_render import make_doc

_MD_ESCAPED = re.compile(r"\\([\\`*_\[\]|~])")


@pytest.fixture(scope="module")
def doc() -> ReportDocument:
    return make_doc()


def _shown(table: Table) -> list[list[str]]:
    return [[" ".join(cell.text.split()) for cell in row] for row in table.rows]


def _markdown_table(text: str, section: str) -> tuple[list[str], list[str], list[list[str]]]:
    """(titles, alignments, rows) of the table under `## section`, unescaped."""
    lines = text.splitlines()
    start = lines.index(f"## {section}") + 2
    block = []
    for line in lines[start:]:
        if not line.startswith("| "):
            break
        block.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])

    def plain(cell: str) -> str:
        if cell.startswith("`") and cell.endswith("`"):
            return cell[1:-1]
        return html.unescape(_MD_ESCAPED.sub(r"\1", cell))

    return block[0], block[1], [[plain(c) for c in row] for row in block[2:]]


def _html_table(page: str, caption: str) -> tuple[list[str], list[int], list[list[str]]]:
    """(titles, positions of the numeric cells, rows) of the table with that caption."""
    body = page.split(f"<caption>{html.escape(caption)}</caption>", 1)[1].split("</table>", 1)[0]
    titles = [html.unescape(t) for t in re.findall(r'<th scope="col">(.*?)</th>', body)]
    rows, numeric = [], set()
    for tr in re.findall(r"<tbody>.*", body, re.S)[0].split("<tr>")[1:]:
        cells = re.findall(r"<t([hd])([^>]*)>(.*?)</t[hd]>", tr)
        numeric |= {i for i, (_, attrs, _) in enumerate(cells) if 'class="num"' in attrs}
        rows.append([html.unescape(text) for _, _, text in cells])
    return titles, sorted(numeric), rows


@pytest.mark.parametrize("build", [dimension_table, dataset_table, lineage_table])
def test_markdown_and_html_show_the_same_cells_of_each_table(
    doc: ReportDocument, build: Callable[[ReportDocument], Table]
) -> None:
    table = build(doc)
    section = {dimension_table: "Dimensions", dataset_table: "Datasets"}.get(build, "Lineage")
    titles, align, md_rows = _markdown_table(to_markdown(doc), section)
    h_titles, h_numeric, h_rows = _html_table(to_html(doc, {}), table.caption)
    assert titles == h_titles == table.titles
    assert md_rows == _shown(table)
    assert h_rows == [[cell.text for cell in row] for row in table.rows]
    assert len(md_rows) == len(table.rows) > 0
    # The same columns are right-aligned in both.
    assert {i for i, a in enumerate(align) if a == "---:"} == set(h_numeric) == table.numeric


@pytest.mark.parametrize(
    ("build", "name"), [(dataset_table, "datasets.csv"), (item_table, "items.csv")]
)
def test_csv_holds_the_same_cells_one_value_per_column(
    doc: ReportDocument, build: Callable[[ReportDocument], Table], name: str
) -> None:
    table = build(doc)
    rows = list(csv.reader(io.StringIO(to_csv(doc)[name], newline="")))
    assert rows[0] == table.csv_header
    assert len(rows) - 1 == len(table.rows) > 0
    for written, row in zip(rows[1:], table.rows, strict=True):
        expected = [value for cell in row for value in cell.fields]
        assert len(written) == len(expected) == len(table.csv_header)
        for got, want in zip(written, expected, strict=True):
            # Only text that a spreadsheet would run as a formula is changed, by a leading "'".
            assert got == want or (got == "'" + want and want[:1] in "=+-@")


def test_an_interval_is_one_cell_shown_and_two_csv_columns() -> None:
    cell = Interval(68.14, 76.36)
    assert cell.text == "[68.1, 76.4]"
    assert cell.fields == ("68.1", "76.4")
    assert (Score(79.75).text, Count(3).text, ItemScore(1 / 3).text) == ("79.8", "3", "0.3333")
    assert not Text("x").numeric and Score(1.0).numeric and Interval(0, 1).numeric


def test_the_tables_are_built_from_the_document(doc: ReportDocument) -> None:
    dims = dimension_table(doc)
    assert [row[0] for row in dims.rows] == [Text(d.code) for d in doc.dimensions]
    assert dims.csv_header == ["dimension", "name", "score", "low", "high", "n_datasets"]
    assert dims.titles[3] == "95% interval"
    datasets = dataset_table(doc)
    medtreat = next(row for row in datasets.rows if row[0] == Text("MedTreat"))
    assert medtreat[1] == Text("")  # no display name
    assert medtreat[4] == Interval(60.0, 60.0)
    items = item_table(doc)
    assert [row[0].text for row in items.rows] == [i.item_id for i in doc.items]
    lineage = lineage_table(doc)
    assert [row[0].text for row in lineage.rows] == sorted(doc.lineage)
    assert all(isinstance(row[1], Verbatim) for row in lineage.rows)


def test_markdown_dimensions_lead_with_the_code_like_html() -> None:
    """The one named change of the split: the Markdown dimension table listed the (often
    empty) display name first; it now leads with the code, as the HTML table does."""
    doc = make_doc()
    titles, _, rows = _markdown_table(to_markdown(doc), "Dimensions")
    assert titles[:2] == ["Code", "Dimension"]
    assert [row[0] for row in rows] == [d.code for d in doc.dimensions]
