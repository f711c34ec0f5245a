"""run_service(): health turns SERVING, errors map to status codes, SIGTERM drains."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from medbench.report.v1 import report_service_pb2, report_service_pb2_grpc
from medbench_devstack.ports import free_port
from medbench_runtime.bearer import authorized_channel
from medbench_runtime.errors import NotFound
from medbench_runtime.service import Servicer, ServiceRuntime, run_service
from medbench_runtime.settings import AuthSettings, ServiceSettings
from tests.e2e.harness import eventually

SERVICE_TOKEN = "t" * 40


class Reports(report_service_pb2_grpc.ReportServiceServicer):
    async def GetReport(
        self, request: report_service_pb2.GetReportRequest, context: grpc.aio.ServicerContext
    ) -> report_service_pb2.GetReportResponse:
        raise NotFound(f"no report for submission {request.submission_id}")

    async def GetProgress(
        self, request: report_service_pb2.GetProgressRequest, context: grpc.aio.ServicerContext
    ) -> report_service_pb2.GetProgressResponse:
        raise RuntimeError("secret internal detail")


class Worker:
    name = "test-worker"

    def __init__(self) -> None:
        self.stopped = asyncio.Event()
        self.drained = False

    async def run(self) -> None:
        await self.stopped.wait()
        self.drained = True

    def stop(self) -> None:
        self.stopped.set()


@pytest.fixture
async def running() -> AsyncIterator[tuple[str, Worker, asyncio.Task[None]]]:
    settings = ServiceSettings(
        service_name="t",
        grpc_port=free_port(),
        metrics_port=free_port(),
        shutdown_grace_s=2,
        auth=AuthSettings(service_token=SERVICE_TOKEN),
    )
    worker = Worker()
    runtime = ServiceRuntime(
        servicers=[
            Servicer(
                report_service_pb2_grpc.add_ReportServiceServicer_to_server,
                Reports(),
                "medbench.report.v1.ReportService",
            )
        ],
        workers=[worker],
    )
    task = asyncio.create_task(run_service(settings, runtime))
    address = f"127.0.0.1:{settings.grpc_port}"
    yield address, worker, task
    if not task.done():
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 10)


async def health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=1
        )
        return response.status


async def test_errors_map_to_status_codes_and_internals_stay_hidden(
    running: tuple[str, Worker, asyncio.Task[None]],
) -> None:
    address, _, _ = running
    await eventually(lambda: _serving(address), 10, "SERVING")
    async with grpc.aio.insecure_channel(address) as channel:
        stub = report_service_pb2_grpc.ReportServiceStub(channel)
        # Without credentials nothing reaches the servicer.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetReport(report_service_pb2.GetReportRequest(submission_id="s1"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with authorized_channel(address, SERVICE_TOKEN) as channel:
        stub = report_service_pb2_grpc.ReportServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetReport(report_service_pb2.GetReportRequest(submission_id="s1"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == "no report for submission s1"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetProgress(report_service_pb2.GetProgressRequest(submission_id="s1"))
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert "secret" not in (err.value.details() or "")


async def _serving(address: str) -> bool:
    return await health(address) == health_pb2.HealthCheckResponse.SERVING


async def test_sigterm_stops_workers_and_the_server(
    running: tuple[str, Worker, asyncio.Task[None]],
) -> None:
    address, worker, task = running
    await eventually(lambda: _serving(address), 10, "SERVING")
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 10)
    assert worker.drained
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await health(address)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_service_token_too_short_to_be_a_secret_refuses_to_start() -> None:
    settings = ServiceSettings(
        service_name="t",
        grpc_port=free_port(),
        metrics_port=free_port(),
        auth=AuthSettings(service_token="short"),
    )
    with pytest.raises(RuntimeError, match="MEDBENCH_AUTH__SERVICE_TOKEN is 5 characters"):
        await run_service(settings, ServiceRuntime())
