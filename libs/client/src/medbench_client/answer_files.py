"""Answer files a partner uploads, read and checked against the download before anything is sent.

Three layouts are read, line by line, in any mix of files (a folder means its `*.jsonl` and
`*.csv` files, names starting with "." left out):

- the project's JSONL: `{"item_id": ..., "answer": ...}`;
- the project's CSV: a header with `item_id` and `answer` columns (quoted multi-line cells kept);
- the platform's JSONL (MedBench's own upload files, as `medbench download --format medbench`
  writes them): `{"question": ..., "answer": ..., "other": {"id": ..., "source": ...},
  "img_path": ...}`. `other.id` is the item id the download carried. An integer `other.id` (a
  file from the platform itself) is matched by (source, id) when exactly one served item has it;
  option-order permutations share one, so those lines are named, never guessed.

Every line is accounted for: valid, or a problem naming `file:line`, the field and the reason.
Problems that stop an upload (the line is never sent; `--skip-invalid` sends the others): bad
JSON, not an object, no item id, an item not served in this submission, an item answered twice
(across files too), an answer that is empty, not text or over the gateway's per-answer limit, an
integer id that matches no or several items. Not stopping: a platform-format line left blank
(the platform's files come blank: not answered, not sent) and warnings (sent as they are, since
the raw output is what gets scored): an answer whose shape does not fit the dataset's answer
format (no option letter for a choice item, no JSON for a JSON or box item). Nothing stops after
N problems.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The gateway's limit on one answer (UTF-8 bytes; medbench_messaging.sizing.MAX_ANSWER_BYTES, a
# test keeps the two equal).
MAX_ANSWER_BYTES = 32 * 1024
ANSWER_SUFFIXES = (".jsonl", ".csv")

# Why a line is not sent, by kind (for the summary, in this order).
KINDS = {
    "json": "not valid JSON",
    "object": "not a JSON object",
    "id": "no item id",
    "unserved": "not served in this submission",
    "ambiguous": "id matching several or no items",
    "duplicate": "answered twice",
    "empty": "empty answer",
    "type": "answer not text",
    "too_long": f"answer over {MAX_ANSWER_BYTES} bytes",
    "file": "unreadable file",
    "shape": "answer shape unlike the dataset's format (sent as is)",
    "blank": "left blank in a platform-format file (not answered, not sent)",
}
# Kinds that never stop an upload: warnings (sent as they are) and blank lines (not sent).
NOT_BLOCKING = frozenset({"shape", "blank"})


class AnswerFileError(Exception):
    """The answer paths cannot be read at all (no such file, no answer files in a folder)."""


@dataclass(frozen=True)
class AnswerLine:
    line: int
    item_id: str
    answer: str
    file: str = ""

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class ServedItem:
    """One item the submission's download holds (no reference: the download never has one)."""

    item_id: str
    dataset: str
    answer_format: str
    question: str = ""


@dataclass(frozen=True)
class Served:
    """What a submission serves: the manifest answers are checked against."""

    items: Mapping[str, ServedItem]
    origin: str
    """Where the list came from (a download file, or "the gateway")."""

    def by_platform_id(self) -> dict[tuple[str, int], list[str]]:
        """(source tag without a version suffix, number) -> item ids, for integer other.id."""
        index: dict[tuple[str, int], list[str]] = {}
        for item_id in self.items:
            found = _NUMBERED.fullmatch(item_id)
            if found:
                index.setdefault((found[1].lower(), int(found[2])), []).append(item_id)
        return index


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    field: str
    reason: str
    kind: str

    @property
    def blocking(self) -> bool:
        return self.kind not in NOT_BLOCKING

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        label = f"{self.field}: " if self.field else ""
        severity = {"shape": "warning: ", "blank": "not answered: "}.get(self.kind, "")
        return f"{where}: {severity}{label}{self.reason}"


@dataclass
class Checked:
    """The answers of some files, checked: the valid lines and every problem."""

    answers: list[AnswerLine] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    lines: int = 0
    """Non-blank lines read."""

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.blocking]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.kind == "shape"]

    @property
    def blank(self) -> list[Problem]:
        return [p for p in self.problems if p.kind == "blank"]

    def summary(self, served: Served | None) -> list[str]:
        """What was found, in a few lines (the full list goes to a file)."""
        against = f" against {served.origin} ({len(served.items)} items)" if served else ""
        files = f"{len(self.files)} file{'s' if len(self.files) != 1 else ''}"
        out = [f"checked {self.lines} lines in {files}{against}"]
        errors = Counter(p.kind for p in self.errors)
        invalid = ", ".join(f"{errors[k]} {KINDS[k]}" for k in KINDS if errors[k])
        bad_lines = len({(p.file, p.line) for p in self.errors})
        out.append(
            f"{len(self.answers)} valid, {bad_lines} invalid" + (f": {invalid}" if invalid else "")
        )
        if self.blank:
            out.append(f"{len(self.blank)} {KINDS['blank']}")
        if self.warnings:
            out.append(f"{len(self.warnings)} warnings: {KINDS['shape']}")
        return out


# -- reading ---------------------------------------------------------------------------------

_NUMBERED = re.compile(r"(.+)-(\d+)(?:-p\d+)?")
_VERSION = re.compile(r"_V\d+$", re.IGNORECASE)


def answer_paths(paths: Sequence[Path]) -> list[Path]:
    """The files to read: each file as given, each folder's answer files sorted by name."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and p.suffix in ANSWER_SUFFIXES and not p.name.startswith(".")
            )
            if not found:
                raise AnswerFileError(f"{path}: no answer files (*.jsonl, *.csv) in this folder")
            out.extend(found)
        elif path.exists():
            out.append(path)
        else:
            raise AnswerFileError(f"{path}: no such file")
    return out


def check_answer_files(paths: Sequence[Path], served: Served | None) -> Checked:
    """Reads every answer file and checks every line (against served, when known)."""
    checked = Checked()
    first_seen: dict[str, str] = {}
    index = served.by_platform_id() if served is not None else {}
    for path in answer_paths(paths):
        name = str(path)
        checked.files.append(name)
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
            checked.problems.append(Problem(name, 0, "", reason, "file"))
            continue
        text = text.removeprefix("\ufeff")
        rows = _csv_rows(name, text) if path.suffix == ".csv" else _jsonl_rows(name, text)
        for line, row in rows:
            checked.lines += 1
            if isinstance(row, Problem):
                checked.problems.append(row)
                continue
            _check_row(checked, name, line, row, served, index, first_seen)
    return checked


def _jsonl_rows(name: str, text: str) -> Iterator[tuple[int, dict[str, object] | Problem]]:
    for number, raw in enumerate(text.split("\n"), start=1):
        raw = raw.strip()
        if not raw:
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            reason = f"not valid JSON ({exc.msg} at column {exc.colno})"
            yield number, Problem(name, number, "", reason, "json")
            continue
        if not isinstance(row, dict):
            reason = 'expected a JSON object ({"item_id", "answer"} or the platform\'s format)'
            yield number, Problem(name, number, "", reason, "object")
            continue
        yield number, row


def _csv_rows(name: str, text: str) -> Iterator[tuple[int, dict[str, object] | Problem]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    start = 1
    for record in reader:
        line, start = start, reader.line_num + 1
        if header is None:
            header = [h.strip() for h in record]
            missing = [c for c in ("item_id", "answer") if c not in header]
            if missing:
                reason = f"the header has no {' or '.join(missing)} column (got {header[:6]})"
                yield line, Problem(name, line, "", reason, "object")
                return
            continue
        if not any(cell.strip() for cell in record):
            continue
        yield line, dict(zip(header, record, strict=False))


def _check_row(
    checked: Checked,
    name: str,
    line: int,
    row: Mapping[str, object],
    served: Served | None,
    index: Mapping[tuple[str, int], list[str]],
    first_seen: dict[str, str],
) -> None:
    def fail(fieldname: str, reason: str, kind: str) -> None:
        checked.problems.append(Problem(name, line, fieldname, reason, kind))

    item_id, id_field = _item_id(row, served, index, first_seen, fail)
    if item_id is None:
        return
    if served is not None and item_id not in served.items:
        fail(id_field, f"item {item_id!r} is not served in this submission", "unserved")
        return
    answer = row.get("answer")
    if answer is None:
        fail("answer", f"item {item_id!r} has no answer", "empty")
        return
    if not isinstance(answer, str):
        fail("answer", f"the answer is {type(answer).__name__}, not text", "type")
        return
    if not answer.strip():
        if id_field == "other.id":  # the platform's files come blank: a line not answered yet
            fail("answer", f"item {item_id!r} is not answered", "blank")
        else:
            fail("answer", "the answer is empty (fill it in, or leave the line out)", "empty")
        return
    size = len(answer.encode())
    if size > MAX_ANSWER_BYTES:
        fail("answer", f"the answer is {size} bytes; at most {MAX_ANSWER_BYTES}", "too_long")
        return
    if item_id in first_seen:
        reason = f"item {item_id!r} is answered twice (first at {first_seen[item_id]})"
        fail(id_field, reason, "duplicate")
        return
    first_seen[item_id] = f"{name}:{line}"
    checked.answers.append(AnswerLine(line, item_id, answer, name))
    if served is not None:
        problem = shape_problem(served.items[item_id].answer_format, answer)
        if problem is not None:
            fail("answer", problem, "shape")


def _item_id(
    row: Mapping[str, object],
    served: Served | None,
    index: Mapping[tuple[str, int], list[str]],
    taken: Mapping[str, str],
    fail: Callable[[str, str, str], None],
) -> tuple[str | None, str]:
    """The item a line answers and the field that named it, or (None, field) after fail()."""
    if "item_id" in row or "other" not in row:
        value = row.get("item_id")
        if isinstance(value, str) and value.strip():
            return value.strip(), "item_id"
        fail("item_id", "item_id is missing or not a non-empty string", "id")
        return None, "item_id"
    other = row["other"]
    if not isinstance(other, dict):
        fail("other", f"other is {type(other).__name__}, not an object", "id")
        return None, "other"
    value = other.get("id")
    if isinstance(value, str) and value.strip() and not value.strip().isdigit():
        return value.strip(), "other.id"
    number = int(value.strip()) if isinstance(value, str) and value.strip().isdigit() else value
    if isinstance(number, bool) or not isinstance(number, int):
        fail("other.id", "other.id is missing (it carries the item id of the download)", "id")
        return None, "other.id"
    source = other.get("source")
    if not isinstance(source, str) or not source.strip() or served is None:
        fail(
            "other.id",
            f"other.id {number} is a number; without other.source and the download it names "
            "no item (use the ids the download carried)",
            "ambiguous",
        )
        return None, "other.id"
    candidates = index.get((_VERSION.sub("", source.strip()).lower(), number), [])
    if len(candidates) == 1:
        return candidates[0], "other.id"
    question = row.get("question")
    same = sorted(
        c
        for c in candidates
        if isinstance(question, str) and served.items[c].question.strip() == question.strip()
    )
    if same:
        # Permutations with the very same text (the platform's files hold some) are the same
        # prompt with the same key: they take the lines in file order.
        free = [c for c in same if c not in taken]
        return (free or same)[0], "other.id"
    if not candidates:
        reason = f"{source} id {number} matches no item served in this submission"
        fail("other.id", reason, "unserved")
    else:
        reason = (
            f"{source} id {number} matches {len(candidates)} served items (option-order "
            f"permutations: {', '.join(sorted(candidates)[:3])}...); use the ids the download "
            "carried"
        )
        fail("other.id", reason, "ambiguous")
    return None, "other.id"


# -- answer shapes (warnings only) -------------------------------------------------------------

_LETTER = re.compile(r"<\s*[A-Za-z]|\b[A-J]\b")


def shape_problem(answer_format: str, answer: str) -> str | None:
    """Why an answer does not look like its dataset's format, or None. Lenient on purpose: only
    answers the scorers could read nothing from are named."""
    if answer_format in ("choice_single", "choice_multi"):
        if not _LETTER.search(answer):
            return f"no option letter found for a {answer_format} item (e.g. <B>)"
    elif answer_format in ("boxes", "json_object", "json_fields") and _first_json(answer) is None:
        return f"no JSON found for a {answer_format} item"
    return None


def _first_json(text: str) -> object | None:
    """The first JSON object or array inside text (fenced or bare), or None."""
    decoder = json.JSONDecoder()
    for start, char in enumerate(text):
        if char in "{[":
            try:
                value: object = decoder.raw_decode(text, start)[0]
            except json.JSONDecodeError:
                continue
            return value
    return None


# -- the problems file -------------------------------------------------------------------------


def problems_path(paths: Sequence[Path]) -> Path:
    """Where the full list of problems goes: beside the first file, or inside the first folder."""
    first = paths[0]
    if first.is_dir():
        return first / "medbench-problems.txt"
    return first.with_name(first.name + ".medbench-problems.txt")


def write_problems(path: Path, checked: Checked, header: Iterable[str]) -> None:
    """Every problem, one per line (`file:line: field: reason`), in file and line order."""
    ordered = sorted(checked.problems, key=lambda p: (checked.files.index(p.file), p.line))
    body = [f"# {h}" for h in header] + [str(p) for p in ordered]
    path.write_text("\n".join(body) + "\n", encoding="utf-8")


def served_from_prompts(lines: Iterable[str], origin: str) -> Served:
    """The manifest of a download file (the prompt lines `medbench download` writes)."""
    items: dict[str, ServedItem] = {}
    for raw in lines:
        raw = raw.strip()
        if not raw:
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError:
            raise AnswerFileError(f"{origin}: not a download (a line is not JSON)") from None
        if not isinstance(row, dict) or not isinstance(row.get("item_id"), str):
            raise AnswerFileError(f"{origin}: not a download (a line has no item_id)")
        items[row["item_id"]] = ServedItem(
            row["item_id"],
            str(row.get("dataset", "")),
            str(row.get("answer_format", "")),
            str(row.get("question", "")),
        )
    return Served(items, origin)
