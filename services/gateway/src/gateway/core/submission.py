"""Submission rules: what a create may ask, the record it makes, how an upload changes it, and
how the dispatcher's progress and the aggregator's completion are applied (pure).

A submission record is the dict the SubmissionStore keeps (adapters/mongo_submissions.py);
these functions read one and say what to write, the use cases do the writing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.core import uploads
from gateway.core.endpoints import Decoding, check_endpoint, effective_decoding
from gateway.core.uploads import AcceptedAnswer
from medbench_runtime.egress import EgressPolicy
from medbench_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument

AWAITING = "AWAITING_ANSWERS"
DISPATCHING = "DISPATCHING"
SCORING = "SCORING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})

# medbench.common.v1 enums (checked equal to the generated ones in the gateway's tests).
MODE_UPLOAD = 1
MODE_API = 2
TRACKS = frozenset({1, 2, 3})

# Dispatch states (medbench.dispatch.v1.DispatchProgressed.state).
DISPATCH_DONE = "DONE"
DISPATCH_FAILED = "FAILED"

Record = dict[str, Any]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str = ""
    organisation: str = ""
    open_source: bool = False
    parameter_count: str = ""
    release_date: str = ""


@dataclass(frozen=True)
class EndpointRequest:
    """An API-mode submission's endpoint as asked (api_key never stored in the record)."""

    base_url: str
    model: str
    max_concurrency: int
    api_key: str = ""
    self_test: bool = False
    declared: Decoding | None = None


@dataclass(frozen=True)
class CreateRequest:
    tenant_id: str
    request_id: str
    model: ModelInfo
    track: int
    mode: int
    endpoint: EndpointRequest | None = None


@dataclass(frozen=True)
class ValidCreate:
    """A create that passed every check that needs no peer: names normalised, the endpoint's
    URL normalised and the decoding settings in effect."""

    request: CreateRequest
    submission_id: str
    model: ModelInfo
    base_url: str = ""
    decoding: Decoding | None = None

    @property
    def api(self) -> bool:
        return self.request.mode == MODE_API


def shown_model(model: ModelInfo) -> ModelInfo:
    """model with its leaderboard-shown names checked and normalised (NFKC)."""
    if not model.name.strip():
        raise InvalidArgument("model.name is required")
    fields = {
        f: uploads.check_text(f"model.{f}", getattr(model, f), most)
        for f, most in uploads.MODEL_FIELDS.items()
    }
    return ModelInfo(
        name=uploads.check_text("model.name", model.name, uploads.MAX_MODEL_NAME),
        open_source=model.open_source,
        release_date=model.release_date,
        **fields,
    )


def validate_create(request: CreateRequest, egress: EgressPolicy | None = None) -> ValidCreate:
    """INVALID_ARGUMENT naming the field for anything a create cannot ask."""
    uploads.check_request_id("request_id", request.request_id)
    # Names are stored and shown as normalised (NFKC); a retry compares the normalised form.
    model = shown_model(request.model)
    uploads.check_date("model.release_date", model.release_date)
    if request.track not in TRACKS:
        raise InvalidArgument("track must be one of TRACK_LLM, TRACK_MULTIMODAL, TRACK_AGENT")
    api = request.mode == MODE_API
    if not api and request.mode != MODE_UPLOAD:
        raise InvalidArgument("mode must be SUBMISSION_MODE_UPLOAD or SUBMISSION_MODE_API")
    endpoint = request.endpoint
    if api != (endpoint is not None and endpoint.base_url != ""):
        raise InvalidArgument("an endpoint is required in API mode and not allowed in upload mode")
    submission_id = uploads.submission_id_for(request.tenant_id, request.request_id)
    if not api or endpoint is None:
        return ValidCreate(request, submission_id, model)
    # The URL form, its port and an address literal are refused here, before any call.
    base_url = check_endpoint(
        endpoint.base_url, endpoint.model, endpoint.max_concurrency, endpoint.api_key, egress
    )
    decoding = effective_decoding(endpoint.declared, endpoint.self_test)
    return ValidCreate(request, submission_id, model, base_url, decoding)


def same_request(record: Record, valid: ValidCreate) -> Record:
    """A retried create must ask for the same thing; a reused request_id must not."""
    asked = (valid.model.name, valid.request.track, valid.request.mode)
    if (record["model"]["name"], record["track"], record["mode"]) != asked:
        raise AlreadyExists(
            f"request_id {record['request_id']!r} was already used for submission "
            f"{record['_id']} with a different model, track or mode"
        )
    return record


def new_record(
    valid: ValidCreate, pool_id: str, item_count: int, canary_items: int, now: datetime
) -> Record:
    """The record of a created submission: DISPATCHING in API mode (the platform answers),
    AWAITING_ANSWERS in upload mode."""
    m, api = valid.model, valid.api
    record: Record = {
        "_id": valid.submission_id,
        "tenant_id": valid.request.tenant_id,
        "request_id": valid.request.request_id,
        "model": {
            "name": m.name,
            "version": m.version,
            "organisation": m.organisation,
            "open_source": m.open_source,
            "parameter_count": m.parameter_count,
            "release_date": m.release_date,
        },
        "track": valid.request.track,
        "mode": valid.request.mode,
        "state": DISPATCHING if api else AWAITING,
        "state_reason": "",
        "pool_id": pool_id,
        "expected": item_count,
        # Extra items beyond the pool's (0: canaries are pool items; more only for a
        # submission assigned before that, whose download keeps its fictitious extras).
        "canaries": canary_items,
        "answered": 0,
        "answered_shown": 0,
        "answered_bits": bytes(uploads.new_bitmap(item_count + canary_items)),
        "created_at": now,
        "updated_at": now,
    }
    if api:
        e, d = valid.request.endpoint, valid.decoding
        assert e is not None and d is not None
        record["endpoint"] = {
            "base_url": valid.base_url,
            "model": e.model,
            "max_concurrency": e.max_concurrency,
            "self_test": e.self_test,
        }
        record["decoding"] = {
            "temperature": d.temperature,
            "max_tokens": d.max_tokens,
            "context_window": d.context_window,
            "top_p": d.top_p,
        }
    return record


def require_awaiting(record: Record) -> None:
    if record["state"] != AWAITING:
        raise FailedPrecondition(
            f"submission {record['_id']} is {record['state']}; answers are accepted only while "
            f"it is {AWAITING}"
        )


@dataclass(frozen=True)
class UploadPlan:
    """What one accepted upload message changes: the record's fields, the answers to score
    (every pool item's, canaries included: they are pool items; an older download's extra
    items are kept with the batch but never scored), and on final the ordinals never answered
    (scored as missing)."""

    fields: Record
    scored: list[AcceptedAnswer]
    missing: list[int] = field(default_factory=list)

    @property
    def state(self) -> str:
        return str(self.fields["state"])


def plan_upload(
    current: Record,
    accepted: Sequence[AcceptedAnswer],
    final: bool,
    item_name: Mapping[int, tuple[str, str]],
    now: datetime | None = None,
) -> UploadPlan:
    """The upload of accepted into current (read in the upload's transaction); INVALID_ARGUMENT
    for an item answered in an earlier batch, FAILED_PRECONDITION unless AWAITING_ANSWERS. The
    upload that ends the answers stamps answers_final_at (now; see publishable)."""
    require_awaiting(current)
    bits = bytearray(current["answered_bits"])
    ordinals = [a.ordinal for a in accepted]
    twice = uploads.already_set(bits, ordinals)
    if twice:
        names = ", ".join(repr(item_name[o][0]) for o in twice[:5])
        raise InvalidArgument(f"items already answered in an earlier batch: {names}")
    uploads.set_bits(bits, ordinals)
    expected = current["expected"]
    scored = [a for a in accepted if a.ordinal < expected]
    # Every shown item counts as answered (an older download's extras too) and the upload ends
    # only when every shown item is in (or on final).
    before = current["answered_shown"] if "answered_shown" in current else current["answered"]
    shown = int(before) + len(accepted)
    done = shown >= expected + current.get("canaries", 0) or final
    fields: Record = {
        "answered_bits": bytes(bits),
        "answered": current["answered"] + len(scored),
        "answered_shown": shown,
        "state": SCORING if done else AWAITING,
    }
    if done and now is not None:
        fields["answers_final_at"] = now
    return UploadPlan(
        fields=fields,
        scored=scored,
        missing=uploads.unset_ordinals(bits, expected) if final else [],
    )


@dataclass(frozen=True)
class DispatchProgress:
    """The dispatcher's report on an API-mode run (medbench.dispatch.v1.DispatchProgressed)."""

    submission_id: str
    tenant_id: str
    state: str
    reason: str
    answered: int
    infra_failed: int
    sequence: int
    # On DONE: the run's answer digests by ordinal (medbench_runtime.answer_digest), for
    # probing detection; b"" otherwise (or for a run too large to carry them).
    answer_digests: bytes = b""


def dispatch_fields(record: Record, progress: DispatchProgress, now: datetime) -> Record | None:
    """What progress changes in record, or None when it is not newer than what was applied
    (a redelivered or late event never moves a submission backwards).

    Progress and completion come on different topics, so either may arrive first: counters
    follow the dispatcher in any state but COMPLETED (whose counts are final, see
    completion_fields) and never go down (an answered item stays answered; a late event with
    an older count changes nothing). The state moves only from DISPATCHING: to SCORING when
    every item is answered, to FAILED with the dispatcher's reason. A stall shows its reason; a
    run that goes on again (resumed) clears it."""
    if progress.sequence <= int(record.get("dispatch_sequence", 0)):
        return None
    if record["state"] == COMPLETED:
        return None
    answered = max(progress.answered, int(record.get("answered", 0)))
    fields: Record = {
        "dispatch_sequence": progress.sequence,
        "answered": answered,
        "answered_shown": answered,
        "infra_failed": progress.infra_failed,
    }
    if record["state"] != DISPATCHING:
        return fields
    if progress.state == DISPATCH_FAILED:
        return fields | {"state": FAILED, "state_reason": progress.reason, "completed_at": now}
    if progress.state == DISPATCH_DONE:
        return fields | {"state": SCORING, "answers_final_at": now}
    return fields | {"state_reason": progress.reason}


def completion_fields(record: Record, scored_items: int, completed_at: datetime) -> Record:
    """Every item is scored and the report stored. An API-mode submission's items were all
    answered too (an item that failed for infrastructure reasons holds the run back): its
    answered counts are set here, since the dispatcher's last progress event may come after."""
    fields: Record = {"state": COMPLETED, "scored": scored_items, "completed_at": completed_at}
    if record["mode"] == MODE_API:
        fields |= {"answered": scored_items, "answered_shown": scored_items}
    return fields


# -- disclosed pools (README, "What partners see") ----------------------------------------------
# Once maintainers disclose a pool its answer keys are public: a submission on it takes no more
# answers (it is ended, FAILED, its accepted answers kept) and is published only if its answers
# were all in before the disclosure.


def _utc(at: datetime) -> datetime:
    """at in UTC (a naive time is UTC, as stored)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def disclosure_day(disclosed_at: datetime) -> str:
    return _utc(disclosed_at).strftime("%Y-%m-%d")


def closed_by_disclosure(record: Record, disclosed_at: datetime, now: datetime) -> Record:
    """The fields that end a submission still taking answers on a disclosed pool: FAILED with
    the reason (nothing it holds is deleted: its accepted batches stay stored)."""
    return {
        "state": FAILED,
        "state_reason": (
            f"pool {record['pool_id']} was disclosed on {disclosure_day(disclosed_at)} (its "
            f"answer keys are public); answers were no longer accepted"
        ),
        "completed_at": now,
    }


def no_more_answers(record: Record, disclosed_at: datetime) -> FailedPrecondition:
    """The refusal of an upload to a submission whose pool is disclosed."""
    return FailedPrecondition(
        f"submission {record['_id']} cannot be completed: its pool {record['pool_id']} was "
        f"disclosed on {disclosure_day(disclosed_at)} and its answer keys are public, so it "
        f"takes no more answers; the submission is now {FAILED} (its accepted answers are "
        f"kept). Create a new submission: it is assigned the board's current pool"
    )


def answers_final_at(record: Record) -> datetime | None:
    """When the submission's answers were all in: stamped when its upload ended or its
    dispatch was done; a record from before the stamp (or whose completion came before the
    dispatcher's last progress) has only completed_at, which is later: None when neither."""
    at = record.get("answers_final_at") or record.get("completed_at")
    return at if isinstance(at, datetime) else None


def publishable(record: Record, disclosed_at: datetime | None) -> FailedPrecondition | None:
    """Why a COMPLETED submission cannot be published given its pool's disclosure (None: it
    can): on a disclosed pool, only when its answers were all in before the disclosure."""
    if disclosed_at is None:
        return None
    final = answers_final_at(record)
    if final is not None and _utc(final) < _utc(disclosed_at):
        return None
    return FailedPrecondition(
        f"submission {record['_id']} cannot be published: its pool {record['pool_id']} was "
        f"disclosed on {disclosure_day(disclosed_at)} (its answer keys are public) before "
        f"its answers were all in"
    )


def shows_scoring_progress(record: Record) -> bool:
    """Not while answers are still coming: scoring progress per uploaded batch would time the
    scoring of single answers (and, for an older download, tell its unscored extra items)."""
    return record["state"] in (SCORING, DISPATCHING)
