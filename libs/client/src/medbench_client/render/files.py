"""Writes every rendering of one report into a folder."""

from __future__ import annotations

from pathlib import Path

from medbench_client.render.charts import BARS_FILE, RADAR_FILE, dataset_bars, radar_chart
from medbench_client.render.csv_files import to_csv
from medbench_client.render.document import ReportDocument, to_json
from medbench_client.render.html_page import to_html
from medbench_client.render.markdown import to_markdown


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
