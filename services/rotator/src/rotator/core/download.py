"""What one download of a pool shows: the tenant's option and candidate-list orders, canaries,
prompt hashes (pure)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rotator.core.bank import TaskRecord
from rotator.core.canaries import shown_lists
from rotator.core.options import parse_options, relabel

STREAM_BATCH = 500
"""Items per message of a prompt stream (a message also ends at bank.CHUNK_BYTES of prompts)."""


@dataclass(frozen=True)
class ServedItem:
    """One item of a download, as the submitter's side receives it (never its key)."""

    item_id: str
    ordinal: int
    dataset: str
    answer_format: str
    prompt_hash: str
    """Always set, with or without the prompt."""
    question: str = ""
    """As this download shows it; empty unless prompts are included."""
    image_paths: tuple[str, ...] = ()
    image_ids: tuple[str, ...] = ()
    messages: tuple[tuple[str, str], ...] = ()
    canary: bool = False

    def prompt_bytes(self) -> int:
        """At most the UTF-8 bytes of its prompt: 3 per character (counted without encoding)."""
        return 3 * (len(self.question) + sum(len(content) for _, content in self.messages))


def prompt_hash(
    question: str, messages: Sequence[tuple[str, str]], image_ids: Iterable[str]
) -> str:
    """The identity of a prompt as shown: 32 hex digits of sha256 over its parts."""
    h = hashlib.sha256(question.encode())
    for role, content in messages:
        h.update(b"\0" + role.encode() + b"\0" + content.encode())
    for image_id in image_ids:
        h.update(b"\1" + image_id.encode())
    return h.hexdigest()[:32]


def shown_question(
    question: str,
    order: tuple[int, ...] | None,
    lists: Sequence[tuple[int, int, tuple[int, ...]]] = (),
) -> str:
    """The question as a download shows it: options in the tenant's order, a label item's
    candidate lists in the tenant's per-item orders (`canaries.plain_lists`)."""
    if lists:
        question = shown_lists(question, lists)
    if order is None:
        return question
    block = parse_options(question)
    return question if block is None or len(block.texts) != len(order) else relabel(block, order)


def option_count(task: TaskRecord) -> int:
    """Options a choice item shows (0 when it has none to reorder)."""
    if not task.answer_format.startswith("choice"):
        return 0
    block = parse_options(task.question)
    return 0 if block is None else len(block.texts)
