"""Renders one submission's report to files: JSON, CSV, PNG charts, Markdown and HTML.

Layout (module -> concern): `document` the validated `ReportDocument` and its JSON in/out;
`rows` the one row builder (each section's table as typed cells, plus the text the pages
share); `markdown`, `csv_files` and `html_page` the three renderers of those rows; `charts` the
PNG radar and bar charts; `files` writes them all into a folder.

Everything here is pure apart from `radar_chart`, `dataset_bars` and `write_report`, which write
into the path or folder they are given (and `to_html`, which reads the chart files it is handed).
"""

from medbench_client.render.charts import (
    BARS_FILE,
    BARS_WIDTH_PX,
    CHART_DPI,
    RADAR_FILE,
    RADAR_SIZE_PX,
    bars_size_px,
    cjk_font_path,
    dataset_bars,
    radar_chart,
)
from medbench_client.render.csv_files import to_csv
from medbench_client.render.document import (
    SCHEMA,
    DatasetRow,
    DimensionRow,
    ItemResult,
    ReportDocument,
    from_json,
    to_json,
)
from medbench_client.render.files import write_report
from medbench_client.render.html_page import to_html
from medbench_client.render.markdown import to_markdown
from medbench_client.render.rows import fmt_interval, fmt_item_score, fmt_score, partial_text

__all__ = [
    "BARS_FILE",
    "BARS_WIDTH_PX",
    "CHART_DPI",
    "RADAR_FILE",
    "RADAR_SIZE_PX",
    "SCHEMA",
    "DatasetRow",
    "DimensionRow",
    "ItemResult",
    "ReportDocument",
    "bars_size_px",
    "cjk_font_path",
    "dataset_bars",
    "fmt_interval",
    "fmt_item_score",
    "fmt_score",
    "from_json",
    "partial_text",
    "radar_chart",
    "to_csv",
    "to_html",
    "to_json",
    "to_markdown",
    "write_report",
]
