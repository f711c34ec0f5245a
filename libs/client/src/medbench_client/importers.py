"""Readers that turn task-bank files into import rows, reporting each bad line instead of stopping.

Pure Python and the standard library only: the client runs these before anything reaches the
server, so a partner or an admin sees every problem of a file, by line, in one pass.

Error lines are 1-based; line 0 means the whole file (it cannot be read). A mapped column missing
from a CSV header is one error at the header line, and no rows. An empty ``LineError.field``
means the whole line (not UTF-8, not JSON, ...).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ImportRow:
    """One task as read from a bank file, before the server resolves its dataset and format."""

    file: str
    line: int
    """1-based line where the row starts."""
    item_id: str
    source: str
    """Dataset tag as found in the file (e.g. "MedExam_V4"); "" when the row names a dataset."""
    dataset: str
    """Dataset name; "" when only a source tag is known (the server resolves it)."""
    group_id: str
    """Rows sharing a group_id are option-order permutations of one question."""
    question: str
    answer_format: str
    """"" when the server derives it from the dataset."""
    reference: tuple[str, ...]
    """Raw reference strings; empty when the file gives no key (the item stays unkeyed)."""
    image_paths: tuple[str, ...] = ()
    messages: tuple[tuple[str, str], ...] = ()
    """(role, content) pairs of a multi-turn prompt; empty for single-turn."""
    specialties: tuple[str, ...] = ()
    provenance: str = ""
    licence: str = ""


@dataclass(frozen=True)
class LineError:
    """What is wrong with one line (or, at line 0, with the whole file)."""

    file: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class ReadResult:
    """The good rows of a read and the errors of the bad lines."""

    rows: tuple[ImportRow, ...]
    errors: tuple[LineError, ...]

    @classmethod
    def combine(cls, results: Iterable[ReadResult]) -> ReadResult:
        """Several reads (e.g. one per file) as one result, in the given order."""
        rows: list[ImportRow] = []
        errors: list[LineError] = []
        for result in results:
            rows.extend(result.rows)
            errors.extend(result.errors)
        return cls(tuple(rows), tuple(errors))


_CONSTANT_FIELDS = {"dataset": "constant_dataset", "answer_format": "constant_answer_format"}
_SPEC_KEYS = (
    "item_id",
    "question",
    "dataset",
    "source",
    "reference",
    "reference_separator",
    "answer_format",
    "group_id",
    "image_paths",
    "specialties",
    "messages",
)
# A comma starts a new entry only when "name=" follows, so a separator may itself be a comma
# ("reference_separator=,,dataset=:MedHG").
_SPEC_SPLIT = re.compile(r",(?=\s*\w+\s*=)")


@dataclass(frozen=True)
class FieldMapping:
    """Which column (CSV) or key (JSONL; dots reach nested keys: "other.id") holds each field.

    Required: item_id, question, and a dataset (a column, a constant, or a source-tag column that
    the server resolves). Unmapped optional fields are empty; group_id defaults to the item id.
    """

    item_id: str
    question: str
    dataset: str | None = None
    constant_dataset: str | None = None
    source: str | None = None
    """Column holding a dataset tag (e.g. "MedExam_V4") that the server resolves."""
    reference: str | None = None
    reference_separator: str | None = None
    """Splits a reference cell into several reference strings (e.g. "," for "A,C")."""
    answer_format: str | None = None
    constant_answer_format: str | None = None
    group_id: str | None = None
    image_paths: str | None = None
    """JSONL: a list or a single path; CSV: a JSON array or ';'-separated paths."""
    specialties: str | None = None
    """JSONL: a list (or ';'-separated string); CSV: ';'-separated."""
    messages: str | None = None
    """JSONL: a list of {"role", "content"}; CSV: the same as a JSON string."""

    def __post_init__(self) -> None:
        for name in ("item_id", "question"):
            if not getattr(self, name):
                raise ValueError(f"the mapping needs a column for {name}")
        if self.dataset and self.constant_dataset:
            raise ValueError("give dataset as a column or as a constant, not both")
        if not (self.dataset or self.constant_dataset or self.source):
            raise ValueError("the mapping needs a dataset (column or constant) or a source column")
        if self.answer_format and self.constant_answer_format:
            raise ValueError("give answer_format as a column or as a constant, not both")
        if self.reference_separator is not None and not self.reference_separator:
            raise ValueError("reference_separator is empty")
        if self.reference_separator and not self.reference:
            raise ValueError("reference_separator needs a reference column")

    @classmethod
    def from_spec(cls, spec: str) -> FieldMapping:
        """Parses "item_id=id,question=prompt,reference=answer,dataset=:MedExam".

        "name=column" maps a field to a column or key; "name=:value" gives dataset or
        answer_format a constant; reference_separator takes its value literally. A comma
        starts a new entry only when "name=" follows it, so "reference_separator=,," works.

        Raises:
            ValueError: naming the entry that is wrong.
        """
        values: dict[str, str] = {}
        given: set[str] = set()
        for entry in _SPEC_SPLIT.split(spec.strip()):
            key, sep, value = entry.partition("=")
            key = key.strip()
            if not sep:
                raise ValueError(f"{entry!r} is not name=column")
            if key not in _SPEC_KEYS:
                raise ValueError(f"unknown field {key!r} (known: {', '.join(_SPEC_KEYS)})")
            if key != "reference_separator":
                value = value.strip()
            if not value:
                raise ValueError(f"{key} has no value")
            if key != "reference_separator" and ("=" in value or "," in value):
                raise ValueError(f"{key}={value}: every ',' must start a name=column entry")
            if key in given:
                raise ValueError(f"{key} is given twice")
            given.add(key)
            if key != "reference_separator" and value.startswith(":"):
                if key not in _CONSTANT_FIELDS:
                    raise ValueError(f"{key} cannot be a constant (only dataset, answer_format)")
                if not value[1:]:
                    raise ValueError(f"the constant for {key} is empty")
                values[_CONSTANT_FIELDS[key]] = value[1:]
            else:
                values[key] = value
        for name in ("item_id", "question"):
            if name not in values:
                raise ValueError(f"the spec needs {name}=<column>")
        return cls(**values)

    def columns(self) -> list[tuple[str, str]]:
        """(field, column) for every field mapped to a column."""
        names = (
            "item_id",
            "question",
            "dataset",
            "source",
            "reference",
            "answer_format",
            "group_id",
            "image_paths",
            "specialties",
            "messages",
        )
        return [(name, col) for name in names if (col := getattr(self, name))]


def read_medbench_pool(
    pool_file: Path,
    gold_file: Path | None = None,
    *,
    provenance: str = "",
    licence: str = "",
) -> ReadResult:
    """Reads a MedBench answer-upload pool file, with its gold file when there is one.

    Each line is {"question", "answer", "other": {"id", "source"}, "img_path"?}. Lines sharing
    (source, id) are option-order permutations of one question: their item ids are
    "<source without _V4>-<id>-p<k>" (k counting that pair's lines in file order), and a pair with a
    single line is "<source without _V4>-<id>". The gold file has the same format with answers
    filled, line n answering pool line n; a pool line whose gold line is missing, for another
    question or blank is reported and left out, so a keyed import never gets a wrong key.
    Without a gold file the rows have no reference.
    """
    file = str(pool_file)
    text = _read_text(pool_file)
    if isinstance(text, LineError):
        return ReadResult((), (text,))
    parsed = [_parse_pool_line(file, n, obj) for n, obj in _json_lines(file, text)]
    gold: dict[int, dict[str, Any] | LineError] | None = None
    gold_name = str(gold_file)
    if gold_file is not None:
        gold_text = _read_text(gold_file)
        if isinstance(gold_text, LineError):
            return ReadResult((), (*(e for p in parsed for e in p.errors), gold_text))
        gold = dict(_json_lines(gold_name, gold_text))

    lines_per_key = Counter(p.key for p in parsed if p.key)
    seen: Counter[tuple[str, int]] = Counter()
    rows: list[ImportRow] = []
    errors: list[LineError] = []
    for p in parsed:
        if p.key:
            seen[p.key] += 1
        gold_line = gold.pop(p.line, None) if gold is not None else None
        if p.errors or not p.key:
            errors.extend(p.errors)
            continue
        reference: tuple[str, ...] = ()
        if gold is not None:
            answer = _gold_answer(gold_name, p, gold_line, errors)
            if answer is None:
                continue
            reference = (answer,)
        source, qid = p.key
        group_id = f"{_strip_version(source)}-{qid}"
        item_id = group_id if lines_per_key[p.key] == 1 else f"{group_id}-p{seen[p.key]}"
        rows.append(
            ImportRow(
                file=file,
                line=p.line,
                item_id=item_id,
                source=source,
                dataset="",
                group_id=group_id,
                question=p.question,
                answer_format="",
                reference=reference,
                image_paths=p.image_paths,
                provenance=provenance,
                licence=licence,
            )
        )
    for n in sorted(gold or {}):
        errors.append(LineError(gold_name, n, "", f"gold line {n} has no pool line"))
    return _without_duplicate_ids(rows, errors)


def read_jsonl_mapped(
    path: Path, mapping: FieldMapping, *, provenance: str = "", licence: str = ""
) -> ReadResult:
    """Reads a JSON Lines file, one task per line, through a field mapping."""
    file = str(path)
    text = _read_text(path)
    if isinstance(text, LineError):
        return ReadResult((), (text,))
    rows: list[ImportRow] = []
    errors: list[LineError] = []
    for n, obj in _json_lines(file, text):
        if isinstance(obj, LineError):
            errors.append(obj)
            continue
        row = _mapped_row(file, n, _key_getter(obj), mapping, False, provenance, licence)
        if isinstance(row, ImportRow):
            rows.append(row)
        else:
            errors.extend(row)
    return _without_duplicate_ids(rows, errors)


def read_csv_mapped(
    path: Path, mapping: FieldMapping, *, provenance: str = "", licence: str = ""
) -> ReadResult:
    """Reads a UTF-8 CSV file (BOM optional) with a header row, one task per row."""
    file = str(path)
    text = _read_text(path)
    if isinstance(text, LineError):
        return ReadResult((), (text,))
    reader = csv.reader(io.StringIO(text, newline=""))
    records = _csv_records(file, reader)
    errors: list[LineError] = []
    header: list[str] | None = None
    header_line = 0
    for n, cells in records:
        if isinstance(cells, LineError):
            errors.append(cells)
            continue
        header, header_line = [c.strip() for c in cells], n
        break
    if header is None:
        return ReadResult(
            (), (*errors, LineError(file, 1, "", "no header row (the file is empty)"))
        )
    counts = Counter(header)
    header_errors = []
    for target, col in mapping.columns():
        if counts[col] != 1:
            problem = "is not in the header" if not counts[col] else "is in the header twice"
            reason = f"column {_label(col, target)} {problem}"
            header_errors.append(LineError(file, header_line, col, reason))
    if header_errors:
        return ReadResult((), (*errors, *header_errors))

    index = {name: i for i, name in enumerate(header)}
    rows: list[ImportRow] = []
    for n, cells in records:
        if isinstance(cells, LineError):
            errors.append(cells)
            continue
        if len(cells) != len(header):
            reason = f"the row has {len(cells)} cells, the header has {len(header)}"
            errors.append(LineError(file, n, "", reason))
            continue
        if any(_BAD_BYTES.search(c) for c in cells):
            errors.append(LineError(file, n, "", "not UTF-8"))
            continue

        def get(key: str, cells: list[str] = cells) -> tuple[bool, Any]:
            return True, cells[index[key]]

        row = _mapped_row(file, n, get, mapping, True, provenance, licence)
        if isinstance(row, ImportRow):
            rows.append(row)
        else:
            errors.extend(row)
    return _without_duplicate_ids(rows, errors)


def summarise(result: ReadResult, *, max_locations: int = 3) -> str:
    """A short human summary: rows read, then errors grouped by reason with where they are."""
    files = {r.file for r in result.rows} | {e.file for e in result.errors}
    groups = len({(r.file, r.group_id) for r in result.rows})
    head = (
        f"{len(result.rows)} rows ({groups} questions) read from {len(files)} "
        f"file{'' if len(files) == 1 else 's'}, {len(result.errors)} "
        f"error{'' if len(result.errors) == 1 else 's'}"
    )
    by_kind: dict[str, list[LineError]] = {}
    for error in result.errors:
        by_kind.setdefault(_reason_kind(error.reason), []).append(error)
    lines = [head]
    for kind, errors in sorted(by_kind.items(), key=lambda item: -len(item[1])):
        shown = errors[0].reason if len(errors) == 1 else kind
        where = ", ".join(f"{e.file}:{e.line}" for e in errors[:max_locations])
        more = f" and {len(errors) - max_locations} more" if len(errors) > max_locations else ""
        lines.append(f"  {len(errors)} x {shown}: {where}{more}")
    return "\n".join(lines)


# Bytes that are not UTF-8 survive decoding as lone surrogates, so one bad line does not stop
# the file.
_BAD_BYTES = re.compile("[\udc80-\udcff]")
_VERSION_SUFFIX = re.compile(r"_[Vv]4$")
_DIGITS = re.compile(r"[0-9]+")
_ROLES = ("system", "user", "assistant")


def _read_text(path: Path) -> str | LineError:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return LineError(str(path), 0, "", f"cannot read the file: {exc.strerror or exc}")
    return data.decode("utf-8-sig", errors="surrogateescape")


def _json_lines(file: str, text: str) -> Iterator[tuple[int, dict[str, Any] | LineError]]:
    """(line number, object or error) for every non-blank line."""
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        if _BAD_BYTES.search(line):
            yield n, LineError(file, n, "", "not UTF-8")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield n, LineError(file, n, "", f"not JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(obj, dict):
            yield n, LineError(file, n, "", f"the line is {_kind(obj)}, not a JSON object")
            continue
        yield n, obj


def _csv_records(file: str, reader: Any) -> Iterator[tuple[int, list[str] | LineError]]:
    """(first line, cells or error) for every non-blank CSV record."""
    end = 0
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            end = reader.line_num
            yield start, LineError(file, start, "", f"not CSV: {exc}")
            continue
        end = reader.line_num
        if any(c.strip() for c in cells):
            yield start, cells


@dataclass
class _PoolLine:
    line: int
    key: tuple[str, int] | None = None
    question: str = ""
    image_paths: tuple[str, ...] = ()
    errors: list[LineError] = field(default_factory=list)


def _parse_pool_line(file: str, n: int, obj: dict[str, Any] | LineError) -> _PoolLine:
    p = _PoolLine(n)
    if isinstance(obj, LineError):
        p.errors.append(obj)
        return p
    key = _pool_key(file, n, obj, p.errors)
    question = obj.get("question")
    if "question" not in obj:
        p.errors.append(LineError(file, n, "question", "question is missing"))
    elif not isinstance(question, str):
        p.errors.append(LineError(file, n, "question", f"question is {_kind(question)}"))
    elif not question.strip():
        p.errors.append(LineError(file, n, "question", "question is empty"))
    else:
        p.question = question
    images = obj.get("img_path")
    if isinstance(images, str):
        if images.strip():
            p.image_paths = (images,)
        else:
            p.errors.append(LineError(file, n, "img_path", "img_path is an empty string"))
    elif isinstance(images, list):
        bad = [i for i, path in enumerate(images) if not (isinstance(path, str) and path.strip())]
        if bad:
            reason = f"img_path[{bad[0]}] is {_kind(images[bad[0]])}, not a path"
            p.errors.append(LineError(file, n, "img_path", reason))
        else:
            p.image_paths = tuple(images)
    elif images is not None:
        reason = f"img_path is {_kind(images)}, not a list of paths or one path"
        p.errors.append(LineError(file, n, "img_path", reason))
    for path in p.image_paths:
        problem = image_path_problem(path)
        if problem is not None:
            p.errors.append(LineError(file, n, "img_path", problem))
            break
    p.key = key
    return p


def image_path_problem(path: str) -> str | None:
    """Why an image path cannot name a file inside the images folder (absolute, a drive, a
    `..` segment, a control character), or None. The CLI also resolves what is left, symlinks
    included, before reading anything (medbench_client.cli.image_file)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return f"image path {path!r} holds a control character"
    if path.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", path):
        return f"image path {path!r} is absolute; paths are relative to the images folder"
    if ".." in path.replace("\\", "/").split("/"):
        return f"image path {path!r} leaves the images folder (a .. segment)"
    return None


def _pool_key(
    file: str, n: int, obj: Mapping[str, Any], errors: list[LineError]
) -> tuple[str, int] | None:
    """(other.source, other.id) of a pool or gold line, or None after reporting why not."""
    other = obj.get("other")
    if other is None:
        errors.append(LineError(file, n, "other", "other is missing"))
        return None
    if not isinstance(other, dict):
        errors.append(LineError(file, n, "other", f"other is {_kind(other)}, not an object"))
        return None
    source, qid = other.get("source"), other.get("id")
    before = len(errors)
    if source is None:
        errors.append(LineError(file, n, "other.source", "other.source is missing"))
    elif not isinstance(source, str):
        errors.append(LineError(file, n, "other.source", f"other.source is {_kind(source)}"))
    elif not source.strip():
        errors.append(LineError(file, n, "other.source", "other.source is empty"))
    if qid is None:
        errors.append(LineError(file, n, "other.id", "other.id is missing"))
    elif isinstance(qid, str) and _DIGITS.fullmatch(qid):
        qid = int(qid)
    elif isinstance(qid, bool) or not isinstance(qid, int) or qid < 0:
        reason = f"other.id is not a non-negative int (got {_show(qid)})"
        errors.append(LineError(file, n, "other.id", reason))
    # The type checks repeat what the errors above already say, for the type checker.
    if len(errors) > before or not isinstance(source, str) or not isinstance(qid, int):
        return None
    return source, qid


def _gold_answer(
    gold_name: str,
    p: _PoolLine,
    gold: dict[str, Any] | LineError | None,
    errors: list[LineError],
) -> str | None:
    """The gold answer for pool line p, or None after reporting why there is none."""
    assert p.key is not None
    n = p.line
    source, qid = p.key
    if gold is None:
        reason = f"gold line {n} is missing (the pool line is {source} id {qid})"
        errors.append(LineError(gold_name, n, "", reason))
        return None
    if isinstance(gold, LineError):
        errors.append(gold)
        return None
    before = len(errors)
    gold_key = _pool_key(gold_name, n, gold, errors)
    if gold_key is not None and gold_key != p.key:
        gold_source, gold_id = gold_key
        if gold_source != source:
            name, pool_side = "other.source", f"{source} id {qid}"
        else:
            name, pool_side = "other.id", f"id {qid}"
        reason = f"gold line {n} is for {gold_source} id {gold_id}, the pool line is {pool_side}"
        errors.append(LineError(gold_name, n, name, reason))
    elif gold_key is not None:
        # Permutations share (source, id); only the question text tells their option orders apart.
        gold_question = gold.get("question")
        if isinstance(gold_question, str) and gold_question.strip() != p.question.strip():
            reason = (
                f"gold line {n} is for {source} id {qid} but its question differs from the pool "
                "line (another option order?)"
            )
            errors.append(LineError(gold_name, n, "question", reason))
    answer = gold.get("answer")
    if answer is None:
        errors.append(LineError(gold_name, n, "answer", "gold answer is missing"))
    elif not isinstance(answer, str):
        reason = f"gold answer is {_kind(answer)}, not a string"
        errors.append(LineError(gold_name, n, "answer", reason))
    elif not answer.strip():
        errors.append(LineError(gold_name, n, "answer", "gold answer is empty"))
    if len(errors) > before:
        return None
    return str(answer)


def _strip_version(source: str) -> str:
    return _VERSION_SUFFIX.sub("", source)


def _key_getter(obj: Mapping[str, Any]) -> Callable[[str], tuple[bool, Any]]:
    """Looks a key up as written, then as a dotted path into nested objects."""

    def get(key: str) -> tuple[bool, Any]:
        if key in obj:
            return True, obj[key]
        value: Any = obj
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                return False, None
            value = value[part]
        return True, value

    return get


def _mapped_row(
    file: str,
    n: int,
    get: Callable[[str], tuple[bool, Any]],
    m: FieldMapping,
    from_csv: bool,
    provenance: str,
    licence: str,
) -> ImportRow | list[LineError]:
    errors: list[LineError] = []

    def fail(key: str, target: str, problem: str) -> None:
        errors.append(LineError(file, n, key, f"{_label(key, target)} {problem}"))

    def identifier(key: str, target: str, required: bool) -> str:
        found, value = get(key)
        if not found or value is None:
            if required:
                fail(key, target, "is missing")
            return ""
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            fail(key, target, f"is {_kind(value)}, not a string")
            return ""
        if required and not value.strip():
            fail(key, target, "is empty")
        return value.strip()

    item_id = identifier(m.item_id, "item_id", True)
    found, question = get(m.question)
    if not found or question is None:
        fail(m.question, "question", "is missing")
    elif not isinstance(question, str):
        fail(m.question, "question", f"is {_kind(question)}, not a string")
    elif not question.strip():
        fail(m.question, "question", "is empty")
    dataset = m.constant_dataset or (identifier(m.dataset, "dataset", True) if m.dataset else "")
    source_required = not (m.dataset or m.constant_dataset)
    source = identifier(m.source, "source", source_required) if m.source else ""
    if m.constant_answer_format:
        answer_format = m.constant_answer_format
    else:
        answer_format = (
            identifier(m.answer_format, "answer_format", False) if m.answer_format else ""
        )
    group_id = identifier(m.group_id, "group_id", False) if m.group_id else ""

    reference: tuple[str, ...] = ()
    if m.reference:
        found, value = get(m.reference)
        parsed = _references(value, m.reference_separator) if found else ()
        if isinstance(parsed, str):
            fail(m.reference, "reference", parsed)
        else:
            reference = parsed
    image_paths = _multi(get, m.image_paths, "image_paths", from_csv, fail, single_string=True)
    for path in image_paths:
        problem = image_path_problem(path)
        if problem is not None and m.image_paths:
            errors.append(LineError(file, n, m.image_paths, problem))
            break
    specialties = _multi(get, m.specialties, "specialties", from_csv, fail, single_string=False)
    messages: tuple[tuple[str, str], ...] = ()
    if m.messages:
        found, value = get(m.messages)
        parsed_messages = _messages(value, from_csv) if found else ()
        if isinstance(parsed_messages, str):
            fail(m.messages, "messages", parsed_messages)
        else:
            messages = parsed_messages

    if errors:
        return errors
    assert isinstance(question, str)
    return ImportRow(
        file=file,
        line=n,
        item_id=item_id,
        source=source,
        dataset=dataset,
        group_id=group_id or item_id,
        question=question,
        answer_format=answer_format,
        reference=reference,
        image_paths=image_paths,
        messages=messages,
        specialties=specialties,
        provenance=provenance,
        licence=licence,
    )


def _references(value: Any, separator: str | None) -> tuple[str, ...] | str:
    """Reference strings of a cell, or what is wrong with it."""
    if value is None:
        return ()
    if isinstance(value, str):
        if separator:
            return tuple(part.strip() for part in value.split(separator) if part.strip())
        return (value,) if value.strip() else ()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (str(value),)
    if isinstance(value, dict):
        # A structured key (e.g. the JSON record of SMDoc) is kept as the JSON text it stands for.
        return (json.dumps(value, ensure_ascii=False),)
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            return "is a list with items that are not strings"
        return tuple(v for v in value if v.strip())
    return f"is {_kind(value)}, not a string or a list of strings"


def _multi(
    get: Callable[[str], tuple[bool, Any]],
    key: str | None,
    target: str,
    from_csv: bool,
    fail: Callable[[str, str, str], None],
    *,
    single_string: bool,
) -> tuple[str, ...]:
    """A multi-valued field: a list (JSONL), or a JSON array or ';'-separated cell (CSV)."""
    if not key:
        return ()
    found, value = get(key)
    if not found or value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if from_csv and text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                fail(key, target, f"is not a JSON array: {exc.msg} at column {exc.colno}")
                return ()
        elif single_string and not from_csv:
            return (text,) if text else ()
        else:
            return tuple(part.strip() for part in text.split(";") if part.strip())
    if not isinstance(value, list):
        fail(key, target, f"is {_kind(value)}, not a list of strings")
        return ()
    for i, item in enumerate(value):
        if not isinstance(item, str):
            fail(key, target, f"item {i} is {_kind(item)}, not a string")
            return ()
    return tuple(v.strip() for v in value if v.strip())


def _messages(value: Any, from_csv: bool) -> tuple[tuple[str, str], ...] | str:
    """(role, content) pairs, or what is wrong with the cell."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ()
    if from_csv and isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            return f"is not JSON: {exc.msg} at column {exc.colno}"
    if not isinstance(value, list):
        return f"is {_kind(value)}, not a list of messages"
    pairs: list[tuple[str, str]] = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            return f"item {i} is {_kind(message)}, not an object"
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            return f"item {i} has role {_show(role)}, not one of {', '.join(_ROLES)}"
        if not isinstance(content, str):
            return f"item {i} has content {_show(content)}, not a string"
        pairs.append((role, content))
    return tuple(pairs)


def _without_duplicate_ids(rows: list[ImportRow], errors: list[LineError]) -> ReadResult:
    """Keeps the first row of each item id and reports the others."""
    first: dict[str, int] = {}
    kept: list[ImportRow] = []
    for row in rows:
        if row.item_id in first:
            reason = f"item id {row.item_id} is already used by line {first[row.item_id]}"
            errors.append(LineError(row.file, row.line, "item_id", reason))
            continue
        first[row.item_id] = row.line
        kept.append(row)
    errors.sort(key=lambda e: (e.file, e.line))
    return ReadResult(tuple(kept), tuple(errors))


def _label(key: str, target: str) -> str:
    return key if key == target else f"{key} ({target})"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _reason_kind(reason: str) -> str:
    """The reason without its particulars, to group errors of one kind."""
    return re.sub(r"\b\d+\b", "N", reason.split(": ", 1)[0])
