"""Commands that move items in upload mode: `download` (prompts) and `upload` (answers), both
resumable after a cut."""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc

from medbench.submission.v1 import submission_pb2, submission_service_pb2
from medbench_client.cli_files import (
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
from medbench_client.partner_cli.errors import EXIT_OK
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
        response: submission_service_pb2.UploadAnswersResponse = await stub.UploadAnswers(
            iter([request]), timeout=UPLOAD_TIMEOUT_S
        )
        return response

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
