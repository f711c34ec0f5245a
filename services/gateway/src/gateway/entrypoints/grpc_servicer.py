"""SubmissionServicer: the public partner API; proto <-> use cases, nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

import grpc

from gateway.core.submission import TERMINAL
from gateway.entrypoints import convert
from gateway.usecases.images import Images
from gateway.usecases.submissions import Submissions
from medbench.submission.v1 import (
    submission_pb2,
    submission_service_pb2,
    submission_service_pb2_grpc,
)
from medbench_runtime.auth import current_principal
from medbench_runtime.errors import DeadlineExceeded, InvalidArgument

WATCH_INTERVAL_S = 0.25
T = TypeVar("T")


def tenant_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's tenant, from its authenticated API key (never from the request)."""
    return current_principal().tenant_id


def _require_id(value: str) -> str:
    if not value:
        raise InvalidArgument("submission_id is required")
    return value


async def until_idle(messages: AsyncIterator[T], idle_s: float) -> AsyncIterator[T]:
    """The messages of a client stream; DEADLINE_EXCEEDED once none arrives for idle_s."""
    while True:
        try:
            message = await asyncio.wait_for(anext(messages), idle_s)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise DeadlineExceeded(
                f"no UploadAnswers message arrived for {idle_s:g} s, so the stream was ended; "
                f"the batches accepted before are kept: send the others again"
            ) from None
        yield message


class SubmissionServicer(submission_service_pb2_grpc.SubmissionServiceServicer):
    """Public API; every call is scoped to the caller's tenant."""

    def __init__(
        self, submissions: Submissions, images: Images, upload_idle_s: float = 300.0
    ) -> None:
        self._submissions = submissions
        self._upload_idle_s = upload_idle_s
        self._images = images

    async def CreateSubmission(
        self,
        request: submission_service_pb2.CreateSubmissionRequest,
        context: grpc.aio.ServicerContext,
    ) -> submission_service_pb2.CreateSubmissionResponse:
        tenant = tenant_of(context)
        record, created = await self._submissions.create(convert.create_request(tenant, request))
        view = await self._submissions.view(tenant, record["_id"])
        return submission_service_pb2.CreateSubmissionResponse(
            submission=convert.view_to_proto(view), created=created
        )

    async def GetSubmission(
        self,
        request: submission_service_pb2.GetSubmissionRequest,
        context: grpc.aio.ServicerContext,
    ) -> submission_service_pb2.GetSubmissionResponse:
        view = await self._submissions.view(tenant_of(context), _require_id(request.submission_id))
        return submission_service_pb2.GetSubmissionResponse(submission=convert.view_to_proto(view))

    async def ListSubmissions(
        self,
        request: submission_service_pb2.ListSubmissionsRequest,
        context: grpc.aio.ServicerContext,
    ) -> submission_service_pb2.ListSubmissionsResponse:
        views, next_token = await self._submissions.list(
            convert.list_request(tenant_of(context), request)
        )
        return submission_service_pb2.ListSubmissionsResponse(
            submissions=[convert.view_to_proto(v) for v in views], next_page_token=next_token
        )

    async def ResumeSubmission(
        self,
        request: submission_service_pb2.ResumeSubmissionRequest,
        context: grpc.aio.ServicerContext,
    ) -> submission_service_pb2.ResumeSubmissionResponse:
        view, resumed = await self._submissions.resume(
            tenant_of(context), _require_id(request.submission_id)
        )
        return submission_service_pb2.ResumeSubmissionResponse(
            submission=convert.view_to_proto(view), resumed_items=resumed
        )

    async def PublishSubmission(
        self,
        request: submission_service_pb2.PublishSubmissionRequest,
        context: grpc.aio.ServicerContext,
    ) -> submission_service_pb2.PublishSubmissionResponse:
        published = await self._submissions.publish(
            tenant_of(context), _require_id(request.submission_id), request.published
        )
        return submission_service_pb2.PublishSubmissionResponse(published=published)

    async def GetItemResults(
        self,
        request: submission_service_pb2.GetItemResultsRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[submission_service_pb2.GetItemResultsResponse]:
        tenant, sid = tenant_of(context), _require_id(request.submission_id)
        async for batch in self._submissions.item_results(tenant, sid):
            yield submission_service_pb2.GetItemResultsResponse(items=batch.items)

    async def DownloadPrompts(
        self,
        request: submission_service_pb2.DownloadPromptsRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[submission_service_pb2.DownloadPromptsResponse]:
        tenant, sid = tenant_of(context), _require_id(request.submission_id)
        async for batch in self._submissions.prompts(tenant, sid):
            yield convert.prompts_to_proto(batch)

    async def DownloadImages(
        self,
        request: submission_service_pb2.DownloadImagesRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[submission_service_pb2.DownloadImagesResponse]:
        tenant, sid = tenant_of(context), _require_id(request.submission_id)
        async for part in self._images.download(tenant, sid, convert.images_request(request)):
            yield convert.image_part_to_proto(part)

    async def UploadAnswers(
        self,
        request_iterator: AsyncIterator[submission_service_pb2.UploadAnswersRequest],
        context: grpc.aio.ServicerContext,
    ) -> submission_service_pb2.UploadAnswersResponse:
        tenant = tenant_of(context)
        accepted_batches = replayed = answers = 0
        submission_id = ""
        async for message in until_idle(request_iterator, self._upload_idle_s):
            sid = _require_id(message.submission_id)
            if submission_id and sid != submission_id:
                raise InvalidArgument(
                    f"one UploadAnswers stream must name one submission ({submission_id}), "
                    f"got {sid}"
                )
            submission_id = sid
            outcome = await self._submissions.upload(
                tenant,
                sid,
                message.batch_id,
                [(a.item_id, a.answer) for a in message.answers],
                message.final,
                message.answers_sha256,
            )
            if outcome.replayed:
                replayed += 1
            else:
                accepted_batches += 1
                answers += outcome.accepted
        if not submission_id:
            raise InvalidArgument("the UploadAnswers stream carried no message")
        view = convert.view_to_proto(await self._submissions.view(tenant, submission_id))
        return submission_service_pb2.UploadAnswersResponse(
            accepted_batches=accepted_batches,
            replayed_batches=replayed,
            accepted_answers=answers,
            progress=view.progress,
            state=view.state,
        )

    async def WatchSubmission(
        self,
        request: submission_service_pb2.WatchSubmissionRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[submission_service_pb2.WatchSubmissionResponse]:
        tenant = tenant_of(context)
        last = None
        while True:
            view = convert.view_to_proto(
                await self._submissions.view(tenant, _require_id(request.submission_id))
            )
            seen = (view.state, view.progress.answered_items, view.progress.scored_items)
            if seen != last:
                last = seen
                yield submission_service_pb2.WatchSubmissionResponse(submission=view)
            if (
                submission_pb2.SubmissionState.Name(view.state).removeprefix("SUBMISSION_STATE_")
                in TERMINAL
            ):
                return
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def GetReport(
        self,
        request: submission_service_pb2.GetReportRequest,
        context: grpc.aio.ServicerContext,
    ) -> submission_service_pb2.GetReportResponse:
        report = await self._submissions.report(
            tenant_of(context), _require_id(request.submission_id)
        )
        return submission_service_pb2.GetReportResponse(report=report)
