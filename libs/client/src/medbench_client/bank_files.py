"""Reading task-bank and answer files (JSON Lines)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from medbench.common.v1 import common_pb2
from medbench.taskpool.v1 import taskpool_pb2

TRACKS = {
    "llm": common_pb2.TRACK_LLM,
    "multimodal": common_pb2.TRACK_MULTIMODAL,
    "agent": common_pb2.TRACK_AGENT,
}


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """One dict per non-empty line."""
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not JSON: {exc}") from exc


def import_item(row: dict[str, Any], track: str = "llm", ref: str = "") -> taskpool_pb2.ImportItem:
    """A bank row ({"item_id", "dataset" or "source", "question", "reference", ...}) as an
    ImportItem; a row without reference, key points or rubric is imported unkeyed."""
    item = taskpool_pb2.ImportItem(
        task=taskpool_pb2.Task(
            item_id=row["item_id"],
            dataset=row.get("dataset", ""),
            source=row.get("source", ""),
            track=TRACKS[row.get("track", track)],
            specialties=row.get("specialties", []),
            question=row.get("question", ""),
            image_paths=row.get("image_paths", []),
            answer_format=row.get("answer_format", ""),
            group_id=row.get("group_id", row["item_id"]),
            provenance=row.get("provenance", ""),
            licence=row.get("licence", ""),
            messages=[
                taskpool_pb2.ChatMessage(role=role, content=content)
                for role, content in row.get("messages", [])
            ],
        ),
        ref=ref or row["item_id"],
    )
    if row.get("reference") or row.get("key_points") or row.get("rubric_id"):
        item.key.CopyFrom(
            taskpool_pb2.SealedKey(
                item_id=row["item_id"],
                reference=row.get("reference", []),
                key_points=row.get("key_points", []),
                rubric_id=row.get("rubric_id", ""),
            )
        )
    return item


def answers_by_item(rows: Iterable[dict[str, Any]]) -> dict[str, str]:
    """{"item_id": ..., "answer": ...} rows as a dict."""
    return {r["item_id"]: r["answer"] for r in rows}
