"""Physician ratings from a CSV or JSONL file, as maintainers import them.

One rating per CSV row (a header row names the columns) or per JSONL line (an object). Fields:

    item_id     required  any stable id of the rated item
    dataset     required* dataset code: chooses the rubric unless rubric_id is given
    rubric_id   optional  rubric id (empty: the dataset's)
    dimension   optional  capability dimension (per-dimension agreement)
    question    required  the prompt the answer answers
    reference   optional  reference answer
    key_points  optional  JSONL: a list of strings; CSV: a JSON list, or points separated by |
    answer      required  the rated answer
    score       required  the physician's overall score on the rubric's scale
    rater_id    required  pseudonymous physician id
    criteria    optional  JSONL: {"<criterion name>": score, ...}; CSV: one column
                          "criterion:<criterion name>" per criterion (all or none)

(*) dataset or rubric_id. The service checks the rest (rubric, scale, criteria) per rating and
reports refusals by position; this module only refuses what cannot be read.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from typing import Any

from medbench.judge.v1 import judge_service_pb2

FIELDS = (
    "item_id",
    "dataset",
    "rubric_id",
    "dimension",
    "question",
    "reference",
    "key_points",
    "answer",
    "score",
    "rater_id",
    "criteria",
)
CRITERION_PREFIX = "criterion:"
MAX_ROWS = 100_000


@dataclass(frozen=True)
class RowError:
    """A row that cannot be read: 1-based row (CSV: data rows after the header; JSONL: lines)."""

    row: int
    field: str
    reason: str


class RatingsFileError(ValueError):
    """The file as a whole cannot be read (format, encoding, header, size)."""


def read_ratings(
    name: str, data: bytes
) -> tuple[list[judge_service_pb2.PhysicianRating], list[int], list[RowError]]:
    """The ratings of a .csv or .jsonl file's bytes, the row of each, and the rows that could
    not be read."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RatingsFileError(f"the file is not UTF-8 text (byte {exc.start})") from exc
    lower = name.lower()
    if lower.endswith(".csv"):
        rows = _csv_rows(text)
    elif lower.endswith((".jsonl", ".ndjson")):
        rows = _jsonl_rows(text)
    else:
        raise RatingsFileError("the file name must end in .csv or .jsonl")
    ratings: list[judge_service_pb2.PhysicianRating] = []
    numbers: list[int] = []
    errors: list[RowError] = []
    for number, row in rows:
        if isinstance(row, RowError):
            errors.append(row)
            continue
        try:
            ratings.append(_rating(row))
            numbers.append(number)
        except _Bad as bad:
            errors.append(RowError(number, bad.field, bad.reason))
    if len(ratings) + len(errors) > MAX_ROWS:
        raise RatingsFileError(f"more than {MAX_ROWS:,} ratings in one file")
    if not ratings and not errors:
        raise RatingsFileError("the file holds no ratings")
    return ratings, numbers, errors


class _Bad(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _csv_rows(text: str) -> list[tuple[int, dict[str, Any] | RowError]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    unknown = [
        h
        for h in header
        if h not in FIELDS and not h.startswith(CRITERION_PREFIX) or h == "criteria"
    ]
    if unknown:
        raise RatingsFileError(f"unknown column(s) {', '.join(map(repr, unknown))}")
    out: list[tuple[int, dict[str, Any] | RowError]] = []
    for number, raw in enumerate(reader, start=1):
        if None in raw:
            out.append((number, RowError(number, "", "more cells than header columns")))
            continue
        row: dict[str, Any] = {k: v for k, v in raw.items() if not k.startswith(CRITERION_PREFIX)}
        points = (row.get("key_points") or "").strip()
        if points.startswith("["):
            try:
                row["key_points"] = json.loads(points)
            except json.JSONDecodeError:
                out.append((number, RowError(number, "key_points", "not a JSON list")))
                continue
        else:
            row["key_points"] = [p.strip() for p in points.split("|") if p.strip()]
        criteria = {
            k[len(CRITERION_PREFIX) :]: v
            for k, v in raw.items()
            if k.startswith(CRITERION_PREFIX) and (v or "").strip()
        }
        row["criteria"] = criteria
        out.append((number, row))
    return out


def _jsonl_rows(text: str) -> list[tuple[int, dict[str, Any] | RowError]]:
    out: list[tuple[int, dict[str, Any] | RowError]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            out.append((number, RowError(number, "", f"not JSON ({exc.msg})")))
            continue
        if not isinstance(row, dict):
            out.append((number, RowError(number, "", "not a JSON object")))
            continue
        unknown = sorted(set(row) - set(FIELDS))
        if unknown:
            out.append((number, RowError(number, unknown[0], "unknown field")))
            continue
        out.append((number, row))
    return out


def _text(row: dict[str, Any], name: str) -> str:
    value = row.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Bad(name, "must be text")
    return value


def _score(value: Any, field: str) -> float:
    if isinstance(value, bool):
        raise _Bad(field, "must be a number")
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise _Bad(field, f"{value!r} is not a number") from None
    if not math.isfinite(score):
        raise _Bad(field, "must be a finite number")
    return score


def _rating(row: dict[str, Any]) -> judge_service_pb2.PhysicianRating:
    for name in ("item_id", "question", "answer", "rater_id"):
        if not _text(row, name).strip():
            raise _Bad(name, "is required")
    if not _text(row, "dataset").strip() and not _text(row, "rubric_id").strip():
        raise _Bad("dataset", "dataset or rubric_id is required")
    if row.get("score") in (None, ""):
        raise _Bad("score", "is required")
    points = row.get("key_points") or []
    if not isinstance(points, list) or not all(isinstance(p, str) for p in points):
        raise _Bad("key_points", "must be a list of texts")
    criteria = row.get("criteria") or {}
    if not isinstance(criteria, dict):
        raise _Bad("criteria", "must be an object of criterion name to score")
    return judge_service_pb2.PhysicianRating(
        item_id=_text(row, "item_id"),
        dataset=_text(row, "dataset"),
        rubric_id=_text(row, "rubric_id"),
        dimension=_text(row, "dimension"),
        question=_text(row, "question"),
        reference=_text(row, "reference"),
        key_points=points,
        answer=_text(row, "answer"),
        score=_score(row["score"], "score"),
        rater_id=_text(row, "rater_id"),
        criteria=[
            judge_service_pb2.CriterionScore(name=name, score=_score(value, f"criterion:{name}"))
            for name, value in criteria.items()
        ],
    )
