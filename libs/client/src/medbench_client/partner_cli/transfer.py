"""Commands that move items in upload mode: `download` (prompts, images, the platform's layout)
and `upload` (answers, checked line by line before anything is sent), both resumable after a cut."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from medbench.submission.v1 import submission_pb2, submission_service_pb2
from medbench_client import platform_files
from medbench_client.answer_files import (
    AnswerFileError,
    AnswerLine,
    Checked,
    Served,
    ServedItem,
    check_answer_files,
    problems_path,
    write_problems,
)
from medbench_client.cli_files import (
    Batch,
    InputError,
    ProgressLine,
    PromptWriter,
    UploadState,
    final_marker_id,
    plan_batches,
    prepare_download,
    prompt_line,
    state_path,
)
from medbench_client.partner_cli.errors import EXIT_OK, EXIT_USAGE, CliError
from medbench_client.partner_cli.images import download_images
from medbench_client.partner_cli.output import (
    AWAITING,
    emit,
    note,
    progress_text,
    state_name,
    submission_dict,
)
from medbench_client.partner_cli.session import Session, with_retries
from medbench_runtime.checksums import answers_sha256

UPLOAD_TIMEOUT_S = 300.0
_ANSWER_INDEX = re.compile(r"answers\[(\d+)\]")


async def download(args: argparse.Namespace, s: Session) -> int:
    """DownloadPrompts into a JSONL file (or, with --format medbench, a folder in the
    platform's layout), then the images of the multimodal items beside the prompts."""
    sid = args.submission
    out = Path(args.out)
    folder = out if args.format == "medbench" else None
    if folder is not None:
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder}: --format medbench writes a folder; this is a file")
        try:
            platform_files.claim_folder(folder, sid)
        except AnswerFileError as exc:
            raise InputError(str(exc)) from None
    raw = platform_files.prompts_path(folder) if folder is not None else out
    streamed, appended, kept = await _download_prompts(s, sid, raw)
    prompts = platform_files.read_prompts(raw)
    data: dict[str, object] = {
        "submission_id": sid,
        "out": str(out),
        "format": args.format,
        "items": streamed,
        "appended": appended,
        "kept": kept,
    }
    kept_text = f" ({kept} kept from an earlier run)" if kept else ""
    lines = [f"wrote {streamed} prompts to {raw}{kept_text}"]
    if folder is not None:
        files = platform_files.write_dataset_files(folder, prompts)
        data["files"] = files
        lines = [
            f"wrote {streamed} items in the platform's format to {folder}/ ({len(files)} dataset "
            f"files; answers already filled in kept){kept_text}"
        ]
    with_images = [p for p in prompts if p.get("image_paths")]
    if with_images and args.images:
        dest = (folder or out.parent) / platform_files.IMAGES_DIR
        fetched = await download_images(s, sid, dest)
        data["images"] = fetched.as_dict()
        lines.append(fetched.text(dest))
    elif with_images:
        lines.append(f"{len(with_images)} items have images (not fetched: --no-images)")
    if folder is not None:
        lines.append(f"answer them, then: medbench upload {sid} {folder}")
    emit(args, data, lines)
    return EXIT_OK


async def _download_prompts(s: Session, sid: str, out: Path) -> tuple[int, int, int]:
    """Streams the prompts into out, appending to a kept partial download: (streamed,
    appended, kept)."""
    partial = prepare_download(out)
    if partial.dropped_bytes:
        note(f"{out}: dropped a cut last line ({partial.dropped_bytes} bytes)")
    have = set(partial.item_ids)
    sub = await s.partner.get(sid)
    progress = ProgressLine("download", sub.progress.expected_items or None)
    progress.advance(len(have))
    appended = streamed = 0
    seen: set[str] = set()
    request = submission_service_pb2.DownloadPromptsRequest(submission_id=sid)
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
            f"{out} holds {len(foreign)} items that submission {sid} does not have "
            f"(e.g. {foreign[0]!r}); pass another --out or delete it"
        )
    return streamed, appended, len(partial.item_ids)


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
        response: submission_service_pb2.UploadAnswersResponse = await stub.UploadAnswers(
            iter([request]), timeout=UPLOAD_TIMEOUT_S
        )
        return response

    return await with_retries(call, attempts, f"batch {batch.batch_id}")


async def upload(args: argparse.Namespace, s: Session) -> int:
    """Checks every line of the answer files against the submission's download, then sends the
    valid answers in batches (all lines must be valid unless --skip-invalid)."""
    sid = args.submission
    paths = [Path(p) for p in args.answers]
    try:
        served = await _served(args, s, paths)
        checked = check_answer_files(paths, served)
    except AnswerFileError as exc:
        raise InputError(str(exc)) from None
    summary = _report_check(args, sid, paths, checked, served)
    answers: list[AnswerLine] = checked.answers
    if checked.errors and not args.skip_invalid:
        raise CliError(
            "INVALID_ARGUMENT",
            f"{len({(p.file, p.line) for p in checked.errors})} lines cannot be sent (every one "
            f"named in {summary.problems_file}); nothing was sent. Fix them, or pass "
            f"--skip-invalid to send the {len(answers)} valid answers",
            EXIT_USAGE,
        )
    if args.check_only:
        emit(args, {"submission_id": sid, "check": summary.data}, summary.lines)
        return EXIT_OK
    if not answers:
        raise InputError(f"no answers to send in {', '.join(str(p) for p in paths)}")
    where = {a.item_id: a.where for a in answers}
    state = UploadState(_state_file(paths), sid)
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
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise _refused(exc, batch, where, totals["accepted_batches"]) from None
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
        "files": checked.files,
        "check": summary.data,
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
    lines = list(summary.lines)
    if checked.errors:
        lines.append(
            f"left out {len({(p.file, p.line) for p in checked.errors})} invalid lines "
            f"(--skip-invalid; listed in {summary.problems_file})"
        )
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


async def _served(args: argparse.Namespace, s: Session, paths: Sequence[Path]) -> Served:
    """The manifest the answers are checked against: --manifest, else the download folder the
    answers lie in, else the submission's items as the gateway lists them."""
    if args.manifest:
        return platform_files.served_from_file(Path(args.manifest))
    folder = platform_files.find_download(paths)
    if folder is not None:
        held = platform_files.folder_submission(folder)
        if held not in (None, args.submission):
            raise InputError(
                f"{folder} is the download of submission {held}, not {args.submission}"
            )
        return platform_files.served_from_file(folder)
    items: dict[str, ServedItem] = {}
    request = submission_service_pb2.DownloadPromptsRequest(submission_id=args.submission)
    async for batch in s.submissions.DownloadPrompts(request):
        for p in batch.prompts:
            items[p.item_id] = ServedItem(p.item_id, p.dataset, p.answer_format, p.question)
    return Served(items, f"the items of {args.submission}")


@dataclass(frozen=True)
class CheckReport:
    """What the check of the answer files found, as shown and as --json carries it."""

    lines: list[str]
    problems_file: Path
    data: dict[str, object]


def _report_check(
    args: argparse.Namespace,
    sid: str,
    paths: Sequence[Path],
    checked: Checked,
    served: Served,
) -> CheckReport:
    """Writes every problem to the problems file and shows the summary on stderr."""
    lines = checked.summary(served)
    report = Path(args.problems_file) if args.problems_file else problems_path(paths)
    write_problems(report, checked, [f"medbench upload {sid}", *lines])
    if checked.problems:
        lines.append(f"every problem, by file:line: {report}")
    for line in lines:
        note(line)
    data: dict[str, object] = {
        "lines": lines,
        "read_lines": checked.lines,
        "valid": len(checked.answers),
        "invalid_lines": len({(p.file, p.line) for p in checked.errors}),
        "warnings": len(checked.warnings),
        "blank": len(checked.blank),
        "problems_file": str(report),
    }
    return CheckReport(lines, report, data)


def _state_file(paths: Sequence[Path]) -> Path:
    first = paths[0]
    return first / ".medbench-upload.json" if first.is_dir() else state_path(first)


def _refused(
    exc: grpc.aio.AioRpcError, batch: Batch, where: Mapping[str, str], accepted: int
) -> CliError:
    """The gateway's refusal of a batch, with every answers[i] it names located in its file."""

    def locate(match: re.Match[str]) -> str:
        index = int(match[1])
        if index < len(batch.answers):
            return f"{where.get(batch.answers[index][0], '?')} (answers[{index}])"
        return match[0]

    details = _ANSWER_INDEX.sub(locate, exc.details() or "")
    kept = f"; the {accepted} batches sent before it stay accepted" if accepted else ""
    if not batch.answers:
        return CliError("INVALID_ARGUMENT", f"the gateway refused: {details}{kept}", EXIT_USAGE)
    first = where.get(batch.answers[0][0], "?")
    return CliError(
        "INVALID_ARGUMENT",
        f"the gateway refused the batch that starts at {first}: {details}{kept}",
        EXIT_USAGE,
    )
