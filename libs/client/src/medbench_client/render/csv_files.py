"""The report's spreadsheets: datasets.csv and items.csv, from the shared tables."""

from __future__ import annotations

import csv
import io

from medbench_client.render.document import ReportDocument
from medbench_client.render.rows import Table, Text, dataset_table, item_table

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    """Neutralises spreadsheet formulas: model output like "=HYPERLINK(...)" stays text."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def table_csv(table: Table) -> str:
    """One table as RFC 4180 text: CRLF rows, quoted where needed, text cells formula-safe."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow(table.csv_header)
    writer.writerows(
        [_cell(value) if isinstance(cell, Text) else value for cell in row for value in cell.fields]
        for row in table.rows
    )
    return out.getvalue()


def to_csv(doc: ReportDocument) -> dict[str, str]:
    """ "datasets.csv" and "items.csv" as RFC 4180 text (CRLF rows, quoted where needed); no
    "items.csv" when the per-item results are withheld (a live pool: aggregates only).

    Scores are written as displayed (0-100 with one decimal; item scores 0-1 with four). Text
    cells that a spreadsheet would run as a formula are prefixed with "'".
    """
    files = {"datasets.csv": table_csv(dataset_table(doc))}
    if not doc.items_withheld:
        files["items.csv"] = table_csv(item_table(doc))
    return files
