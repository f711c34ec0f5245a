"""What every rendering of a report shows, built once: each section's table as typed rows of
cells, and the text the Markdown and HTML pages share (meta lines, chart alt texts, the reading
guide).

Cells hold values, not markup: each renderer (Markdown, CSV, HTML) escapes text its own way and
shows numbers as `Cell.text` (or `Cell.fields`, for CSV's one value per column).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from medbench_client.render.document import DatasetRow, DimensionRow, ReportDocument

_RULE_HELP = {
    "mean": "mean of the item scores",
    "all_permutations": "a question counts only when every option order is answered correctly",
}


def fmt_score(value: float) -> str:
    """A 0-100 score as displayed everywhere: one decimal."""
    return f"{value:.1f}"


def fmt_interval(low: float, high: float) -> str:
    """An interval as displayed everywhere, e.g. "[68.1, 76.4]"."""
    return f"[{low:.1f}, {high:.1f}]"


def fmt_item_score(value: float) -> str:
    """A 0-1 item score as displayed in items.csv: four decimals."""
    return f"{value:.4f}"


def level(doc: ReportDocument) -> str:
    """The intervals' coverage as shown, e.g. "95%"."""
    return f"{doc.interval_level * 100:g}%"


def dimension_label(row: DimensionRow) -> str:
    return f"{row.name} ({row.code})" if row.name else row.code


def dataset_label(row: DatasetRow) -> str:
    return f"{row.name} ({row.code})" if row.name else row.code


def grouped_datasets(doc: ReportDocument) -> list[DatasetRow]:
    """The datasets in the order of their dimensions (stable within a dimension)."""
    order = {row.code: i for i, row in enumerate(doc.dimensions)}
    return sorted(doc.datasets, key=lambda row: order[row.dimension])


# Cells ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """Free text (a code, a name, a model's answer): every format escapes it."""

    value: str
    numeric: ClassVar[bool] = False

    @property
    def text(self) -> str:
        return self.value

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.value,)


@dataclass(frozen=True)
class Verbatim(Text):
    """Text that identifies something (a digest, a version): shown as code where the format has
    code spans, so that it is copied exactly."""


@dataclass(frozen=True)
class Score:
    """A 0-100 score."""

    value: float
    numeric: ClassVar[bool] = True

    @property
    def text(self) -> str:
        return fmt_score(self.value)

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.text,)


@dataclass(frozen=True)
class Interval:
    """An interval of 0-100 scores: one cell when shown, two columns (low, high) in CSV."""

    low: float
    high: float
    numeric: ClassVar[bool] = True

    @property
    def text(self) -> str:
        return fmt_interval(self.low, self.high)

    @property
    def fields(self) -> tuple[str, ...]:
        return (fmt_score(self.low), fmt_score(self.high))


@dataclass(frozen=True)
class Count:
    value: int
    numeric: ClassVar[bool] = True

    @property
    def text(self) -> str:
        return str(self.value)

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.text,)


@dataclass(frozen=True)
class ItemScore:
    """A 0-1 item score."""

    value: float
    numeric: ClassVar[bool] = True

    @property
    def text(self) -> str:
        return fmt_item_score(self.value)

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.text,)


Cell = Text | Score | Interval | Count | ItemScore


@dataclass(frozen=True)
class Column:
    title: str
    """The heading shown in Markdown and HTML."""
    csv: tuple[str, ...]
    """The CSV header(s): one per value in the column's `Cell.fields`."""
    numeric: bool = False
    """Right-aligned."""


@dataclass(frozen=True)
class Table:
    caption: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...]
    """The first cell of a row names it (HTML makes it the row's header)."""

    @property
    def titles(self) -> list[str]:
        return [column.title for column in self.columns]

    @property
    def csv_header(self) -> list[str]:
        return [name for column in self.columns for name in column.csv]

    @property
    def numeric(self) -> set[int]:
        """Positions of the right-aligned columns."""
        return {i for i, column in enumerate(self.columns) if column.numeric}


# Tables -----------------------------------------------------------------------------------


def _interval_column(doc: ReportDocument) -> Column:
    return Column(f"{level(doc)} interval", ("low", "high"), numeric=True)


def dimension_table(doc: ReportDocument) -> Table:
    return Table(
        "Scores per dimension (unweighted mean of its datasets)",
        (
            Column("Code", ("dimension",)),
            Column("Dimension", ("name",)),
            Column("Score", ("score",), numeric=True),
            _interval_column(doc),
            Column("Datasets", ("n_datasets",), numeric=True),
        ),
        tuple(
            (
                Text(row.code),
                Text(row.name or ""),
                Score(row.score),
                Interval(row.low, row.high),
                Count(row.n_datasets),
            )
            for row in doc.dimensions
        ),
    )


def dataset_table(doc: ReportDocument) -> Table:
    return Table(
        "Scores per dataset",
        (
            Column("Dataset", ("dataset",)),
            Column("Name", ("name",)),
            Column("Dimension", ("dimension",)),
            Column("Score", ("score",), numeric=True),
            _interval_column(doc),
            Column("Items", ("n_items",), numeric=True),
            Column("Units", ("n_units",), numeric=True),
            Column("Rule", ("rule",)),
            Column("Metric", ("metric",)),
            Column("Item mean", ("item_mean",), numeric=True),
        ),
        tuple(
            (
                Text(row.code),
                Text(row.name or ""),
                Text(row.dimension),
                Score(row.score),
                Interval(row.low, row.high),
                Count(row.n_items),
                Count(row.n_units),
                Text(row.rule),
                Text(row.metric),
                Score(row.item_mean) if row.item_mean is not None else Text(""),
            )
            for row in doc.datasets
        ),
    )


def item_table(doc: ReportDocument) -> Table:
    return Table(
        "Per-item results (the model's parsed answers and their scores)",
        (
            Column("Item", ("item_id",)),
            Column("Dataset", ("dataset",)),
            Column("Score", ("score",), numeric=True),
            Column("Parsed answer", ("parsed_answer",)),
        ),
        tuple(
            (Text(i.item_id), Text(i.dataset), ItemScore(i.score), Text(i.parsed_answer))
            for i in doc.items
        ),
    )


def lineage_table(doc: ReportDocument) -> Table:
    return Table(
        "Inputs and code versions behind these numbers",
        (Column("Input", ("input",)), Column("Value", ("value",))),
        tuple((Text(key), Verbatim(value)) for key, value in sorted(doc.lineage.items())),
    )


# Shared text ------------------------------------------------------------------------------


def meta(doc: ReportDocument) -> list[tuple[str, str]]:
    """The report's header lines: (label, value)."""
    return [
        ("Submission", doc.submission_id),
        ("Model", doc.model),
        ("Track", doc.track),
        ("Board", doc.board),
        ("Item pool", doc.pool_id),
        ("Created", doc.created_at.isoformat()),
    ]


def partial_text(doc: ReportDocument) -> str:
    """The mark of a partial report, with what it misses ("" for a complete report)."""
    if not doc.partial:
        return ""
    present = len(doc.dimensions)
    covered = (
        f"{present} of {present + len(doc.missing_dimensions)} dimensions"
        if doc.missing_dimensions
        else f"all {present} dimensions, {len(doc.missing_datasets)} datasets missing"
    )
    dimensions = ", ".join(doc.missing_dimensions) or "none"
    return (
        f"PARTIAL REPORT ({covered}): no scored item in dimensions: {dimensions}; datasets: "
        f"{', '.join(doc.missing_datasets)}. The overall score is the mean of the {present} "
        "dimensions present: it is not comparable with a complete report's, and leaderboards "
        "list this submission after the complete ones, without a rank."
    )


def equated_text(doc: ReportDocument) -> str:
    return fmt_score(doc.equated) if doc.equated is not None else "n/a"


def radar_alt(doc: ReportDocument) -> str:
    parts = ", ".join(f"{row.code} {fmt_score(row.score)}" for row in doc.dimensions)
    return f"Radar chart of dimension scores (0-100): {parts}"


def bars_alt(doc: ReportDocument) -> str:
    parts = ", ".join(
        f"{row.code} {fmt_score(row.score)} {fmt_interval(row.low, row.high)}"
        for row in grouped_datasets(doc)
    )
    return f"Bar chart of dataset scores with {level(doc)} intervals: {parts}"


def how_to_read(doc: ReportDocument) -> list[str]:
    """The reading guide's paragraphs."""
    rules = sorted({row.rule for row in doc.datasets})
    rule_text = "; ".join(f"{rule}: {_RULE_HELP[rule]}" for rule in rules if rule in _RULE_HELP)
    pooled = any("micro_f1" in row.metric.split("+") for row in doc.datasets)
    item_mean = any(row.item_mean is not None for row in doc.datasets)
    return [
        "Scores run from 0 to 100. "
        + (f"A dataset's score follows its rule ({rule_text}). " if rule_text else "")
        + (
            "Where the metric has a micro_f1 component, that component is the F1 of the "
            "true and false positives and negatives pooled over the dataset's items. "
            if pooled
            else ""
        )
        + (
            "The item mean is the mean of the per-item scores: for shuffled-option sets the "
            "per-permutation accuracy. "
            if item_mean
            else ""
        )
        + "A dimension's score is the unweighted mean of its datasets, and the overall score "
        "is the unweighted mean of the dimensions, so every dimension weighs the same."
        + (
            " In this partial report, missing datasets are left out of their dimension's mean "
            "and missing dimensions out of the overall: they are not counted as zeros."
            if doc.partial
            else ""
        ),
        *(
            [
                "The item pool is live (hidden), so these are its live numbers: each dataset's "
                "score and item mean are rounded to a step of at least three of its scoring "
                "units ("
                + ", ".join(f"{name} {step:g}" for name, step in doc.live_steps)
                + " points), and its interval is the Wilson interval of the shown score widened "
                "by half a step; dimensions and the overall are computed from the shown scores. "
                "Finer numbers would let answers be tuned to the hidden keys. The exact report "
                "is shown once the pool is disclosed."
            ]
            if doc.live_steps
            else []
        ),
        f"The range in brackets is the {level(doc)} interval: the scores this model could "
        "plausibly have got on other samples of items. When the intervals of two scores overlap, "
        "the difference between them may be noise. The equated score places the overall score "
        "on the common scale shared by all item pools, so that submissions scored on different "
        "pools can be compared; it is n/a when no calibration was applied.",
        (
            f"Per-item results are withheld: {doc.items_withheld.rstrip('.')}. Reference "
            if doc.items_withheld
            else "Per-item results (your model's parsed answers and their scores) are in "
            "items.csv; reference "
        )
        + "answers are not published. The lineage table identifies the item pool, prompts, "
        "judges and code that produced these numbers.",
    ]
