"""What the partner CLI prints: JSON or text on stdout, notes on stderr, tables, and the short
names it shows (and accepts) for the API's enums."""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from medbench.common.v1 import common_pb2
from medbench.leaderboard.v1 import leaderboard_service_pb2
from medbench.submission.v1 import submission_pb2
from medbench.taskpool.v1 import taskpool_pb2

TRACKS = {
    "llm": common_pb2.TRACK_LLM,
    "multimodal": common_pb2.TRACK_MULTIMODAL,
    "agent": common_pb2.TRACK_AGENT,
}
MODES = {"upload": common_pb2.SUBMISSION_MODE_UPLOAD, "api": common_pb2.SUBMISSION_MODE_API}
BOARDS = {"api": taskpool_pb2.BOARD_API, "upload": taskpool_pb2.BOARD_UPLOAD}
RULES = {
    "latest": leaderboard_service_pb2.SELECTION_RULE_LATEST,
    "best": leaderboard_service_pb2.SELECTION_RULE_BEST,
}
# The states a submission can be listed by (`list --state`).
STATES = [
    n.removeprefix("SUBMISSION_STATE_")
    for n, _ in submission_pb2.SubmissionState.items()
    if n != "SUBMISSION_STATE_UNSPECIFIED"
]
AWAITING = submission_pb2.SUBMISSION_STATE_AWAITING_ANSWERS
COMPLETED = submission_pb2.SUBMISSION_STATE_COMPLETED
FAILED_STATES = {submission_pb2.SUBMISSION_STATE_FAILED, submission_pb2.SUBMISSION_STATE_CANCELLED}


def note(message: str) -> None:
    """A progress or warning line on stderr (never stdout, which --json keeps for JSON)."""
    print(f"medbench: {message}", file=sys.stderr, flush=True)


def emit(args: argparse.Namespace, data: Any, human: str | Sequence[str]) -> None:
    """data as one JSON document with --json, else the human text, on stdout."""
    if args.json:
        print(json.dumps(data, ensure_ascii=False, sort_keys=False), flush=True)
    else:
        print(human if isinstance(human, str) else "\n".join(human), flush=True)


def _width(text: str) -> int:
    """Display width in a terminal (CJK characters take two columns)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int, right: bool = False) -> str:
    gap = " " * max(0, width - _width(text))
    return gap + text if right else text + gap


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(_width(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(_pad(str(c), widths[i], i in right) for i, c in enumerate(row)).rstrip()
        for row in [header, *rows]
    ]


def iso(message: Message, name: str) -> str | None:
    """The time stamp field `name` of message as ISO 8601 UTC ("...Z"); None when unset."""
    if not message.HasField(name):
        return None
    stamp: Timestamp = getattr(message, name)
    when: datetime = stamp.ToDatetime(tzinfo=UTC)
    return when.isoformat().replace("+00:00", "Z")


def _short(enum: Any, value: int, prefix: str) -> str:
    name: str = enum.Name(value)
    return name.removeprefix(prefix)


def state_name(state: int) -> str:
    return _short(submission_pb2.SubmissionState, state, "SUBMISSION_STATE_")


def track_name(track: int) -> str:
    return _short(common_pb2.Track, track, "TRACK_").lower()


def mode_name(mode: int) -> str:
    return _short(common_pb2.SubmissionMode, mode, "SUBMISSION_MODE_").lower()


def submission_dict(sub: submission_pb2.Submission) -> dict[str, Any]:
    """The submission as stable JSON (short enum names, ISO times); never an endpoint key."""
    p = sub.progress
    out: dict[str, Any] = {
        "submission_id": sub.submission_id,
        "request_id": sub.request_id,
        "tenant_id": sub.tenant_id,
        "model": {
            "name": sub.model.name,
            "version": sub.model.version,
            "organisation": sub.model.organisation,
            "open_source": sub.model.open_source,
            "parameter_count": sub.model.parameter_count,
            "release_date": sub.model.release_date,
        },
        "track": track_name(sub.track),
        "mode": mode_name(sub.mode),
        "state": state_name(sub.state),
        "state_reason": sub.state_reason,
        "pool_id": sub.pool_id,
        "progress": {
            "expected_items": p.expected_items,
            "answered_items": p.answered_items,
            "scored_items": p.scored_items,
            "infra_failed_items": p.infra_failed_items,
        },
        "created_at": iso(sub, "created_at"),
        "updated_at": iso(sub, "updated_at"),
        "completed_at": iso(sub, "completed_at"),
    }
    if sub.HasField("endpoint"):
        e, d = sub.endpoint, sub.decoding
        out["endpoint"] = {
            "base_url": e.base_url,
            "model": e.model,
            "max_concurrency": e.max_concurrency,
            "self_test": e.self_test,
        }
        out["decoding"] = {
            "temperature": d.temperature,
            "max_tokens": d.max_tokens,
            "context_window": d.context_window,
            "top_p": d.top_p if d.HasField("top_p") else None,
        }
    return out


def progress_text(sub: submission_pb2.Submission) -> str:
    p = sub.progress
    text = f"answered {p.answered_items}/{p.expected_items}, scored {p.scored_items}"
    if p.infra_failed_items:
        text += f", {p.infra_failed_items} failed for infrastructure reasons (resumable)"
    return text


def submission_lines(sub: submission_pb2.Submission) -> list[str]:
    model = " ".join(x for x in (sub.model.name, sub.model.version) if x)
    lines = [
        f"submission  {sub.submission_id}",
        f"model       {model}" + (f" ({sub.model.organisation})" if sub.model.organisation else ""),
        f"tenant      {sub.tenant_id}",
        f"track/mode  {track_name(sub.track)} / {mode_name(sub.mode)}",
        f"state       {state_name(sub.state)}"
        + (f": {sub.state_reason}" if sub.state_reason else ""),
        f"progress    {progress_text(sub)}",
        f"pool        {sub.pool_id}",
        f"request id  {sub.request_id}",
    ]
    if sub.HasField("endpoint"):
        e = sub.endpoint
        lines.append(
            f"endpoint    {e.base_url} model {e.model}, max concurrency {e.max_concurrency}"
            + (", self-test" if e.self_test else "")
        )
    if created := iso(sub, "created_at"):
        lines.append(f"created     {created}")
    if completed := iso(sub, "completed_at"):
        lines.append(f"completed   {completed}")
    return lines
