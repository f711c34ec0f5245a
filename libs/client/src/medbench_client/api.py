"""Async wrappers over the partner (SubmissionService) and admin (TaskPoolService, JudgeService)
APIs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence

import grpc

from medbench.common.v1 import common_pb2
from medbench.judge.v1 import judge_service_pb2, judge_service_pb2_grpc
from medbench.report.v1 import report_pb2
from medbench.submission.v1 import (
    submission_pb2,
    submission_service_pb2,
    submission_service_pb2_grpc,
)
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc

MAX_MESSAGE = 16 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]


def channel(address: str) -> grpc.aio.Channel:
    """An insecure channel (loopback development stack)."""
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)


class PartnerClient:
    """What a partner institution calls; every call carries its tenant."""

    def __init__(self, chan: grpc.aio.Channel, tenant: str) -> None:
        self._stub = submission_service_pb2_grpc.SubmissionServiceStub(chan)
        self._metadata = (("x-medbench-tenant", tenant),)

    async def create(
        self,
        request_id: str,
        model_name: str,
        track: int = common_pb2.TRACK_LLM,
        mode: int = common_pb2.SUBMISSION_MODE_UPLOAD,
        endpoint: submission_pb2.Endpoint | None = None,
    ) -> submission_service_pb2.CreateSubmissionResponse:
        return await self._stub.CreateSubmission(
            submission_service_pb2.CreateSubmissionRequest(
                request_id=request_id,
                model=submission_pb2.ModelInfo(name=model_name),
                track=track,
                mode=mode,
                endpoint=endpoint,
            ),
            metadata=self._metadata,
        )

    async def resume(self, submission_id: str) -> submission_service_pb2.ResumeSubmissionResponse:
        return await self._stub.ResumeSubmission(
            submission_service_pb2.ResumeSubmissionRequest(submission_id=submission_id),
            metadata=self._metadata,
        )

    async def item_results(self, submission_id: str) -> list[report_pb2.ItemResult]:
        request = submission_service_pb2.GetItemResultsRequest(submission_id=submission_id)
        items: list[report_pb2.ItemResult] = []
        async for batch in self._stub.GetItemResults(request, metadata=self._metadata):
            items.extend(batch.items)
        return items

    async def get(self, submission_id: str) -> submission_pb2.Submission:
        response = await self._stub.GetSubmission(
            submission_service_pb2.GetSubmissionRequest(submission_id=submission_id),
            metadata=self._metadata,
        )
        return response.submission

    async def prompts(self, submission_id: str) -> list[submission_pb2.Prompt]:
        out: list[submission_pb2.Prompt] = []
        async for batch in self._stub.DownloadPrompts(
            submission_service_pb2.DownloadPromptsRequest(submission_id=submission_id),
            metadata=self._metadata,
        ):
            out.extend(batch.prompts)
        return out

    async def upload(
        self, submission_id: str, batches: Iterable[tuple[str, Sequence[tuple[str, str]], bool]]
    ) -> submission_service_pb2.UploadAnswersResponse:
        """Streams (batch_id, [(item_id, answer)], final) messages."""

        async def messages() -> AsyncIterator[submission_service_pb2.UploadAnswersRequest]:
            for batch_id, answers, final in batches:
                yield submission_service_pb2.UploadAnswersRequest(
                    submission_id=submission_id,
                    batch_id=batch_id,
                    final=final,
                    answers=[submission_pb2.Answer(item_id=i, answer=a) for i, a in answers],
                )

        return await self._stub.UploadAnswers(messages(), metadata=self._metadata)

    def watch(
        self, submission_id: str
    ) -> AsyncIterator[submission_service_pb2.WatchSubmissionResponse]:
        return self._stub.WatchSubmission(
            submission_service_pb2.WatchSubmissionRequest(submission_id=submission_id),
            metadata=self._metadata,
        )

    async def report(self, submission_id: str) -> report_pb2.Report:
        response = await self._stub.GetReport(
            submission_service_pb2.GetReportRequest(submission_id=submission_id),
            metadata=self._metadata,
        )
        return response.report


class AdminClient:
    """Benchmark-maintainer calls of the rotator."""

    def __init__(self, chan: grpc.aio.Channel) -> None:
        self._stub = taskpool_service_pb2_grpc.TaskPoolServiceStub(chan)

    async def import_items(
        self, items: Sequence[taskpool_pb2.ImportItem], batch: int = 2000
    ) -> taskpool_service_pb2.ImportTasksResponse:
        async def messages() -> AsyncIterator[taskpool_service_pb2.ImportTasksRequest]:
            for i in range(0, len(items), batch):
                yield taskpool_service_pb2.ImportTasksRequest(items=items[i : i + batch])

        return await self._stub.ImportTasks(messages())

    async def publish(
        self,
        pool_id: str,
        track: int = common_pb2.TRACK_LLM,
        board: int = taskpool_pb2.BOARD_UPLOAD,
    ) -> taskpool_pb2.Pool:
        response = await self._stub.PublishPool(
            taskpool_service_pb2.PublishPoolRequest(pool_id=pool_id, track=track, board=board)
        )
        return response.pool


class JudgeAdmin:
    """Maintainer and physician calls of the judge scorer (JudgeService)."""

    def __init__(self, chan: grpc.aio.Channel) -> None:
        self.stub = judge_service_pb2_grpc.JudgeServiceStub(chan)

    async def import_ratings(
        self, ratings: Sequence[judge_service_pb2.PhysicianRating], batch: int = 1000
    ) -> judge_service_pb2.ImportRatingsResponse:
        async def messages() -> AsyncIterator[judge_service_pb2.ImportRatingsRequest]:
            for i in range(0, len(ratings), batch):
                yield judge_service_pb2.ImportRatingsRequest(ratings=ratings[i : i + batch])

        return await self.stub.ImportRatings(messages())

    async def calibrate(self, rubric_id: str, version: int = 0) -> judge_service_pb2.Calibration:
        return await self.stub.Calibrate(
            judge_service_pb2.CalibrateRequest(rubric_id=rubric_id, rubric_version=version)
        )

    async def calibration(self, rubric_id: str, version: int = 0) -> judge_service_pb2.Calibration:
        return await self.stub.GetCalibration(
            judge_service_pb2.GetCalibrationRequest(rubric_id=rubric_id, rubric_version=version)
        )

    async def reviews(self, state: str = "open") -> list[judge_service_pb2.Review]:
        response = await self.stub.ListReviews(judge_service_pb2.ListReviewsRequest(state=state))
        return list(response.reviews)

    async def claim(self, review_id: str, reviewer_id: str) -> judge_service_pb2.Review:
        return await self.stub.ClaimReview(
            judge_service_pb2.ClaimReviewRequest(review_id=review_id, reviewer_id=reviewer_id)
        )

    async def panel_agreement(self, submission_id: str) -> judge_service_pb2.PanelAgreement:
        return await self.stub.GetPanelAgreement(
            judge_service_pb2.GetPanelAgreementRequest(submission_id=submission_id)
        )

    async def submit(
        self, review_id: str, reviewer_id: str, score: float
    ) -> judge_service_pb2.Review:
        return await self.stub.SubmitReview(
            judge_service_pb2.SubmitReviewRequest(
                review_id=review_id, reviewer_id=reviewer_id, score=score
            )
        )


def chunked(
    answers: Sequence[tuple[str, str]], size: int, prefix: str = "b"
) -> list[tuple[str, Sequence[tuple[str, str]], bool]]:
    """Answers as upload batches with deterministic batch ids; the last one is final."""
    batches = [
        (f"{prefix}{i // size:06d}", answers[i : i + size], False)
        for i in range(0, len(answers), size)
    ]
    if batches:
        batch_id, last, _ = batches[-1]
        batches[-1] = (batch_id, last, True)
    return batches
