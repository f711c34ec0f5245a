"""Async wrappers over the partner (SubmissionService) and admin (TaskPoolService, JudgeService)
APIs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from medbench.common.v1 import common_pb2
from medbench.identity.v1 import (
    access_pb2,
    identity_pb2,
    identity_service_pb2,
    identity_service_pb2_grpc,
)
from medbench.judge.v1 import judge_service_pb2, judge_service_pb2_grpc
from medbench.report.v1 import report_pb2
from medbench.submission.v1 import (
    submission_pb2,
    submission_service_pb2,
    submission_service_pb2_grpc,
)
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_runtime.bearer import authorized_channel
from medbench_runtime.checksums import answers_sha256

MAX_MESSAGE = 16 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]


C = TypeVar("C")
S = TypeVar("S")


def service_stub(factory: Callable[[C], S], chan: C) -> S:
    """factory(chan): a generated gRPC service stub on chan.

    The generated `*_pb2_grpc` modules carry no types, so calling their classes directly is an
    untyped call; this is the one place that makes it, and callers get the stub's class back.
    """
    return factory(chan)


def tls_credentials(tls: bool, ca_file: str) -> grpc.ChannelCredentials | None:
    """The CLIs' --tls / --ca-file: TLS credentials (the CA file's roots, else the system's),
    or None for plaintext. OSError when the CA file cannot be read."""
    if not (tls or ca_file):
        return None
    roots = Path(ca_file).expanduser().read_bytes() if ca_file else None
    return grpc.ssl_channel_credentials(root_certificates=roots)


def channel(
    address: str, key: str | None = None, credentials: grpc.ChannelCredentials | None = None
) -> grpc.aio.Channel:
    """A channel whose every call carries the API key (TLS when credentials are given)."""
    return authorized_channel(address, key, CHANNEL_OPTIONS, credentials)


class PartnerClient:
    """What a partner institution calls; its tenant is the one its channel's API key names."""

    def __init__(self, chan: grpc.aio.Channel) -> None:
        self._stub = service_stub(submission_service_pb2_grpc.SubmissionServiceStub, chan)
        self._metadata: tuple[tuple[str, str], ...] = ()

    async def create(
        self,
        request_id: str,
        model_name: str,
        track: common_pb2.Track = common_pb2.TRACK_LLM,
        mode: common_pb2.SubmissionMode = common_pb2.SUBMISSION_MODE_UPLOAD,
        endpoint: submission_pb2.Endpoint | None = None,
        model: submission_pb2.ModelInfo | None = None,
    ) -> submission_service_pb2.CreateSubmissionResponse:
        """``model`` (name and the leaderboard's metadata) wins over ``model_name``."""
        response: submission_service_pb2.CreateSubmissionResponse = (
            await self._stub.CreateSubmission(
                submission_service_pb2.CreateSubmissionRequest(
                    request_id=request_id,
                    model=model or submission_pb2.ModelInfo(name=model_name),
                    track=track,
                    mode=mode,
                    endpoint=endpoint,
                ),
                metadata=self._metadata,
            )
        )
        return response

    async def resume(self, submission_id: str) -> submission_service_pb2.ResumeSubmissionResponse:
        response: submission_service_pb2.ResumeSubmissionResponse = (
            await self._stub.ResumeSubmission(
                submission_service_pb2.ResumeSubmissionRequest(submission_id=submission_id),
                metadata=self._metadata,
            )
        )
        return response

    async def item_results(self, submission_id: str) -> list[report_pb2.ItemResult]:
        request = submission_service_pb2.GetItemResultsRequest(submission_id=submission_id)
        items: list[report_pb2.ItemResult] = []
        async for batch in self._stub.GetItemResults(request, metadata=self._metadata):
            items.extend(batch.items)
        return items

    async def get(self, submission_id: str) -> submission_pb2.Submission:
        response: submission_service_pb2.GetSubmissionResponse = await self._stub.GetSubmission(
            submission_service_pb2.GetSubmissionRequest(submission_id=submission_id),
            metadata=self._metadata,
        )
        return response.submission

    async def list_submissions(
        self,
        page_size: int = 0,
        page_token: str = "",
        states: Sequence[submission_pb2.SubmissionState] = (),
        track: common_pb2.Track = common_pb2.TRACK_UNSPECIFIED,
        mode: common_pb2.SubmissionMode = common_pb2.SUBMISSION_MODE_UNSPECIFIED,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> submission_service_pb2.ListSubmissionsResponse:
        """One page of this tenant's own submissions, newest first (ListSubmissions); pass its
        next_page_token back for the next page ("" on the last). Unset filters select all;
        created_after is inclusive, created_before exclusive (aware datetimes)."""
        request = submission_service_pb2.ListSubmissionsRequest(
            page_size=page_size, page_token=page_token, states=states, track=track, mode=mode
        )
        if created_after is not None:
            request.created_after.FromDatetime(created_after)
        if created_before is not None:
            request.created_before.FromDatetime(created_before)
        response: submission_service_pb2.ListSubmissionsResponse = await self._stub.ListSubmissions(
            request, metadata=self._metadata
        )
        return response

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
                    answers_sha256=answers_sha256(answers),
                )

        response: submission_service_pb2.UploadAnswersResponse = await self._stub.UploadAnswers(
            messages(), metadata=self._metadata
        )
        return response

    async def watch(
        self, submission_id: str
    ) -> AsyncIterator[submission_service_pb2.WatchSubmissionResponse]:
        async for change in self._stub.WatchSubmission(
            submission_service_pb2.WatchSubmissionRequest(submission_id=submission_id),
            metadata=self._metadata,
        ):
            yield change

    async def report(self, submission_id: str) -> report_pb2.Report:
        response: submission_service_pb2.GetReportResponse = await self._stub.GetReport(
            submission_service_pb2.GetReportRequest(submission_id=submission_id),
            metadata=self._metadata,
        )
        return response.report

    async def publish(self, submission_id: str, published: bool = True) -> bool:
        """Puts a COMPLETED submission on its public leaderboard (or withdraws it)."""
        response = await self._stub.PublishSubmission(
            submission_service_pb2.PublishSubmissionRequest(
                submission_id=submission_id, published=published
            ),
            metadata=self._metadata,
        )
        return bool(response.published)


_PROVISIONED: dict[tuple[str, str, str, int], str] = {}


def provision_key(
    gateway: str,
    admin_key: str,
    tenant: str,
    role: access_pb2.Role = access_pb2.ROLE_PARTNER_SUBMITTER,
) -> str:
    """A key of role for tenant (created with the tenant when absent), made with a maintainer
    key; one per (gateway, tenant, role) per process. Synchronous, for tests and demos."""
    cache_key = (gateway, admin_key, tenant, role)
    if cache_key in _PROVISIONED:
        return _PROVISIONED[cache_key]
    metadata = (("authorization", f"Bearer {admin_key}"),)
    with grpc.insecure_channel(gateway) as chan:
        stub = service_stub(identity_service_pb2_grpc.IdentityServiceStub, chan)
        try:
            stub.CreateTenant(
                identity_service_pb2.CreateTenantRequest(tenant_id=tenant, display_name=tenant),
                metadata=metadata,
            )
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        created: identity_service_pb2.CreateApiKeyResponse = stub.CreateApiKey(
            identity_service_pb2.CreateApiKeyRequest(
                tenant_id=tenant, role=role, name=f"provisioned {access_pb2.Role.Name(role)}"
            ),
            metadata=metadata,
        )
    _PROVISIONED[cache_key] = created.secret
    return created.secret


class IdentityAdmin:
    """Maintainer calls of the gateway's IdentityService: tenants and API keys."""

    def __init__(self, chan: grpc.aio.Channel) -> None:
        self.stub = service_stub(identity_service_pb2_grpc.IdentityServiceStub, chan)

    async def ensure_tenant(
        self, tenant_id: str, display_name: str = "", quotas: identity_pb2.Quotas | None = None
    ) -> identity_pb2.Tenant:
        """The tenant, created when absent."""
        try:
            created: identity_pb2.Tenant = await self.stub.CreateTenant(
                identity_service_pb2.CreateTenantRequest(
                    tenant_id=tenant_id, display_name=display_name or tenant_id, quotas=quotas
                )
            )
            return created
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        found: identity_pb2.Tenant = await self.stub.GetTenant(
            identity_service_pb2.GetTenantRequest(tenant_id=tenant_id)
        )
        return found

    async def create_key(
        self, tenant_id: str, role: access_pb2.Role, name: str = "", ttl_days: int = 0
    ) -> identity_service_pb2.CreateApiKeyResponse:
        response: identity_service_pb2.CreateApiKeyResponse = await self.stub.CreateApiKey(
            identity_service_pb2.CreateApiKeyRequest(
                tenant_id=tenant_id, role=role, name=name, ttl_days=ttl_days
            )
        )
        return response

    async def revoke(self, key_id: str) -> identity_pb2.ApiKey:
        key: identity_pb2.ApiKey = await self.stub.RevokeApiKey(
            identity_service_pb2.RevokeApiKeyRequest(key_id=key_id)
        )
        return key


class AdminClient:
    """Benchmark-maintainer calls of the rotator."""

    def __init__(self, chan: grpc.aio.Channel) -> None:
        self._stub = service_stub(taskpool_service_pb2_grpc.TaskPoolServiceStub, chan)

    async def import_items(
        self, items: Sequence[taskpool_pb2.ImportItem], batch: int = 2000
    ) -> taskpool_service_pb2.ImportTasksResponse:
        async def messages() -> AsyncIterator[taskpool_service_pb2.ImportTasksRequest]:
            for part in message_batches(items, batch):
                yield taskpool_service_pb2.ImportTasksRequest(items=part)

        response: taskpool_service_pb2.ImportTasksResponse = await self._stub.ImportTasks(
            messages()
        )
        return response

    async def publish(
        self,
        pool_id: str,
        track: common_pb2.Track = common_pb2.TRACK_LLM,
        board: taskpool_pb2.Board = taskpool_pb2.BOARD_UPLOAD,
        datasets: Sequence[str] = (),
    ) -> taskpool_pb2.Pool:
        response: taskpool_service_pb2.PublishPoolResponse = await self._stub.PublishPool(
            taskpool_service_pb2.PublishPoolRequest(
                pool_id=pool_id, track=track, board=board, datasets=datasets
            )
        )
        return response.pool

    async def disclose(self, pool_id: str) -> taskpool_service_pb2.DisclosePoolResponse:
        """DisclosePool: per-item results of the pool released, its groups retired."""
        response: taskpool_service_pb2.DisclosePoolResponse = await self._stub.DisclosePool(
            taskpool_service_pb2.DisclosePoolRequest(pool_id=pool_id)
        )
        return response


class JudgeAdmin:
    """Maintainer and physician calls of the judge scorer (JudgeService)."""

    def __init__(self, chan: grpc.aio.Channel) -> None:
        self.stub = service_stub(judge_service_pb2_grpc.JudgeServiceStub, chan)

    async def import_ratings(
        self, ratings: Sequence[judge_service_pb2.PhysicianRating], batch: int = 1000
    ) -> judge_service_pb2.ImportRatingsResponse:
        async def messages() -> AsyncIterator[judge_service_pb2.ImportRatingsRequest]:
            for i in range(0, len(ratings), batch):
                yield judge_service_pb2.ImportRatingsRequest(ratings=ratings[i : i + batch])

        response: judge_service_pb2.ImportRatingsResponse = await self.stub.ImportRatings(
            messages()
        )
        return response

    async def calibrate(self, rubric_id: str, version: int = 0) -> judge_service_pb2.Calibration:
        calibration: judge_service_pb2.Calibration = await self.stub.Calibrate(
            judge_service_pb2.CalibrateRequest(rubric_id=rubric_id, rubric_version=version)
        )
        return calibration

    async def calibration(self, rubric_id: str, version: int = 0) -> judge_service_pb2.Calibration:
        calibration: judge_service_pb2.Calibration = await self.stub.GetCalibration(
            judge_service_pb2.GetCalibrationRequest(rubric_id=rubric_id, rubric_version=version)
        )
        return calibration

    async def reviews(self, state: str = "open") -> list[judge_service_pb2.Review]:
        response: judge_service_pb2.ListReviewsResponse = await self.stub.ListReviews(
            judge_service_pb2.ListReviewsRequest(state=state)
        )
        return list(response.reviews)

    async def claim(self, review_id: str, reviewer_id: str) -> judge_service_pb2.Review:
        review: judge_service_pb2.Review = await self.stub.ClaimReview(
            judge_service_pb2.ClaimReviewRequest(review_id=review_id, reviewer_id=reviewer_id)
        )
        return review

    async def panel_agreement(self, submission_id: str) -> judge_service_pb2.PanelAgreement:
        agreement: judge_service_pb2.PanelAgreement = await self.stub.GetPanelAgreement(
            judge_service_pb2.GetPanelAgreementRequest(submission_id=submission_id)
        )
        return agreement

    async def submit(
        self, review_id: str, reviewer_id: str, score: float
    ) -> judge_service_pb2.Review:
        review: judge_service_pb2.Review = await self.stub.SubmitReview(
            judge_service_pb2.SubmitReviewRequest(
                review_id=review_id, reviewer_id=reviewer_id, score=score
            )
        )
        return review


# A streamed request message (import, leak tracing) ends before this many bytes of items (gRPC's
# limit is 16 MiB; an item's prompt and key are at most 320 KiB, its images travel with it).
MESSAGE_BYTES = 8 * 1024 * 1024
M = TypeVar("M", bound=Message)


def message_batches(items: Sequence[M], most: int) -> list[Sequence[M]]:
    """items cut, in order, into batches of at most most items and about MESSAGE_BYTES."""
    out: list[Sequence[M]] = []
    start, used = 0, 0
    for i, item in enumerate(items):
        size = item.ByteSize()
        if i > start and (i - start >= most or used + size > MESSAGE_BYTES):
            out.append(items[start:i])
            start, used = i, 0
        used += size
    if start < len(items):
        out.append(items[start:])
    return out


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
