"""Upload rules: ids, limits, the answered-items bitmap and batch digests (pure)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

from medbench_runtime.errors import InvalidArgument
from medbench_runtime.names import display_text

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_ANSWERS_PER_MESSAGE = 5000
# All answers of one message (UTF-8 bytes): the message is stored whole in one document and one
# transaction (MongoDB's 16 MiB document limit), then sent on as events of at most 1 MB each.
MAX_MESSAGE_ANSWER_BYTES = 8 * 1024 * 1024
MAX_MODEL_NAME = 200
MAX_ITEM_ID = 128
# Unknown items named in one refusal (the message stays well under gRPC's status size).
UNKNOWN_SHOWN = 50
# Limits of the other free-text fields of a submission (characters).
MODEL_FIELDS = {"version": 100, "organisation": 200, "parameter_count": 32}


def check_text(field: str, value: str, most: int) -> str:
    """value as stored and shown on the leaderboard (NFKC), or INVALID_ARGUMENT naming the field
    (too long; control, bidirectional, invisible or format characters; nothing visible): see
    medbench_runtime.names."""
    return display_text(field, value, most)


def check_date(field: str, value: str) -> None:
    """INVALID_ARGUMENT naming the field unless value is empty or a real "YYYY-MM-DD" date."""
    if not value:
        return
    try:
        valid = len(value) == 10 and date.fromisoformat(value).isoformat() == value
    except ValueError:
        valid = False
    if not valid:
        raise InvalidArgument(f"{field} must be a date written YYYY-MM-DD, got {value[:20]!r}")


def submission_id_for(tenant_id: str, request_id: str) -> str:
    """Deterministic id, so that a retried CreateSubmission finds the first one."""
    digest = hashlib.sha256(f"{tenant_id}\x00{request_id}".encode()).hexdigest()
    return f"sub_{digest[:24]}"


def check_request_id(kind: str, value: str) -> None:
    """INVALID_ARGUMENT unless value is a well-formed client id."""
    # fullmatch: with match, the pattern's $ would let a trailing newline through.
    if not REQUEST_ID.fullmatch(value):
        raise InvalidArgument(f"{kind} {value!r} must be 1-128 characters of [A-Za-z0-9._:-]")


@dataclass(frozen=True)
class Manifest:
    """A submission's items: id -> (ordinal, dataset), and the reverse by ordinal. A download's
    canaries are some of its pool items (shown altered for its tenant, scored like the rest).
    Ordinals from item_count on exist only for a download made before that: its fictitious
    extra items, accepted and counted as shown items, never scored."""

    pool_id: str
    by_id: dict[str, tuple[int, str]]
    by_ordinal: dict[int, tuple[str, str]]
    prompt_hash: dict[str, str]
    """Item id -> hash of the prompt as this download shows it."""
    answer_format: dict[str, str] = field(default_factory=dict)
    """Item id -> the answer format it asks for ("choice_single", "free_text", ...; probing
    reads a choice answer's letters): an item without one is read as text."""


@dataclass(frozen=True)
class AcceptedAnswer:
    """An answer matched to its pool position."""

    item_id: str
    ordinal: int
    dataset: str
    answer: str


def check_batch(
    answers: Sequence[tuple[str, str]],
    manifest: Mapping[str, tuple[int, str]],
    max_answer_bytes: int,
) -> list[AcceptedAnswer]:
    """Validates one upload message against the submission's items; all or nothing.
    max_answer_bytes: the platform's per-answer limit (medbench_messaging.sizing)."""
    if not answers:
        raise InvalidArgument("an UploadAnswers message must carry at least one answer")
    if len(answers) > MAX_ANSWERS_PER_MESSAGE:
        raise InvalidArgument(
            f"answers: {len(answers)} in one message; at most {MAX_ANSWERS_PER_MESSAGE}"
        )
    seen: set[str] = set()
    unknown: list[str] = []  # "answers[i] (item X)", so a client can name its file's lines
    out: list[AcceptedAnswer] = []
    total = 0
    for index, (item_id, text) in enumerate(answers):
        if not item_id or len(item_id) > MAX_ITEM_ID:
            raise InvalidArgument(f"answers[{index}].item_id must be 1-{MAX_ITEM_ID} characters")
        size = len(text.encode())
        if size > max_answer_bytes:
            raise InvalidArgument(
                f"answers[{index}].answer (item {item_id}) is {size} bytes; at most "
                f"{max_answer_bytes}"
            )
        total += size
        if total > MAX_MESSAGE_ANSWER_BYTES:
            raise InvalidArgument(
                f"answers: more than {MAX_MESSAGE_ANSWER_BYTES} bytes of answer text in one "
                f"message (reached at answers[{index}]); send them in several messages"
            )
        if item_id in seen:
            raise InvalidArgument(
                f"answers[{index}].item_id: item {item_id} is answered twice in one message"
            )
        seen.add(item_id)
        found = manifest.get(item_id)
        if found is None:
            unknown.append(f"answers[{index}] (item {item_id!r})")
            continue
        out.append(AcceptedAnswer(item_id, found[0], found[1], text))
    if unknown:
        shown = ", ".join(unknown[:UNKNOWN_SHOWN])
        more = f" and {len(unknown) - UNKNOWN_SHOWN} more" if len(unknown) > UNKNOWN_SHOWN else ""
        raise InvalidArgument(
            f"{len(unknown)} answers are for items not served in this submission: {shown}{more}"
        )
    return out


def batch_digest(answers: Sequence[tuple[str, str]]) -> str:
    """Identity of a batch's content, to tell a resend from a different batch with the same id."""
    h = hashlib.sha256()
    for item_id, text in answers:
        h.update(item_id.encode())
        h.update(b"\x00")
        h.update(text.encode())
        h.update(b"\x01")
    return h.hexdigest()


def new_bitmap(n_items: int) -> bytearray:
    """One bit per pool item."""
    return bytearray((n_items + 7) // 8)


def already_set(bitmap: bytes | bytearray, ordinals: Sequence[int]) -> list[int]:
    """Ordinals whose bit is set."""
    return [o for o in ordinals if bitmap[o >> 3] & (1 << (o & 7))]


def set_bits(bitmap: bytearray, ordinals: Sequence[int]) -> None:
    """Marks ordinals answered."""
    for o in ordinals:
        bitmap[o >> 3] |= 1 << (o & 7)


def unset_ordinals(bitmap: bytes | bytearray, n_items: int) -> list[int]:
    """Ordinals never answered."""
    return [o for o in range(n_items) if not bitmap[o >> 3] & (1 << (o & 7))]
