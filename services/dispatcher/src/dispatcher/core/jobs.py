"""What a dispatch job is: its contract with the endpoint, its recorded item outcomes and the
progress it reports (pure types and rules)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from dispatcher.core.policy import DecodingSettings
from medbench_runtime.answer_digest import DIGEST_BYTES, EMPTY

RUNNING = "RUNNING"
DONE = "DONE"
STALLED = "STALLED"
FAILED = "FAILED"
ENDED = (DONE, FAILED)

ANSWERED = "answered"
INFRA_FAILED = "infra_failed"


@dataclass(frozen=True)
class JobSpec:
    """One API-mode submission to dispatch, as the gateway created it."""

    submission_id: str
    tenant_id: str
    pool_id: str
    track: int
    expected: int
    base_url: str
    model: str
    max_concurrency: int
    decoding: DecodingSettings
    self_test: bool = False


@dataclass(frozen=True)
class JobStatus:
    """A job as stored: its state and, once a run ended, its outcome counts (None before)."""

    submission_id: str
    tenant_id: str
    state: str
    reason: str = ""
    answered: int | None = None
    infra_failed: int | None = None
    calls: int = 0
    updated_at: datetime | None = None


@dataclass(frozen=True)
class ItemOutcome:
    """How one item was settled: answered (its text) or failed for infrastructure reasons."""

    submission_id: str
    item_id: str
    ordinal: int
    dataset: str
    prompt_hash: str
    status: str
    text: str
    clipped: bool
    finish_reason: str
    usage: dict[str, int]
    latency_ms: float
    attempts: int
    error: str
    truncated: bool
    recorded_at: datetime
    # The answer's digest as it is scored (medbench_runtime.answer_digest; b"" when not
    # answered): what probing detection compares, kept so a restarted run still has it.
    digest: bytes = b""

    @property
    def record_id(self) -> str:
        return f"{self.submission_id}:{self.item_id}"


@dataclass(frozen=True)
class Recorded:
    """An item outcome recorded before (batched: the batch that sent it on, "" if none yet)."""

    item_id: str
    status: str
    ordinal: int = 0
    dataset: str = ""
    text: str = ""
    prompt_hash: str = ""
    batched: str = ""
    digest: bytes = b""


@dataclass(frozen=True)
class Progress:
    """What a progress event reports about one job."""

    submission_id: str
    tenant_id: str
    state: str
    reason: str
    answered: int
    infra_failed: int
    # On DONE: answers_vector of the run (b"" otherwise).
    answer_digests: bytes = b""


MAX_DIGEST_ITEMS = 50_000
"""Most items whose digests a DONE event carries (200,000 bytes): the event stays under the
smallest MEDBENCH_KAFKA__MAX_EVENT_BYTES admitted (256 KiB). A larger run is not compared."""


def answers_vector(recorded: Iterable[Recorded]) -> bytes:
    """The run's answers as probing detection compares them (gateway core/probing.py): one
    digest per ordinal 0..highest recorded, EMPTY where an item has no answer; b"" for a run
    of more than MAX_DIGEST_ITEMS items."""
    answered = [r for r in recorded if r.status == ANSWERED and r.digest]
    if not answered:
        return b""
    items = max(r.ordinal for r in answered) + 1
    if items > MAX_DIGEST_ITEMS:
        return b""
    out = bytearray(EMPTY * items)
    for r in answered:
        if r.ordinal >= 0 and len(r.digest) == DIGEST_BYTES:
            out[r.ordinal * DIGEST_BYTES : (r.ordinal + 1) * DIGEST_BYTES] = r.digest
    return bytes(out)


def end_state(failed: str, infra_failed: int) -> tuple[str, str]:
    """(state, reason) of a run with nothing left to send: FAILED with the run's reason, STALLED
    when items failed for infrastructure reasons (resumable), DONE otherwise."""
    if failed:
        return FAILED, failed
    if infra_failed:
        return STALLED, (
            f"{infra_failed} items failed for infrastructure reasons; they are not scored or "
            f"charged and can be resumed"
        )
    return DONE, ""


def keeps_key(state: str) -> bool:
    """A STALLED run keeps its endpoint key for a resume; DONE and FAILED make no call again."""
    return state not in ENDED


def stalled_too_long(days: float) -> str:
    return (
        f"stalled for more than {days:g} days without a resume: its endpoint API key was "
        f"deleted; create a new submission"
    )


# The reason a job fails with when the platform itself cannot serve it (details in the log).
INTERNAL_FAILURE = "the platform could not read this submission's items (an internal error)"
KEY_NOT_HELD = (
    "this submission's endpoint API key is no longer held (it is deleted when a run ends, or "
    "after a long stall); create a new submission"
)
KEY_UNREADABLE = (
    "the platform could not read this submission's endpoint API key (an internal error)"
)
