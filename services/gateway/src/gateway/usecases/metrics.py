"""The gateway's per-tenant counters (labels bounded: tenants, tracks, modes, terminal states),
incremented by the submission use cases (the leaderboard cache counts its own reads:
adapters/grpc_peers.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram

from medbench.common.v1 import common_pb2

SUBMISSIONS_CREATED = Counter(
    "medbench_submissions_created_total",
    "Submissions created (not counting idempotent retries), by tenant, track and mode.",
    ["tenant", "track", "mode"],
)
SUBMISSIONS_FINISHED = Counter(
    "medbench_submissions_finished_total",
    "Submissions that reached a terminal state, by tenant and state.",
    ["tenant", "state"],
)
ANSWERS_UPLOADED = Counter(
    "medbench_answers_uploaded_total",
    "Answers accepted by UploadAnswers (resent batches not counted again), by tenant.",
    ["tenant"],
)

IMAGE_BYTES = Counter(
    "medbench_gateway_image_bytes_total",
    "Image bytes streamed to partners by DownloadImages, by tenant.",
    ["tenant"],
)


def created(tenant_id: str, track: int, mode: int) -> None:
    SUBMISSIONS_CREATED.labels(
        tenant_id,
        common_pb2.Track.Name(track).removeprefix("TRACK_").lower(),
        common_pb2.SubmissionMode.Name(mode).removeprefix("SUBMISSION_MODE_").lower(),
    ).inc()


def finished(tenant_id: str, state: str) -> None:
    SUBMISSIONS_FINISHED.labels(tenant_id, state).inc()


# What partners wait for once their last answer is in (the report-time SLO,
# MedbenchReportTimeBudgetBurn): scoring, judging and aggregation, by mode (upload, api).
REPORT_SECONDS = Histogram(
    "medbench_report_seconds",
    "Seconds from a submission's last answer (answers_final_at) to its report (completion), "
    "by mode.",
    ["mode"],
    buckets=(30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400),
)


def reported(record: dict[str, Any], at: datetime) -> float | None:
    """Observes the time from the record's last answer to its report at ``at``; the seconds, or
    None for a record without answers_final_at (older records)."""
    final = record.get("answers_final_at")
    if not isinstance(final, datetime):
        return None
    seconds = max(0.0, (_utc(at) - _utc(final)).total_seconds())
    mode = common_pb2.SubmissionMode.Name(record.get("mode", 0)).removeprefix("SUBMISSION_MODE_")
    REPORT_SECONDS.labels(mode.lower()).observe(seconds)
    return seconds


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


PROBING_FLAGS = Counter(
    "medbench_gateway_probing_flags_total",
    "Probing findings: pairs of one tenant's submissions on one pool whose answers differ in at "
    "most max(5, 2% of the items) (maintainers read them with ListProbingFindings), by tenant "
    "and track.",
    ["tenant", "track"],
)


def probing_flagged(tenant_id: str, track: int) -> None:
    PROBING_FLAGS.labels(
        tenant_id, common_pb2.Track.Name(track).removeprefix("TRACK_").lower()
    ).inc()
