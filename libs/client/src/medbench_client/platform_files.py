"""A download in the platform's own layout (`medbench download --format medbench --out DIR`).

    DIR/<Dataset>.jsonl          one line per item, as MedBench's upload files:
                                 {"question", "answer": "", "other": {"id", "source"}, "img_path"}
                                 (`other.id` is the item id to answer; `other.source` the dataset;
                                 `img_path` the images' paths relative to DIR; multi-turn items add
                                 "messages")
    DIR/images/...               the images (medbench download fetches them)
    DIR/.medbench/prompts.jsonl  the download itself (resumable; the manifest uploads are checked
                                 against)
    DIR/.medbench/download.json  which submission the folder belongs to

A dataset file is rewritten whole on every download, atomically, keeping the answers already
filled in: a second download never loses work. `medbench upload SUB DIR` reads the dataset files
back (lines left blank are counted as not answered and not sent).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medbench_client.answer_files import AnswerFileError, Served, served_from_prompts

META_DIR = ".medbench"
PROMPTS_FILE = "prompts.jsonl"
INFO_FILE = "download.json"
IMAGES_DIR = "images"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def prompts_path(folder: Path) -> Path:
    return folder / META_DIR / PROMPTS_FILE


def claim_folder(folder: Path, submission_id: str) -> None:
    """Marks folder as the download of submission_id; InputError-worthy AnswerFileError when it
    already belongs to another submission (its answers would be mixed up)."""
    info = folder / META_DIR / INFO_FILE
    try:
        held = json.loads(info.read_text(encoding="utf-8")).get("submission_id")
    except FileNotFoundError:
        held = None
    except (OSError, json.JSONDecodeError, AttributeError):
        reason = f"{info}: unreadable; delete {folder / META_DIR} to start over"
        raise AnswerFileError(reason) from None
    if held not in (None, submission_id):
        raise AnswerFileError(
            f"{folder} holds the download of submission {held}; pass another --out"
        )
    info.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(info, json.dumps({"submission_id": submission_id, "format": "medbench"}))


def folder_submission(folder: Path) -> str | None:
    """The submission a download folder belongs to, or None when it is not one."""
    try:
        held = json.loads((folder / META_DIR / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    value = held.get("submission_id") if isinstance(held, dict) else None
    return value if isinstance(value, str) else None


def dataset_file_name(dataset: str) -> str:
    return (_UNSAFE.sub("_", dataset).strip("._") or "dataset") + ".jsonl"


def platform_line(prompt: Mapping[str, Any], answer: str = "") -> dict[str, Any]:
    """One downloaded prompt (a line of prompts.jsonl) as the platform's upload line."""
    line: dict[str, Any] = {
        "question": prompt["question"],
        "answer": answer,
        "other": {"id": prompt["item_id"], "source": prompt["dataset"]},
    }
    if prompt.get("image_paths"):
        line["img_path"] = [f"{IMAGES_DIR}/{p}" for p in prompt["image_paths"]]
    if prompt.get("messages"):
        line["messages"] = prompt["messages"]
    return line


def write_dataset_files(folder: Path, prompts: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """DIR/<Dataset>.jsonl for every dataset of prompts (download order), keeping the answers
    already written in them; returns file name -> lines."""
    by_file: dict[str, list[Mapping[str, Any]]] = {}
    for prompt in prompts:
        by_file.setdefault(dataset_file_name(prompt["dataset"]), []).append(prompt)
    counts: dict[str, int] = {}
    for name, rows in by_file.items():
        path = folder / name
        kept = _filled_answers(path)
        lines = (
            json.dumps(platform_line(p, kept.get(p["item_id"], "")), ensure_ascii=False)
            for p in rows
        )
        _write_atomically(path, "\n".join(lines) + "\n")
        counts[name] = len(rows)
    return counts


def read_prompts(path: Path) -> list[dict[str, Any]]:
    """The prompt lines of a finished download."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(raw) for raw in handle if raw.strip()]


def find_download(paths: Iterable[Path]) -> Path | None:
    """The download folder an answer path lies in (the path itself or its parent), if any."""
    for path in paths:
        for folder in (path, path.parent) if path.is_dir() else (path.parent,):
            if prompts_path(folder).is_file():
                return folder
    return None


def served_from_file(path: Path) -> Served:
    """The manifest in a download file (prompts JSONL) or a download folder."""
    target = prompts_path(path) if path.is_dir() else path
    try:
        with target.open(encoding="utf-8") as handle:
            return served_from_prompts(handle, str(target))
    except FileNotFoundError:
        raise AnswerFileError(f"{target}: no such download") from None


def _filled_answers(path: Path) -> dict[str, str]:
    """item id -> answer of the lines of an existing dataset file that have one."""
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return out
    for raw in text.splitlines():
        try:
            row = json.loads(raw)
        except json.JSONDecodeError:
            continue
        other = row.get("other") if isinstance(row, dict) else None
        answer = row.get("answer") if isinstance(row, dict) else None
        if isinstance(other, dict) and isinstance(other.get("id"), str) and answer:
            out[other["id"]] = str(answer)
    return out


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
