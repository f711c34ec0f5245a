"""Listing a tenant's own submissions (ListSubmissions): what a list may ask, and the page
token, an opaque name of the last entry of a page (pure).

Pages are in (created_at, submission id) order, newest first, and a page goes on strictly
after the entry its token names: a submission created while a partner pages is newer than
every entry already shown, so it never repeats or shifts one."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.core.submission import MODE_API, MODE_UPLOAD, TRACKS, Record
from medbench_runtime.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Every SubmissionState but UNSPECIFIED (names without their SUBMISSION_STATE_ prefix).
STATES = frozenset(
    {
        "CREATED",
        "AWAITING_ANSWERS",
        "DISPATCHING",
        "SCORING",
        "AGGREGATING",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
    }
)
MODES = frozenset({MODE_UPLOAD, MODE_API})
_TOKEN_VERSION = "s1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ListRequest:
    """A list as asked: 0, "" and () mean no filter; states are SubmissionState names without
    their prefix (an unknown one is refused)."""

    tenant_id: str
    page_size: int = 0
    page_token: str = ""
    states: tuple[str, ...] = ()
    track: int = 0
    mode: int = 0
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True)
class Cursor:
    """The last entry of a page: the next one starts strictly after it."""

    created_at: datetime
    submission_id: str


@dataclass(frozen=True)
class ListQuery:
    """A valid list: what the store filters on (created_after inclusive, created_before
    exclusive), page_size entries after `after` (None: from the newest)."""

    tenant_id: str
    page_size: int
    states: tuple[str, ...] = ()
    track: int = 0
    mode: int = 0
    created_after: datetime | None = None
    created_before: datetime | None = None
    after: Cursor | None = None


def _utc(value: datetime) -> datetime:
    """An aware UTC datetime (a naive one is UTC, as MongoDB returns them)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def validate_list(request: ListRequest) -> ListQuery:
    """INVALID_ARGUMENT naming the field for anything a list cannot ask."""
    if not request.tenant_id:
        raise InvalidArgument("a tenant is required to list submissions")
    if not 0 <= request.page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be between 0 and {MAX_PAGE_SIZE}")
    unknown = [s for s in request.states if s not in STATES]
    if unknown:
        raise InvalidArgument(
            f"states: {', '.join(repr(s) for s in unknown)} is not a state to list by "
            f"(one of {', '.join(sorted(STATES))})"
        )
    if request.track != 0 and request.track not in TRACKS:
        raise InvalidArgument(
            "track must be TRACK_LLM, TRACK_MULTIMODAL, TRACK_AGENT or unset (any)"
        )
    if request.mode != 0 and request.mode not in MODES:
        raise InvalidArgument(
            "mode must be SUBMISSION_MODE_UPLOAD, SUBMISSION_MODE_API or unset (both boards)"
        )
    after_ = _utc(request.created_after) if request.created_after is not None else None
    before = _utc(request.created_before) if request.created_before is not None else None
    if after_ is not None and before is not None and after_ >= before:
        raise InvalidArgument("created_after must be before created_before")
    return ListQuery(
        tenant_id=request.tenant_id,
        page_size=request.page_size or DEFAULT_PAGE_SIZE,
        states=tuple(sorted(set(request.states))),
        track=request.track,
        mode=request.mode,
        created_after=after_,
        created_before=before,
        after=read_token(request.page_token) if request.page_token else None,
    )


def page_token(record: Record) -> str:
    """The token of the page after record (opaque to partners)."""
    at = _utc(record["created_at"]) - _EPOCH
    micros = (at.days * 86_400 + at.seconds) * 1_000_000 + at.microseconds
    raw = f"{_TOKEN_VERSION}:{micros}:{record['_id']}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_token(token: str) -> Cursor:
    """The cursor a page token names; INVALID_ARGUMENT for anything page_token did not make."""
    refused = InvalidArgument("page_token is not one this API returned")
    if len(token) > 512:
        raise refused
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        version, micros, submission_id = raw.split(":", 2)
        if version != _TOKEN_VERSION or not submission_id or not micros.isdigit():
            raise refused
        at = _EPOCH + timedelta(microseconds=int(micros))
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise refused from None
    return Cursor(at, submission_id)


def selects(query: ListQuery, record: Record) -> bool:
    """Whether record is on the list query asks for, at or after its cursor (the rule the
    store's query implements; the in-memory store uses it as is)."""
    if record.get("tenant_id") != query.tenant_id:
        return False
    if query.states and record["state"] not in query.states:
        return False
    if query.track and record["track"] != query.track:
        return False
    if query.mode and record["mode"] != query.mode:
        return False
    created = _utc(record["created_at"])
    if query.created_after is not None and created < query.created_after:
        return False
    if query.created_before is not None and created >= query.created_before:
        return False
    if query.after is not None:
        return (created, record["_id"]) < (query.after.created_at, query.after.submission_id)
    return True


def newest_first(record: Record) -> tuple[datetime, str]:
    """The sort key of a list (reversed): created_at, then submission id."""
    return _utc(record["created_at"]), str(record["_id"])
