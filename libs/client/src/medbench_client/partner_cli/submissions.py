"""Commands on one submission's life: `submit`, `status`, `watch`, `publish` and `resume`; and
`list`, the tenant's own submissions."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Any

import grpc

from medbench.common.v1 import common_pb2
from medbench.submission.v1 import submission_pb2, submission_service_pb2
from medbench_client.partner_cli.errors import (
    EXIT_NOT_READY,
    EXIT_OK,
    EXIT_UNREACHABLE,
    CliError,
    usage_error,
)
from medbench_client.partner_cli.output import (
    COMPLETED,
    FAILED_STATES,
    MODES,
    TRACKS,
    emit,
    iso,
    mode_name,
    note,
    progress_text,
    state_name,
    submission_dict,
    submission_lines,
    table,
    track_name,
)
from medbench_client.partner_cli.session import RETRYABLE, Session, backoff_s

REQUEST_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")


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


LIST_MAX = 10_000
LIST_PAGE = 500


def list_time(flag: str, text: str, end_of_day: bool = False) -> datetime:
    """--since/--until: YYYY-MM-DD (UTC; with end_of_day the day after, so that --until DAY
    includes DAY) or an ISO 8601 time (UTC unless it names its offset)."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end_of_day else start
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise usage_error(
            f"{flag} {text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _list_row(sub: submission_pb2.Submission) -> list[str]:
    p = sub.progress
    model = " ".join(x for x in (sub.model.name, sub.model.version) if x)
    created = (iso(sub, "created_at") or "")[:19].replace("T", " ")
    return [
        sub.submission_id,
        created,
        track_name(sub.track),
        mode_name(sub.mode),
        state_name(sub.state),
        f"{p.answered_items}/{p.expected_items}",
        str(p.scored_items),
        model,
    ]


async def list_submissions(args: argparse.Namespace, s: Session) -> int:
    """`list`: the tenant's own submissions, newest first, at most --limit, every page read."""
    if not 1 <= args.limit <= LIST_MAX:
        raise usage_error(f"--limit must be within 1-{LIST_MAX}")
    since = list_time("--since", args.since) if args.since else None
    until = list_time("--until", args.until, end_of_day=True) if args.until else None
    if since is not None and until is not None and since >= until:
        raise usage_error("--since must be before --until")
    states = [submission_pb2.SubmissionState.Value(f"SUBMISSION_STATE_{x}") for x in args.state]
    subs: list[submission_pb2.Submission] = []
    token, more = "", False
    while True:
        page = await s.partner.list_submissions(
            page_size=min(LIST_PAGE, args.limit - len(subs)),
            page_token=token,
            states=states,
            track=TRACKS[args.track] if args.track else common_pb2.TRACK_UNSPECIFIED,
            mode=MODES[args.board] if args.board else common_pb2.SUBMISSION_MODE_UNSPECIFIED,
            created_after=since,
            created_before=until,
        )
        subs.extend(page.submissions)
        token = page.next_page_token
        if not token:
            break
        if len(subs) >= args.limit:
            more = True
            break
    data: dict[str, Any] = {
        "submissions": [submission_dict(x) for x in subs],
        "count": len(subs),
        "more": more,
    }
    if not subs:
        lines = ["no submissions" + (" match these filters" if _filtered(args) else "")]
    else:
        header = ["submission", "created (UTC)", "track", "board", "state", "answered"]
        header += ["scored", "model"]
        lines = table(header, [_list_row(x) for x in subs], right={5, 6})
        if more:
            lines.append(f"(first {len(subs)}; --limit shows more)")
    emit(args, data, lines)
    return EXIT_OK


def _filtered(args: argparse.Namespace) -> bool:
    return bool(args.state or args.track or args.board or args.since or args.until)
