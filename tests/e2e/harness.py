"""Drives evaluations through the public gRPC API of a running stack (test helper)."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from medbench.identity.v1 import access_pb2, identity_pb2, identity_service_pb2
from medbench.report.v1 import report_pb2, report_service_pb2, report_service_pb2_grpc
from medbench.submission.v1 import submission_pb2
from medbench_client.api import AdminClient, IdentityAdmin, PartnerClient, channel, provision_key
from medbench_client.bank_files import import_item
from medbench_devstack.answers import translate
from medbench_devstack.services import ServiceStack

T = TypeVar("T")
COMPLETED = submission_pb2.SUBMISSION_STATE_COMPLETED


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
    describe: Callable[[], str] | None = None,
) -> T:
    """Polls check until it returns a truthy value; fails with what (and describe(), what was
    last seen) after the deadline."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = await check()
            if value:
                return value
        except grpc.aio.AioRpcError as exc:
            last_error = exc
        await asyncio.sleep(interval_s)
    raise AssertionError(
        f"timed out after {timeout_s}s waiting for {what} (last error: {last_error!r})"
        + (f"; {describe()}" if describe else "")
    )


def partner_key(
    stack: ServiceStack, tenant: str, role: int = access_pb2.ROLE_PARTNER_SUBMITTER
) -> str:
    """An API key of role for tenant on this stack (tenant created when absent)."""
    return provision_key(stack.address("gateway"), stack.admin_key, tenant, role)


async def lift_caps(stack: ServiceStack, tenant: str, quotas_too: bool = False) -> None:
    """Raises tenant's caps per pool (README "Caps per pool") in its quota record, creating the
    tenant when absent: for tests that run one pool more often than a partner may; with
    quotas_too, its daily, concurrent and monthly quotas too. The platform's defaults stay as
    they are."""
    admin = IdentityAdmin(admin_channel(stack, "gateway"))
    await admin.ensure_tenant(tenant)
    many = 1_000_000
    quotas = identity_pb2.Quotas(
        official_per_cycle=many, hidden_per_day=many, hidden_per_cycle=many
    )
    if quotas_too:
        quotas.submissions_per_day = many
        quotas.concurrent_submissions = many
        quotas.items_per_month = many * 1000
    await admin.stub.UpdateTenant(
        identity_service_pb2.UpdateTenantRequest(tenant_id=tenant, quotas=quotas)
    )


def partner_client(
    stack: ServiceStack, tenant: str, role: int = access_pb2.ROLE_PARTNER_SUBMITTER
) -> PartnerClient:
    """The public API as tenant's key of role sees it."""
    return PartnerClient(channel(stack.address("gateway"), partner_key(stack, tenant, role)))


def admin_channel(stack: ServiceStack, name: str) -> grpc.aio.Channel:
    """A channel to a service carrying the stack's maintainer key."""
    return channel(stack.address(name), stack.admin_key)


def service_channel(stack: ServiceStack, name: str) -> grpc.aio.Channel:
    """A channel to a service carrying the platform's service token (internal RPCs)."""
    return channel(stack.address(name), stack.service_token)


async def load_pool(stack: ServiceStack, rows: Sequence[dict[str, Any]], pool_id: str) -> None:
    """Imports rows into the bank and publishes them as the LLM track's current pool."""
    admin = AdminClient(admin_channel(stack, "rotator"))
    await admin.import_items([import_item(r) for r in rows])
    await admin.publish(pool_id)


@dataclass
class Evaluation:
    """One partner evaluation: create, download, upload in batches, wait, read the report."""

    stack: ServiceStack
    tenant: str
    request_id: str
    answers: dict[str, str]
    batch_size: int = 100
    # Canonical questions of the answered items (answers are written for their option order).
    questions: dict[str, str] = field(default_factory=dict)
    # Name and leaderboard metadata of the model (default: a model named e2e-model).
    model: submission_pb2.ModelInfo | None = None

    def partner(self) -> PartnerClient:
        # A fresh channel per call: a restarted gateway gets a fresh connection.
        return partner_client(self.stack, self.tenant)

    async def create(self) -> str:
        response = await self.partner().create(self.request_id, "e2e-model", model=self.model)
        self.submission_id = response.submission.submission_id
        return self.submission_id

    async def prompts(self) -> list[submission_pb2.Prompt]:
        return await self.partner().prompts(self.submission_id)

    def batches(
        self, prompts: Sequence[submission_pb2.Prompt]
    ) -> list[tuple[str, list[tuple[str, str]], bool]]:
        """Answers as the model would give them for the prompts shown to this tenant."""
        pairs = [
            (
                p.item_id,
                translate(self.answers[p.item_id], self.questions.get(p.item_id, ""), p.question)
                # Items the answer set does not know get an answer as a model would give one.
                if p.item_id in self.answers
                else "<A>",
            )
            for p in prompts
        ]
        out = [
            (f"b{i // self.batch_size:05d}", pairs[i : i + self.batch_size], False)
            for i in range(0, len(pairs), self.batch_size)
        ]
        return out

    async def upload_batch(
        self, batch: tuple[str, list[tuple[str, str]], bool], timeout_s: float = 60
    ) -> None:
        """Uploads one batch, resending on UNAVAILABLE or ABORTED (safe: resends are recognised)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await self.partner().upload(self.submission_id, [batch])
                return
            except grpc.aio.AioRpcError as exc:
                retryable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)
                if exc.code() not in retryable or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def half_uploaded(
        self, timeout_s: float = 60
    ) -> list[tuple[str, list[tuple[str, str]], bool]]:
        """Creates the submission, uploads the first half of its batches and waits until the
        aggregator counts a scored item (maintainers see scoring progress while answers are
        awaited; partners do not). Returns the batches still to upload."""
        await self.create()
        batches = self.batches(await self.prompts())
        half = len(batches) // 2
        for batch in batches[:half]:
            await self.upload_batch(batch)
        reports = report_service_pb2_grpc.ReportServiceStub(admin_channel(self.stack, "aggregator"))

        async def scoring_started() -> bool:
            progress = await reports.GetProgress(
                report_service_pb2.GetProgressRequest(submission_id=self.submission_id)
            )
            return progress.scored_items > 0

        await eventually(scoring_started, timeout_s, "the first scores")
        return batches[half:]

    async def wait_completed(self, timeout_s: float = 120) -> report_pb2.Report:
        async def completed() -> bool:
            sub = await self.partner().get(self.submission_id)
            return sub.state == COMPLETED

        await eventually(completed, timeout_s, f"{self.submission_id} to complete")
        return await checked_report(self.stack, self.tenant, self.submission_id)


async def exact_report(stack: ServiceStack, tenant: str, submission_id: str) -> report_pb2.Report:
    """The exact report, as maintainers read it from the aggregator (GetReportRequest.exact)."""
    stub = report_service_pb2_grpc.ReportServiceStub(admin_channel(stack, "aggregator"))
    response = await stub.GetReport(
        report_service_pb2.GetReportRequest(
            submission_id=submission_id, tenant_id=tenant, exact=True
        )
    )
    assert isinstance(response, report_service_pb2.GetReportResponse)
    return response.report


def check_live_view(live: report_pb2.Report, exact: report_pb2.Report) -> None:
    """The partner's live view of a report agrees with the exact one: the same datasets and
    counts, each score and item mean within one step of the exact one, on a multiple of it."""
    assert live.live and not exact.live, (live.live, exact.live)
    assert live.scored_items == exact.scored_items
    assert [d.dataset for d in live.datasets] == [d.dataset for d in exact.datasets]
    for shown, true in zip(live.datasets, exact.datasets, strict=True):
        assert (shown.items, shown.units, shown.rule) == (true.items, true.units, true.rule)
        assert shown.step > 0 and shown.low <= shown.score <= shown.high, shown
        for a, b in ((shown.score, true.score), (shown.item_mean, true.item_mean)):
            assert abs(a - b) <= shown.step + 1e-6, (shown, true)
            assert abs(a / shown.step - round(a / shown.step)) < 1e-6, shown


async def checked_report(stack: ServiceStack, tenant: str, submission_id: str) -> report_pb2.Report:
    """A completed submission's report for tests: the partner's (a live view while the pool is
    live, checked against the exact one) with the exact numbers put in, so that tests can
    assert scores; the partner's lineage (the gateway adds the model's side) is kept."""
    seen = await partner_client(stack, tenant).report(submission_id)
    if not seen.live:
        return seen
    exact = await exact_report(stack, tenant, submission_id)
    check_live_view(seen, exact)
    exact.lineage.CopyFrom(seen.lineage)
    return exact


async def withheld_item_results(
    stack: ServiceStack, tenant: str, submission_id: str
) -> list[report_pb2.ItemResult]:
    """The item results of a submission on a live pool: refused to their owner
    (FAILED_PRECONDITION until maintainers disclose the pool; checked here), and returned as
    the owner will get them once it is disclosed: the aggregator's stream, which the gateway's
    GetItemResults forwards unchanged (read with the maintainer key)."""
    try:
        await partner_client(stack, tenant).item_results(submission_id)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc
        assert f"per-item results of submission {submission_id} are withheld" in (
            exc.details() or ""
        ), exc.details()
    else:
        raise AssertionError(f"item results of {submission_id} (a live pool) were served")
    stub = report_service_pb2_grpc.ReportServiceStub(admin_channel(stack, "aggregator"))
    request = report_service_pb2.StreamItemResultsRequest(
        submission_id=submission_id, tenant_id=tenant
    )
    return [item async for batch in stub.StreamItemResults(request) for item in batch.items]


def comparable(report: report_pb2.Report) -> dict[str, Any]:
    """The parts of a report that must not depend on how the run went."""
    return {
        "overall": report.overall,
        "dimensions": [(d.dimension, d.score, d.datasets) for d in report.dimensions],
        "datasets": [
            (d.dataset, d.dimension, d.score, d.items, d.units, d.rule) for d in report.datasets
        ],
        "digest": report.lineage.item_scores_digest,
        "pool": report.lineage.pool_id,
        "scored_items": report.scored_items,
    }


def _lag(bootstrap: str, group: str, topic: str) -> int:
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = consumer.end_offsets(tps)
        committed = admin.list_group_offsets({group: None}).get(group, {})
        return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps)
    finally:
        consumer.close()
        admin.close()


async def wait_consumed(bootstrap: str, group: str, topic: str, timeout_s: float = 60) -> None:
    """Waits until a consumer group has committed every message of a topic."""

    async def drained() -> bool:
        return await asyncio.to_thread(_lag, bootstrap, group, topic) == 0

    await eventually(drained, timeout_s, f"group {group} to consume {topic}", interval_s=0.3)


def read_topic(bootstrap: str, topic: str, timeout_s: float = 5) -> list[Any]:
    """Every record of a topic, from the beginning (no consumer group)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end")
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def gateway_metric(stack: ServiceStack, name: str, *labels: str) -> float:
    """A counter of the gateway's /metrics with these labels (0 when never counted)."""
    for line in stack.scrape("gateway").splitlines():
        if line.startswith(f"{name}{{") and all(label in line for label in labels):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def maintainer_cli(stack: ServiceStack, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m medbench_client` (the maintainer CLI) on the stack, with its maintainer key."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "medbench_client",
            "--rotator",
            stack.address("rotator"),
            "--gateway",
            stack.address("gateway"),
            "--key",
            stack.admin_key,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def watermarked_copy(bank: bytes, served: bytes) -> bool:
    """Whether served is a tenant's copy of a bank image: the same size and mode, no pixel value
    more than 1 away (rotator README, "Image watermarks"; an unmarked image is its bank bytes)."""
    import PIL.Image

    a, b = PIL.Image.open(io.BytesIO(bank)), PIL.Image.open(io.BytesIO(served))
    if (a.size, a.mode) != (b.size, b.mode):
        return False
    channels = zip(a.tobytes(), b.tobytes(), strict=True)
    return all(abs(x - y) <= 1 for x, y in channels)
