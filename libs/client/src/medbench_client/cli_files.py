"""Local files of the partner CLI: upload batches and their state, resumable prompt downloads,
and a progress line (answer files are read and checked in medbench_client.answer_files).

Upload batches are cut from the answers still to send (file order, `size` answers each) and named
by their content: the batch id is a hash of its (item_id, answer) pairs and final flag, so a
re-run after a broken connection sends the very same batches, which the gateway recognises as
replays. The state file next to the answers (`<answers>.medbench-upload.json`) records, per
submission, the batches accepted and their items; a re-run skips those items. Removing a prefix
of whole batches leaves the later batches cut exactly as before, so ids stay stable across runs.

Prompt downloads append to the output file: a kept partial file is read, a cut last line is
dropped, and only the prompts not yet in the file are appended (in the order the gateway streams
them), each line flushed as it is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from medbench_client.answer_files import AnswerLine

MAX_BATCH = 5000  # answers per UploadAnswers message (the gateway's limit)
# Answer text per UploadAnswers message (UTF-8 bytes; the gateway's limit): a batch ends before it.
MAX_BATCH_BYTES = 8 * 1024 * 1024
STATE_SUFFIX = ".medbench-upload.json"
BATCH_ID_PREFIX = "mb1-"


class InputError(Exception):
    """A local file is unusable (exit code 2); the message names the file and line."""


@dataclass(frozen=True)
class Batch:
    batch_id: str
    first_line: int
    answers: tuple[tuple[str, str], ...]
    final: bool

    @property
    def item_ids(self) -> list[str]:
        return [item_id for item_id, _ in self.answers]


def batch_id(answers: Sequence[tuple[str, str]], final: bool) -> str:
    """A batch's id from its content alone (1-128 characters of [A-Za-z0-9._:-])."""
    digest = hashlib.sha256()
    for item_id, answer in answers:
        digest.update(json.dumps([item_id, answer], ensure_ascii=False).encode())
        digest.update(b"\n")
    digest.update(b"final" if final else b"open")
    return BATCH_ID_PREFIX + digest.hexdigest()[:40]


def plan_batches(answers: Sequence[AnswerLine], size: int, final: bool) -> list[Batch]:
    """answers cut into batches of size in file order, each under the gateway's MAX_BATCH_BYTES
    of answer text (deterministic, so a resumed upload plans the same batches); the last one
    carries final."""
    if not 1 <= size <= MAX_BATCH:
        raise InputError(f"--batch-size must be within 1-{MAX_BATCH}")
    cuts: list[tuple[int, int]] = []
    start, used = 0, 0
    for i, a in enumerate(answers):
        size_of = len(a.answer.encode())
        if i > start and (i - start >= size or used + size_of > MAX_BATCH_BYTES):
            cuts.append((start, i))
            start, used = i, 0
        used += size_of
    if start < len(answers):
        cuts.append((start, len(answers)))
    out: list[Batch] = []
    for n, (begin, end) in enumerate(cuts):
        chunk = answers[begin:end]
        pairs = tuple((a.item_id, a.answer) for a in chunk)
        last = n == len(cuts) - 1
        out.append(Batch(batch_id(pairs, final and last), chunk[0].line, pairs, final and last))
    return out


def final_marker_id(answers: Sequence[AnswerLine]) -> str:
    """Id of the empty final message sent when every batch was accepted without final."""
    return batch_id([(a.item_id, a.answer) for a in answers], True).replace(
        BATCH_ID_PREFIX, BATCH_ID_PREFIX + "end-", 1
    )


def state_path(answers: Path) -> Path:
    return answers.with_name(answers.name + STATE_SUFFIX)


def write_json_atomically(path: Path, data: Mapping[str, Any], mode: int | None = None) -> None:
    """Writes JSON to a temporary file beside path, synced, then renamed over it: a reader
    sees the old file or the new one, never half of one. mode (e.g. 0o600) is set before any
    byte is written."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1, sort_keys=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class UploadState:
    """The batches of one answers file the gateway accepted, per submission."""

    def __init__(self, path: Path, submission_id: str) -> None:
        self.path = path
        self.submission_id = submission_id
        self._data: dict[str, Any] = {"version": 1, "submissions": {}}
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            loaded = None
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(
                f"{path}: unreadable upload state ({exc}); delete it to upload from scratch "
                "(resent batches are recognised by the gateway)"
            ) from None
        if isinstance(loaded, dict) and isinstance(loaded.get("submissions"), dict):
            self._data = loaded
        self._mine: dict[str, Any] = self._data["submissions"].setdefault(
            submission_id, {"batches": {}, "final": False}
        )

    @property
    def accepted_items(self) -> set[str]:
        return {i for b in self._mine["batches"].values() for i in b["items"]}

    @property
    def final_sent(self) -> bool:
        return bool(self._mine.get("final"))

    def record(self, batch: Batch, outcome: str) -> None:
        """Records an accepted (or replayed) batch and saves the file at once."""
        self._mine["batches"][batch.batch_id] = {
            "items": batch.item_ids,
            "first_line": batch.first_line,
            "final": batch.final,
            "outcome": outcome,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if batch.final:
            self._mine["final"] = True
        self.save()

    def save(self) -> None:
        write_json_atomically(self.path, self._data)


# -- prompt downloads ---------------------------------------------------------------------


@dataclass
class PartialDownload:
    """What an existing output file already holds."""

    item_ids: list[str]
    dropped_bytes: int  # of a cut (or unreadable) last line, removed before appending


def prepare_download(path: Path) -> PartialDownload:
    """Reads a kept partial download and truncates a cut last line; InputError when the file
    is not one (a bad line before the last)."""
    if not path.exists():
        return PartialDownload([], 0)
    data = path.read_bytes()
    ids: list[str] = []
    good_end = 0
    pos = 0
    lines = data.split(b"\n")
    for index, raw in enumerate(lines):
        end = pos + len(raw) + 1  # with its newline
        complete = index < len(lines) - 1
        if raw.strip():
            try:
                row = json.loads(raw)
                item_id = row["item_id"] if isinstance(row, dict) else None
            except (json.JSONDecodeError, UnicodeDecodeError):
                item_id = None
            if not complete or not isinstance(item_id, str):
                if complete and index < len(lines) - 2:
                    raise InputError(
                        f"{path}:{index + 1}: not a prompt line; this file is not a download "
                        "(pass another --out or delete it)"
                    )
                break  # the cut last line
            ids.append(item_id)
        if complete:
            good_end = end
        pos = end
    dropped = len(data) - good_end
    if dropped:
        with path.open("r+b") as handle:
            handle.truncate(good_end)
    return PartialDownload(ids, dropped)


def prompt_line(prompt: Any) -> str:
    """One prompt as a JSON line (no newline)."""
    return json.dumps(
        {
            "item_id": prompt.item_id,
            "dataset": prompt.dataset,
            "question": prompt.question,
            "answer_format": prompt.answer_format,
            "image_paths": list(prompt.image_paths),
            "messages": [{"role": m.role, "content": m.content} for m in prompt.messages],
        },
        ensure_ascii=False,
    )


class PromptWriter:
    """Appends prompt lines to a download, each batch flushed; synced to disk on close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None  # opened by the first line: a refused download
        # (API mode, not found) leaves no empty file behind

    def append(self, line: str) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write(line + "\n")

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def __enter__(self) -> PromptWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is None:
            return
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        finally:
            self._handle.close()


# -- progress ------------------------------------------------------------------------------


class ProgressLine:
    """`label [#####-----] done/total` redrawn with a carriage return on stderr, only when
    stderr is a terminal (nothing otherwise: logs and pipes stay clean)."""

    WIDTH = 30

    def __init__(
        self,
        label: str,
        total: int | None,
        stream: IO[str] | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self.total = total
        self.done = 0
        self._drawn = 0.0

    def advance(self, n: int = 1, total: int | None = None) -> None:
        self.done += n
        if total is not None:
            self.total = total
        now = time.monotonic()
        if self.enabled and (now - self._drawn >= 0.1 or self.done == self.total):
            self._drawn = now
            self.stream.write("\r" + self.render())
            self.stream.flush()

    def render(self) -> str:
        if not self.total:
            return f"{self.label} {self.done}"
        share = min(self.done / self.total, 1.0)
        bar = "#" * int(share * self.WIDTH)
        return f"{self.label} [{bar:-<{self.WIDTH}}] {self.done}/{self.total}"

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + self.render() + "\n")
            self.stream.flush()
