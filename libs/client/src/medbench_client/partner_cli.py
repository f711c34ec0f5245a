"""`medbench`: the partner command line, over the public gRPC API of the gateway only.

    medbench configure [--gateway HOST:PORT] [--key KEY|-] [--profile NAME] [--default]
    medbench whoami
    medbench submit --model NAME [--request-id ID] [--track llm|multimodal|agent]
                    [--mode upload|api] [--endpoint-url URL --endpoint-model M
                    --endpoint-key-env VAR --max-concurrency N] [--self-test]
    medbench download SUBMISSION --out prompts.jsonl
    medbench upload SUBMISSION answers.jsonl [--batch-size N] [--final/--no-final]
    medbench watch SUBMISSION
    medbench status SUBMISSION
    medbench report SUBMISSION [--out DIR]
    medbench publish SUBMISSION [--withdraw]
    medbench resume SUBMISSION
    medbench leaderboard [--track llm] [--board api|upload] [--cycle C] [--rule latest|best]
    medbench usage

Options every command takes (before or after its name): --gateway HOST:PORT, --key KEY,
--profile NAME, --tls, --ca-file PEM, --json (machine-readable JSON on stdout, nothing else).
Each setting comes from the flag, else the environment (MEDBENCH_GATEWAY, MEDBENCH_API_KEY,
MEDBENCH_PROFILE, MEDBENCH_TLS, MEDBENCH_CA_FILE), else the profile of the config file that
`medbench configure` writes ($XDG_CONFIG_HOME/medbench/config.json, mode 0600).

Errors print `medbench: <CODE>: <details>` on stderr. Exit codes: 0 done, 1 other error,
2 bad usage or invalid argument, 3 not found, 4 not ready / failed precondition / the submission
FAILED or was CANCELLED, 5 gateway unreachable, 6 unauthenticated or permission denied,
7 quota exhausted (with the server's `retry-after` when it sends one).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import secrets
import sys
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc

from medbench.common.v1 import common_pb2
from medbench.identity.v1 import access_pb2, identity_service_pb2, identity_service_pb2_grpc
from medbench.leaderboard.v1 import leaderboard_service_pb2, leaderboard_service_pb2_grpc
from medbench.report.v1 import report_pb2
from medbench.submission.v1 import (
    submission_pb2,
    submission_service_pb2,
    submission_service_pb2_grpc,
)
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client import cli_config
from medbench_client.api import PartnerClient, channel
from medbench_client.cli_config import ConfigError, Settings
from medbench_client.cli_files import (
    MAX_BATCH,
    AnswerLine,
    Batch,
    InputError,
    ProgressLine,
    PromptWriter,
    UploadState,
    final_marker_id,
    plan_batches,
    prepare_download,
    prompt_line,
    read_answers,
    state_path,
)
from medbench_client.render import (
    DatasetRow,
    DimensionRow,
    ItemResult,
    ReportDocument,
    write_report,
)
from medbench_runtime.checksums import answers_sha256

T = TypeVar("T")

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_NOT_READY = 4
EXIT_UNREACHABLE = 5
EXIT_DENIED = 6
EXIT_QUOTA = 7

EXIT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_USAGE,
    grpc.StatusCode.OUT_OF_RANGE: EXIT_USAGE,
    # A request id reused for another model, track or mode.
    grpc.StatusCode.ALREADY_EXISTS: EXIT_USAGE,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION: EXIT_NOT_READY,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNREACHABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNREACHABLE,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_DENIED,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: EXIT_QUOTA,
}
# Worth another try after a pause: the gateway (or the way to it) was down, or slow.
# ABORTED: a concurrent change got in the way (every call the CLI repeats is idempotent).
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED}
)
UPLOAD_TIMEOUT_S = 300.0
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0

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
AWAITING = submission_pb2.SUBMISSION_STATE_AWAITING_ANSWERS
COMPLETED = submission_pb2.SUBMISSION_STATE_COMPLETED
FAILED_STATES = {submission_pb2.SUBMISSION_STATE_FAILED, submission_pb2.SUBMISSION_STATE_CANCELLED}
REQUEST_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")


class CliError(Exception):
    """A failure the CLI reports as `medbench: <code>: <message>` with an exit code."""

    def __init__(self, code: str, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code


def usage_error(message: str) -> CliError:
    return CliError("INVALID_ARGUMENT", message, EXIT_USAGE)


# -- errors and exit codes ------------------------------------------------------------------


def exit_code_for(code: grpc.StatusCode | None) -> int:
    """The exit code of a failed call's status."""
    return EXIT_CODES.get(code, EXIT_OTHER) if code is not None else EXIT_OTHER


def retry_after(exc: grpc.aio.AioRpcError) -> int | None:
    """The `retry-after` trailing metadata (seconds) of a refused call, when present."""
    for key, value in exc.trailing_metadata() or ():
        if key.lower() == "retry-after":
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            try:
                return max(0, int(float(text)))
            except ValueError:
                return None
    return None


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def rpc_error_message(exc: grpc.aio.AioRpcError) -> str:
    """`medbench: CODE: details` (with when to retry, for an exhausted quota)."""
    code = exc.code()
    name = code.name if code is not None else "UNKNOWN"
    details = exc.details() or "(no details)"
    wait = retry_after(exc)
    if wait is not None:
        details += f" (retry-after: {wait} s, about {_duration(wait)})"
    return f"medbench: {name}: {details}"


def backoff_s(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Pause before retry number attempt (1, 2, ...): exponential, capped, half jittered."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
    return ceiling / 2 + rng() * ceiling / 2


async def with_retries(
    call: Callable[[], Awaitable[T]],
    attempts: int,
    what: str,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    rng: Callable[[], float] = random.random,
) -> T:
    """call(), again after a backoff while it fails with UNAVAILABLE or DEADLINE_EXCEEDED, at
    most attempts times in all. Only for calls that are safe to repeat."""
    attempt = 1
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE or attempt >= attempts:
                raise
            pause = backoff_s(attempt, rng)
            note(f"{what}: {exc.code().name}, retrying in {pause:.1f} s ({attempt}/{attempts - 1})")
            await sleep(pause)
            attempt += 1


def note(message: str) -> None:
    """A progress or warning line on stderr (never stdout, which --json keeps for JSON)."""
    print(f"medbench: {message}", file=sys.stderr, flush=True)


# -- connection and output ---------------------------------------------------------------


def _is_loopback(address: str) -> bool:
    host = address.split("///")[-1]
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Session:
    """The gateway as the resolved settings name it; the channel opens on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._chan: grpc.aio.Channel | None = None

    @property
    def chan(self) -> grpc.aio.Channel:
        if self._chan is None:
            s = self.settings
            credentials = None
            if s.tls or s.ca_file:
                roots = None
                if s.ca_file:
                    try:
                        roots = Path(s.ca_file).expanduser().read_bytes()
                    except OSError as exc:
                        raise usage_error(f"cannot read --ca-file {s.ca_file}: {exc}") from None
                credentials = grpc.ssl_channel_credentials(root_certificates=roots)
            elif not _is_loopback(s.gateway):
                note(
                    f"warning: the API key goes to {s.gateway} without TLS (use --tls unless a "
                    "trusted network or proxy protects it)"
                )
            self._chan = channel(s.gateway, s.api_key, credentials)
        return self._chan

    @property
    def partner(self) -> PartnerClient:
        return PartnerClient(self.chan)

    @property
    def submissions(self) -> submission_service_pb2_grpc.SubmissionServiceStub:
        return submission_service_pb2_grpc.SubmissionServiceStub(self.chan)

    @property
    def identity(self) -> identity_service_pb2_grpc.IdentityServiceStub:
        return identity_service_pb2_grpc.IdentityServiceStub(self.chan)

    @property
    def leaderboard(self) -> leaderboard_service_pb2_grpc.LeaderboardServiceStub:
        return leaderboard_service_pb2_grpc.LeaderboardServiceStub(self.chan)

    async def close(self) -> None:
        if self._chan is not None:
            await self._chan.close()


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


def _iso(sub: Any, name: str) -> str | None:
    if not sub.HasField(name):
        return None
    return getattr(sub, name).ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def state_name(state: int) -> str:
    return submission_pb2.SubmissionState.Name(state).removeprefix("SUBMISSION_STATE_")


def track_name(track: int) -> str:
    return common_pb2.Track.Name(track).removeprefix("TRACK_").lower()


def mode_name(mode: int) -> str:
    return common_pb2.SubmissionMode.Name(mode).removeprefix("SUBMISSION_MODE_").lower()


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
        "created_at": _iso(sub, "created_at"),
        "updated_at": _iso(sub, "updated_at"),
        "completed_at": _iso(sub, "completed_at"),
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
    if created := _iso(sub, "created_at"):
        lines.append(f"created     {created}")
    if completed := _iso(sub, "completed_at"):
        lines.append(f"completed   {completed}")
    return lines


# -- report ---------------------------------------------------------------------------------
def _interval(score: float, low: float, high: float) -> tuple[float, float]:
    """A report built before intervals existed has none (both 0): show the score alone."""
    return (score, score) if low == high == 0.0 else (low, high)


def document(
    sub: submission_pb2.Submission,
    report: report_pb2.Report,
    items: Sequence[report_pb2.ItemResult] = (),
) -> ReportDocument:
    """The report and the owner's item results as a renderable document."""
    lineage = report.lineage
    return ReportDocument(
        submission_id=report.submission_id,
        model=sub.model.name + (f" {sub.model.version}" if sub.model.version else ""),
        track=common_pb2.Track.Name(sub.track).removeprefix("TRACK_").lower(),
        board="api" if sub.mode == common_pb2.SUBMISSION_MODE_API else "upload",
        pool_id=lineage.pool_id,
        created_at=report.created_at.ToDatetime().astimezone(),
        overall=report.overall,
        overall_low=_interval(report.overall, report.overall_low, report.overall_high)[0],
        overall_high=_interval(report.overall, report.overall_low, report.overall_high)[1],
        equated=report.equated if report.HasField("equated") else None,
        dimensions=tuple(
            DimensionRow(d.dimension, None, d.score, *_interval(d.score, d.low, d.high), d.datasets)
            for d in report.dimensions
        ),
        datasets=tuple(
            DatasetRow(
                d.dataset,
                d.dimension,
                d.score,
                *_interval(d.score, d.low, d.high),
                d.items,
                d.units,
                d.rule,
                "n/a",  # the public report does not name the metric yet
            )
            for d in report.datasets
        ),
        items=tuple(
            ItemResult(
                i.item_id,
                i.dataset,
                i.score,
                "; ".join(p.parsed for p in i.parts if p.parsed),
            )
            for i in items
            if i.HasField("score")  # an item no judge could score has no score to show
        ),
        lineage={
            "pool": lineage.pool_id,
            "scorer version": lineage.scorer_version,
            "aggregator version": lineage.aggregator_version,
            "item scores digest": lineage.item_scores_digest,
            "model": lineage.model,
            "endpoint model": lineage.endpoint_model,
            "decoding": lineage.decoding,
            "judge models": ", ".join(lineage.judge_models),
            "rubric versions": ", ".join(lineage.rubric_versions),
            "calibrations": ", ".join(lineage.calibration_ids),
        },
    )


# -- commands ------------------------------------------------------------------------------


def _read_key_from_stdin() -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("API key: ")
    return sys.stdin.readline()


def configure(args: argparse.Namespace) -> int:
    """Writes the given settings into a profile of the config file (mode 0600)."""
    env = os.environ
    path = cli_config.config_path(env)
    name = args.profile or env.get(cli_config.ENV_PROFILE) or ""
    if not name:
        name = str(cli_config.load(path).get("default_profile") or cli_config.DEFAULT_PROFILE)
    key = args.key
    if key == "-":
        key = _read_key_from_stdin()
    elif (
        key is None
        and args.gateway is None
        and args.tls is None
        and args.ca_file is None
        and sys.stdin.isatty()
    ):
        entered = _read_key_from_stdin().strip()
        key = entered or None  # empty: keep the stored key
    profile = cli_config.save_profile(
        path,
        name,
        gateway=args.gateway,
        api_key=key,
        tls=args.tls,
        ca_file=args.ca_file,
        make_default=args.default,
    )
    data = cli_config.load(path)
    shown = {
        "config_file": str(path),
        "profile": name,
        "default_profile": data.get("default_profile"),
        "gateway": profile.get("gateway", ""),
        "key_id": cli_config.key_id(profile.get("api_key", "")),
        "tls": bool(profile.get("tls", False)),
        "ca_file": profile.get("ca_file", ""),
    }
    emit(
        args,
        shown,
        [
            f"wrote profile {name!r} to {path} (mode 0600)",
            f"  gateway  {shown['gateway'] or '(not set)'}",
            f"  key      {shown['key_id'] or '(not set)'}",
            "check it with: medbench whoami" + (f" --profile {name}" if args.profile else ""),
        ],
    )
    return EXIT_OK


async def whoami(args: argparse.Namespace, s: Session) -> int:
    me = await s.identity.WhoAmI(identity_service_pb2.WhoAmIRequest())
    role = access_pb2.Role.Name(me.role).removeprefix("ROLE_").lower()
    sources = s.settings.sources
    emit(
        args,
        {
            "key_id": f"mbk_{me.key_id}",
            "tenant_id": me.tenant_id,
            "role": role,
            "gateway": s.settings.gateway,
            "profile": s.settings.profile,
            "sources": sources,
        },
        [
            f"key      mbk_{me.key_id}  (from {sources.get('api_key', '?')})",
            f"tenant   {me.tenant_id}",
            f"role     {role}",
            f"gateway  {s.settings.gateway}  (from {sources.get('gateway', '?')})",
        ],
    )
    return EXIT_OK


def new_request_id() -> str:
    return f"cli-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def _endpoint(args: argparse.Namespace) -> submission_pb2.Endpoint | None:
    endpoint_flags = {
        "--endpoint-url": args.endpoint_url,
        "--endpoint-model": args.endpoint_model,
        "--endpoint-key-env": args.endpoint_key_env,
        "--max-concurrency": args.max_concurrency,
        "--self-test": args.self_test or None,
        "--temperature": args.temperature,
        "--max-tokens": args.max_tokens,
        "--context-window": args.context_window,
        "--top-p": args.top_p,
    }
    if args.mode != "api":
        given = [flag for flag, value in endpoint_flags.items() if value is not None]
        if given:
            raise usage_error(f"{', '.join(given)} only apply with --mode api")
        return None
    if not args.endpoint_url or not args.endpoint_model:
        raise usage_error("--mode api needs --endpoint-url and --endpoint-model")
    key = ""
    if args.endpoint_key_env:
        if args.endpoint_key_env not in os.environ:
            raise usage_error(
                f"environment variable {args.endpoint_key_env} (--endpoint-key-env) is not set"
            )
        key = os.environ[args.endpoint_key_env].strip()
        if not key:
            raise usage_error(f"environment variable {args.endpoint_key_env} is empty")
    endpoint = submission_pb2.Endpoint(
        base_url=args.endpoint_url,
        model=args.endpoint_model,
        api_key=key,
        max_concurrency=args.max_concurrency or 4,
        self_test=args.self_test,
    )
    declared = (args.temperature, args.max_tokens, args.context_window, args.top_p)
    if any(v is not None for v in declared):
        if not args.self_test:
            note("warning: declared decoding settings count only with --self-test")
        d = endpoint.declared
        d.temperature = args.temperature if args.temperature is not None else 0.7
        d.max_tokens = args.max_tokens if args.max_tokens is not None else 512
        d.context_window = args.context_window if args.context_window is not None else 2048
        if args.top_p is not None:
            d.top_p = args.top_p
    return endpoint


async def submit(args: argparse.Namespace, s: Session) -> int:
    if args.mode is None:
        args.mode = "api" if args.endpoint_url else "upload"
    request_id = args.request_id or new_request_id()
    if not 1 <= len(request_id) <= 128 or not set(request_id) <= REQUEST_ID_CHARS:
        raise usage_error("--request-id must be 1-128 characters of [A-Za-z0-9._:-]")
    endpoint = _endpoint(args)
    response = await s.submissions.CreateSubmission(
        submission_service_pb2.CreateSubmissionRequest(
            request_id=request_id,
            model=submission_pb2.ModelInfo(
                name=args.model,
                version=args.model_version,
                organisation=args.organisation,
                open_source=args.open_source,
                parameter_count=args.parameter_count,
                release_date=args.release_date,
            ),
            track=TRACKS[args.track],
            mode=MODES[args.mode],
            endpoint=endpoint,
        )
    )
    sub = response.submission
    data = {**submission_dict(sub), "created": response.created}
    said = "created" if response.created else "already created by an earlier call with this id"
    nxt = (
        f"next: medbench download {sub.submission_id} --out prompts.jsonl"
        if args.mode == "upload"
        else f"next: medbench watch {sub.submission_id}"
    )
    emit(
        args,
        data,
        [
            f"submission {sub.submission_id} {said}",
            f"request id {request_id} (submit again with --request-id {request_id} to retry "
            "without creating another)",
            f"state {state_name(sub.state)}, pool {sub.pool_id}, "
            f"{sub.progress.expected_items} items",
            nxt,
        ],
    )
    return EXIT_OK


async def download(args: argparse.Namespace, s: Session) -> int:
    """DownloadPrompts into a JSONL file, appending to a kept partial download."""
    out = Path(args.out)
    partial = prepare_download(out)
    if partial.dropped_bytes:
        note(f"{out}: dropped a cut last line ({partial.dropped_bytes} bytes)")
    have = set(partial.item_ids)
    sub = await s.partner.get(args.submission)
    progress = ProgressLine("download", sub.progress.expected_items or None)
    progress.advance(len(have))
    appended = streamed = 0
    seen: set[str] = set()
    request = submission_service_pb2.DownloadPromptsRequest(submission_id=args.submission)
    with PromptWriter(out) as writer:
        async for batch in s.submissions.DownloadPrompts(request):
            for prompt in batch.prompts:
                if not streamed and have and prompt.item_id not in have:
                    raise InputError(
                        f"{out} holds prompts of another download (its items do not start with "
                        f"{prompt.item_id!r}); pass another --out or delete it"
                    )
                streamed += 1
                seen.add(prompt.item_id)
                if prompt.item_id in have:
                    continue
                writer.append(prompt_line(prompt))
                have.add(prompt.item_id)
                appended += 1
                progress.advance(1, total=max(progress.total or 0, streamed))
            writer.flush()
    progress.close()
    foreign = [i for i in partial.item_ids if i not in seen]
    if foreign:
        raise InputError(
            f"{out} holds {len(foreign)} items that submission {args.submission} does not have "
            f"(e.g. {foreign[0]!r}); pass another --out or delete it"
        )
    data = {
        "submission_id": args.submission,
        "out": str(out),
        "items": streamed,
        "appended": appended,
        "kept": len(partial.item_ids),
    }
    kept = f" ({len(partial.item_ids)} kept from an earlier run)" if partial.item_ids else ""
    emit(args, data, f"wrote {streamed} prompts to {out}{kept}")
    return EXIT_OK


def _answers_request(
    submission_id: str, batch: Batch
) -> submission_service_pb2.UploadAnswersRequest:
    return submission_service_pb2.UploadAnswersRequest(
        submission_id=submission_id,
        batch_id=batch.batch_id,
        final=batch.final,
        answers=[submission_pb2.Answer(item_id=i, answer=a) for i, a in batch.answers],
        answers_sha256=answers_sha256(batch.answers),
    )


async def send_batch(
    s: Session, submission_id: str, batch: Batch, attempts: int
) -> submission_service_pb2.UploadAnswersResponse:
    """One batch in its own UploadAnswers stream, resent after UNAVAILABLE (a resend of an
    accepted batch is a replay, never counted twice)."""
    stub = s.submissions

    async def call() -> submission_service_pb2.UploadAnswersResponse:
        request = _answers_request(submission_id, batch)
        return await stub.UploadAnswers(iter([request]), timeout=UPLOAD_TIMEOUT_S)

    return await with_retries(call, attempts, f"batch {batch.batch_id}")


async def upload(args: argparse.Namespace, s: Session) -> int:
    path = Path(args.answers)
    answers: list[AnswerLine] = read_answers(path)
    sid = args.submission
    state = UploadState(state_path(path), sid)
    done = state.accepted_items
    todo = [a for a in answers if a.item_id not in done]
    batches = plan_batches(todo, args.batch_size, args.final)
    totals = {
        "accepted_batches": 0,
        "replayed_batches": 0,
        "accepted_answers": 0,
        "unneeded_batches": 0,
        "unneeded_answers": 0,
    }
    progress = ProgressLine("upload", len(answers))
    progress.advance(len(answers) - len(todo))
    final_sent = state.final_sent
    for index, batch in enumerate(batches):
        try:
            response = await send_batch(s, sid, batch, args.retries)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            # Answers are taken only while AWAITING_ANSWERS; a submission whose every shown
            # item is already answered (by an earlier run or another client) needs no more.
            sub = await s.partner.get(sid)
            if sub.state == AWAITING or sub.progress.answered_items < sub.progress.expected_items:
                raise
            rest = batches[index:]
            totals["unneeded_batches"] = len(rest)
            totals["unneeded_answers"] = sum(len(b.answers) for b in rest)
            for unneeded in rest:  # no answer can go in any more: a re-run skips them
                state.record(unneeded, "unneeded")
            note(
                f"{sub.submission_id} is {state_name(sub.state)} with every item answered; "
                f"{totals['unneeded_answers']} remaining answers were not needed"
            )
            final_sent = True
            break
        replayed = response.replayed_batches > 0
        totals["replayed_batches" if replayed else "accepted_batches"] += 1
        totals["accepted_answers"] += response.accepted_answers
        state.record(batch, "replayed" if replayed else "accepted")
        final_sent = final_sent or batch.final
        progress.advance(len(batch.answers))
    progress.close()
    marker_sent = False
    if args.final and not final_sent:
        # Every batch went in earlier without final: end the upload with an empty final message.
        sub = await s.partner.get(sid)
        if sub.state == AWAITING:
            marker_sent = True
            marker = Batch(final_marker_id(answers), 0, (), True)
            response = await send_batch(s, sid, marker, args.retries)
            state.record(marker, "replayed" if response.replayed_batches else "accepted")
            totals["replayed_batches" if response.replayed_batches else "accepted_batches"] += 1
    sub = await s.partner.get(sid)
    data = {
        "submission_id": sid,
        "file": str(path),
        "state_file": str(state.path),
        "answers": len(answers),
        "skipped_answers": len(answers) - len(todo),
        "batches": len(batches),
        **totals,
        "final": args.final,
        "final_marker_sent": marker_sent,
        "state": state_name(sub.state),
        "progress": submission_dict(sub)["progress"],
    }
    lines = []
    if data["skipped_answers"]:
        lines.append(
            f"{data['skipped_answers']} of {len(answers)} answers went in earlier "
            f"(recorded in {state.path.name}): not sent again"
        )
    if batches:
        lines.append(
            f"{len(batches)} batches: {totals['accepted_batches']} accepted, "
            f"{totals['replayed_batches']} already there (resends recognised by the gateway)"
            + (f", {totals['unneeded_batches']} not needed" if totals["unneeded_batches"] else "")
        )
    if marker_sent:
        lines.append("ended the upload (final): items left unanswered score 0")
    lines.append(f"{sid}: {state_name(sub.state)}, {progress_text(sub)}")
    emit(args, data, lines)
    return EXIT_OK


def _change(sub: submission_pb2.Submission) -> tuple[int, int, int, int, str]:
    p = sub.progress
    return (sub.state, p.answered_items, p.scored_items, p.infra_failed_items, sub.state_reason)


async def watch(args: argparse.Namespace, s: Session) -> int:
    """One line per change until the submission is terminal; reconnects after UNAVAILABLE."""
    request = submission_service_pb2.WatchSubmissionRequest(submission_id=args.submission)
    last: tuple[int, int, int, int, str] | None = None
    failures = 0
    while True:
        try:
            async for change in s.submissions.WatchSubmission(request):
                failures = 0
                sub = change.submission
                if _change(sub) != last:
                    last = _change(sub)
                    p = sub.progress
                    at = datetime.now().astimezone().strftime("%H:%M:%S")
                    emit(
                        args,
                        {
                            "submission_id": sub.submission_id,
                            "state": state_name(sub.state),
                            "answered_items": p.answered_items,
                            "expected_items": p.expected_items,
                            "scored_items": p.scored_items,
                            "infra_failed_items": p.infra_failed_items,
                            "state_reason": sub.state_reason,
                        },
                        f"{at}  {state_name(sub.state):16s}  {progress_text(sub)}"
                        + (f"  ({sub.state_reason})" if sub.state_reason else ""),
                    )
                if sub.state == COMPLETED:
                    return EXIT_OK
                if sub.state in FAILED_STATES:
                    raise CliError(
                        state_name(sub.state),
                        f"submission {sub.submission_id} is {state_name(sub.state)}: "
                        + (sub.state_reason or "no reason given"),
                        EXIT_NOT_READY,
                    )
            failures += 1  # the stream ended before a terminal state: follow it again
            if failures >= args.retries:
                raise CliError(
                    "UNAVAILABLE", "the watch stream keeps ending early", EXIT_UNREACHABLE
                )
        except grpc.aio.AioRpcError as exc:
            failures += 1
            if exc.code() not in RETRYABLE or failures >= args.retries:
                raise
            note(f"watch: {exc.code().name}, reconnecting")
        await asyncio.sleep(backoff_s(failures))


async def status(args: argparse.Namespace, s: Session) -> int:
    sub = await s.partner.get(args.submission)
    emit(args, submission_dict(sub), submission_lines(sub))
    return EXIT_OK


async def report(args: argparse.Namespace, s: Session) -> int:
    partner = s.partner
    sub = await partner.get(args.submission)
    report_ = await partner.report(args.submission)
    doc = document(sub, report_, await partner.item_results(args.submission))
    files = write_report(doc, Path(args.out))
    interval = f"[{doc.overall_low:.1f}, {doc.overall_high:.1f}]"
    emit(
        args,
        {
            "submission_id": doc.submission_id,
            "model": doc.model,
            "overall": doc.overall,
            "overall_low": doc.overall_low,
            "overall_high": doc.overall_high,
            "equated": doc.equated,
            "files": {name: str(path) for name, path in files.items()},
        },
        [f"{doc.model}: overall {doc.overall:.1f} {interval}"]
        + [f"  {name:14s} {path}" for name, path in files.items()],
    )
    return EXIT_OK


async def publish(args: argparse.Namespace, s: Session) -> int:
    response = await s.submissions.PublishSubmission(
        submission_service_pb2.PublishSubmissionRequest(
            submission_id=args.submission, published=not args.withdraw
        )
    )
    emit(
        args,
        {"submission_id": args.submission, "published": response.published},
        f"{args.submission} is "
        + ("on its leaderboard" if response.published else "not on any leaderboard"),
    )
    return EXIT_OK


async def resume(args: argparse.Namespace, s: Session) -> int:
    response = await s.partner.resume(args.submission)
    sub = response.submission
    emit(
        args,
        {"resumed_items": response.resumed_items, "submission": submission_dict(sub)},
        f"{sub.submission_id}: {response.resumed_items} items sent again; "
        f"{state_name(sub.state)}, {progress_text(sub)}",
    )
    return EXIT_OK


def entry_dict(e: leaderboard_service_pb2.LeaderboardEntry) -> dict[str, Any]:
    return {
        "rank": e.rank,
        "group": e.group,
        "submission_id": e.submission_id,
        "tenant_id": e.tenant_id,
        "model_name": e.model_name,
        "model_version": e.model_version,
        "organisation": e.organisation,
        "open_source": e.open_source,
        "parameter_count": e.parameter_count,
        "release_date": e.release_date,
        "cycle": e.cycle,
        "pool_id": e.pool_id,
        "overall": e.overall,
        "overall_low": e.overall_low,
        "overall_high": e.overall_high,
        "equated": e.equated if e.HasField("equated") else None,
        "dimensions": [
            {"dimension": d.dimension, "score": d.score, "low": d.low, "high": d.high}
            for d in e.dimensions
        ],
        "published_at": _iso(e, "published_at"),
    }


async def leaderboard(args: argparse.Namespace, s: Session) -> int:
    if not 1 <= args.limit <= 10_000:
        raise usage_error("--limit must be within 1-10000")
    entries: list[leaderboard_service_pb2.LeaderboardEntry] = []
    token = ""
    total = 0
    while len(entries) < args.limit:
        page = await s.leaderboard.ListLeaderboard(
            leaderboard_service_pb2.ListLeaderboardRequest(
                track=TRACKS[args.track],
                board=BOARDS[args.board],
                cycle=args.cycle,
                rule=RULES[args.rule],
                page_size=min(500, args.limit - len(entries)),
                page_token=token,
            )
        )
        entries.extend(page.entries)
        total = page.total
        token = page.next_page_token
        if not token:
            break
    data = {
        "track": args.track,
        "board": args.board,
        "cycle": args.cycle,
        "rule": args.rule,
        "total": total,
        "entries": [entry_dict(e) for e in entries],
    }
    title = f"{args.track} / {args.board} board" + (f", cycle {args.cycle}" if args.cycle else "")
    emit(args, data, board_lines(title, entries, total, show_cycle=not args.cycle))
    return EXIT_OK


def board_lines(
    title: str,
    entries: list[leaderboard_service_pb2.LeaderboardEntry],
    total: int,
    show_cycle: bool = True,
) -> list[str]:
    """A leaderboard page as text: a title line, then rank, model, organisation, overall and
    its interval (equated and cycle columns when some entry has one)."""
    if not entries:
        return [f"{title}: no published submissions"]
    equated = any(e.HasField("equated") for e in entries)
    show_cycle = show_cycle and any(e.cycle for e in entries)
    header = ["rank", "model", "organisation", "overall", "95% interval"]
    header += ["equated"] if equated else []
    header += ["cycle"] if show_cycle else []
    rows = []
    for e in entries:
        row = [
            str(e.rank),
            " ".join(x for x in (e.model_name, e.model_version) if x),
            e.organisation or e.tenant_id,
            f"{e.overall:.1f}",
            f"[{e.overall_low:.1f}, {e.overall_high:.1f}]",
        ]
        if equated:
            row.append(f"{e.equated:.1f}" if e.HasField("equated") else "-")
        if show_cycle:
            row.append(e.cycle)
        rows.append(row)
    more = f" (first {len(entries)} of {total})" if total > len(entries) else ""
    return [f"{title}{more}", *table(header, rows, right={0, 3})]


async def usage(args: argparse.Namespace, s: Session) -> int:
    u = await s.identity.GetUsage(identity_service_pb2.GetUsageRequest())
    q = u.quotas
    data = {
        "tenant_id": u.tenant_id,
        "quotas": {
            "submissions_per_day": q.submissions_per_day,
            "concurrent_submissions": q.concurrent_submissions,
            "items_per_month": q.items_per_month,
        },
        "submissions_today": u.submissions_today,
        "active_submissions": u.active_submissions,
        "items_this_month": u.items_this_month,
    }
    rows = [
        ["submissions today (UTC)", str(u.submissions_today), str(q.submissions_per_day)],
        ["submissions in progress", str(u.active_submissions), str(q.concurrent_submissions)],
        ["items this month (UTC)", str(u.items_this_month), str(q.items_per_month)],
    ]
    emit(
        args,
        data,
        [f"tenant {u.tenant_id}", *table(["quota", "used", "limit"], rows, right={1, 2})],
    )
    return EXIT_OK


# -- command line ---------------------------------------------------------------------------

COMMANDS: dict[str, Callable[[argparse.Namespace, Session], Awaitable[int]]] = {
    "whoami": whoami,
    "submit": submit,
    "download": download,
    "upload": upload,
    "watch": watch,
    "status": status,
    "report": report,
    "publish": publish,
    "resume": resume,
    "leaderboard": leaderboard,
    "usage": usage,
}


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Connection and output options, accepted before and after the command's name."""
    default: Any = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--gateway",
        metavar="HOST:PORT",
        default=default,
        help="the gateway (else MEDBENCH_GATEWAY, else the profile)",
    )
    group.add_argument(
        "--key",
        metavar="KEY",
        default=default,
        help="API key (else MEDBENCH_API_KEY, else the profile); prefer those: "
        "a command line is visible to other users",
    )
    group.add_argument(
        "--profile",
        metavar="NAME",
        default=default,
        help="config file profile (else MEDBENCH_PROFILE, else the default one)",
    )
    group.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=default,
        help="connect with TLS (system roots unless --ca-file)",
    )
    group.add_argument(
        "--ca-file",
        metavar="PEM",
        default=default,
        help="CA certificates to verify the gateway with (implies --tls)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print machine-readable JSON on stdout (and nothing else)",
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"medbench: INVALID_ARGUMENT: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="medbench",
        description=__doc__.split("\n")[0] if __doc__ else "",
        epilog="Exit codes: 0 ok, 1 other, 2 bad usage, 3 not found, 4 not ready or failed, "
        "5 unreachable, 6 unauthenticated or denied, 7 quota exhausted. See libs/client/CLI.md.",
    )
    _common(parser, suppress=False)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(name: str, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        _common(sub, suppress=True)
        return sub

    conf = command("configure", "store the gateway and API key in a profile of the config file")
    conf.add_argument("--default", action="store_true", help="make the profile the default one")

    command("whoami", "show the key id, tenant and role the gateway sees (checks the setup)")

    sub = command("submit", "create a submission (idempotent on --request-id)")
    sub.add_argument("--model", required=True, help="model name (shown on the leaderboard)")
    sub.add_argument("--model-version", default="")
    sub.add_argument("--organisation", default="", help="organisation shown on the leaderboard")
    sub.add_argument("--open-source", action="store_true", help="the weights are public")
    sub.add_argument("--parameter-count", default="", help='e.g. "72B"')
    sub.add_argument("--release-date", default="", help="the model's release date, YYYY-MM-DD")
    sub.add_argument("--request-id", help="idempotency key (default: a new one, printed)")
    sub.add_argument("--track", choices=sorted(TRACKS), default="llm")
    sub.add_argument(
        "--mode",
        choices=sorted(MODES),
        help="upload (default) or api (the platform calls --endpoint-url)",
    )
    sub.add_argument("--endpoint-url", help="API mode: OpenAI-compatible base URL")
    sub.add_argument("--endpoint-model", help="API mode: model name sent to the endpoint")
    sub.add_argument(
        "--endpoint-key-env",
        metavar="VAR",
        help="API mode: environment variable holding the endpoint's API key",
    )
    sub.add_argument("--max-concurrency", type=int, help="API mode: requests at once (1-256)")
    sub.add_argument(
        "--self-test",
        action="store_true",
        help="API mode: use the declared decoding settings (not on leaderboards)",
    )
    sub.add_argument("--temperature", type=float, help="declared decoding setting")
    sub.add_argument("--max-tokens", type=int, help="declared decoding setting")
    sub.add_argument("--context-window", type=int, help="declared decoding setting")
    sub.add_argument("--top-p", type=float, help="declared decoding setting")

    dl = command("download", "write an upload-mode submission's prompts to a JSONL file")
    dl.add_argument("submission")
    dl.add_argument("--out", required=True, help="JSONL file (a partial one is completed)")

    up = command("upload", "upload answers from a JSONL file of {item_id, answer} lines")
    up.add_argument("submission")
    up.add_argument("answers", help="JSONL file")
    up.add_argument(
        "--batch-size", type=int, default=500, help=f"answers per batch (1-{MAX_BATCH})"
    )
    up.add_argument(
        "--final",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="end the upload with the last batch (unanswered items score 0)",
    )
    up.add_argument("--retries", type=int, default=8, help="attempts per batch when unreachable")

    wa = command("watch", "follow a submission until it is COMPLETED (exit 0) or FAILED (4)")
    wa.add_argument("submission")
    wa.add_argument("--retries", type=int, default=8, help="reconnections in a row")

    st = command("status", "show a submission's state and counters")
    st.add_argument("submission")

    rep = command("report", "write a submission's report (JSON, CSV, MD, HTML)")
    rep.add_argument("submission")
    rep.add_argument("--out", default=".", help="folder for the files (default: here)")

    pub = command("publish", "put a COMPLETED submission on its leaderboard (or take it off)")
    pub.add_argument("submission")
    pub.add_argument("--withdraw", action="store_true", help="take it off the leaderboard")

    res = command("resume", "API mode: send the items that failed for infrastructure reasons")
    res.add_argument("submission")

    lb = command("leaderboard", "show a leaderboard")
    lb.add_argument("--track", choices=sorted(TRACKS), default="llm")
    lb.add_argument(
        "--board",
        choices=sorted(BOARDS),
        default="api",
        help="api: the official board (default); upload: uploaded answers",
    )
    lb.add_argument("--cycle", default="", help="evaluation cycle (default: every cycle)")
    lb.add_argument(
        "--rule",
        choices=sorted(RULES),
        default="latest",
        help="which submission of a model is shown",
    )
    lb.add_argument("--limit", type=int, default=100, help="entries at most")

    command("usage", "show the tenant's quota usage")
    return parser


async def run(args: argparse.Namespace) -> int:
    settings = cli_config.resolve(
        gateway=args.gateway,
        api_key=args.key,
        profile=args.profile,
        tls=args.tls,
        ca_file=args.ca_file,
    )
    session = Session(settings)
    try:
        return await COMMANDS[args.command](args, session)
    finally:
        await session.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "configure":
            return configure(args)
        return asyncio.run(run(args))
    except grpc.aio.AioRpcError as exc:
        print(rpc_error_message(exc), file=sys.stderr)
        return exit_code_for(exc.code())
    except CliError as exc:
        print(f"medbench: {exc.code}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except (ConfigError, InputError) as exc:
        print(f"medbench: INVALID_ARGUMENT: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"medbench: IO_ERROR: {exc}", file=sys.stderr)
        return EXIT_OTHER
    except KeyboardInterrupt:
        print("medbench: CANCELLED: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
