"""How the dispatcher reads a job's prompts: calls start with the first batch, a read cut by an
outage goes on at the next refresh without queueing anything twice, and an error that is not
an outage ends the worker (unit tests: the rotator, the endpoint and the job store are fakes)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from dispatcher.adapters.failures import is_outage, load_failure
from dispatcher.adapters.grpc_rotator_prompts import RotatorPrompts
from dispatcher.core.jobs import INTERNAL_FAILURE, JobStatus
from dispatcher.core.ports import JobStore
from dispatcher.usecases.runner import Dispatcher
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2
from medbench_runtime.openai_endpoint import CallResult
from medbench_storage.testing import InMemoryOutbox, InMemoryTransactions
from tests.services.dispatcher.fakes import (
    InMemoryJobs,
    NoImages,
    spec,
)

SID = "sub_reading"


def batch(*ids: str) -> taskpool_service_pb2.GetPromptsResponse:
    return taskpool_service_pb2.GetPromptsResponse(
        items=[
            taskpool_pb2.AssignedItem(item_id=i, ordinal=n, dataset="D", question=f"q-{i}")
            for n, i in enumerate(ids)
        ]
    )


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "down")


class Rotator:
    """GetPrompts plays one script per call: batches, and an error to end with (or None)."""

    def __init__(self, *scripts: tuple[list[taskpool_service_pb2.GetPromptsResponse], Any]):
        self.scripts = list(scripts)
        self.after_first_batch = asyncio.Event()
        self.go_on = asyncio.Event()

    def GetPrompts(self, request: Any) -> AsyncIterator[taskpool_service_pb2.GetPromptsResponse]:  # noqa: N802
        batches, error = self.scripts.pop(0)

        async def stream() -> AsyncIterator[taskpool_service_pb2.GetPromptsResponse]:
            for n, b in enumerate(batches):
                yield b
                if n == 0:
                    self.after_first_batch.set()
                    await self.go_on.wait()
            if error is not None:
                raise error

        return stream()


class Endpoint:
    def __init__(self) -> None:
        self.asked: Counter[str] = Counter()

    async def chat(self, base_url: str, api_key: str, body: dict[str, Any]) -> CallResult:
        self.asked[body["messages"][-1]["content"]] += 1
        return CallResult(200, text="<A>", finish_reason="stop")


class Jobs(InMemoryJobs):
    """The job store: one RUNNING job, nothing recorded before; records kept in memory."""

    def __init__(self) -> None:
        super().__init__(keys={SID: "k"})
        self.jobs[SID] = spec(SID, cap=4, expected=5)
        self.status[SID] = JobStatus(SID, "t", "RUNNING")

    @property
    def recorded_items(self) -> list[Any]:
        return list(self.records.values())


def dispatcher(rotator: Rotator, endpoint: Endpoint, jobs: JobStore) -> Dispatcher:
    outbox = InMemoryOutbox()
    return Dispatcher(
        jobs, endpoint, RotatorPrompts(rotator), NoImages(), InMemoryTransactions(outbox), outbox,  # type: ignore[arg-type]
        outage=is_outage, load_failure=load_failure,
    )  # fmt: skip


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def settled(d: Dispatcher) -> None:
    job = d.job(SID)
    assert job is not None
    await until(lambda: job.reading is None and not job.inflight, "the read and calls to end")


async def test_calls_start_with_the_first_batch_and_a_cut_read_goes_on_without_repeats() -> None:
    rotator = Rotator(
        ([batch("a", "b", "c"), batch("d")], rpc_error(grpc.StatusCode.UNAVAILABLE)),
        ([batch("a", "b", "c"), batch("d", "e")], None),
    )
    endpoint, jobs = Endpoint(), Jobs()
    d = dispatcher(rotator, endpoint, jobs)
    async with asyncio.timeout(10):  # the refresh does not wait for the whole read
        await d._refresh()  # noqa: SLF001 - the refresh step alone, without the loop around it
    async with asyncio.timeout(10):
        await rotator.after_first_batch.wait()
    # The first batch is answered while the read waits for the rest.
    await until(lambda: len(jobs.recorded_items) == 3, "the first batch's answers")
    job = d.job(SID)
    assert job is not None and not job.loaded
    rotator.go_on.set()
    await settled(d)  # the read ends with UNAVAILABLE: waited out, not fatal
    assert not job.loaded and not job.failed
    assert sorted(endpoint.asked) == ["q-a", "q-b", "q-c", "q-d"]

    await d._refresh()  # noqa: SLF001 - the next refresh reads on
    await settled(d)
    assert job.loaded and not job.pending
    assert endpoint.asked == Counter({f"q-{i}": 1 for i in "abcde"})
    assert sorted(r.item_id for r in jobs.recorded_items) == list("abcde")


async def test_a_read_error_that_is_not_an_outage_fails_that_job_not_the_worker() -> None:
    rotator = Rotator(([batch("a")], rpc_error(grpc.StatusCode.INVALID_ARGUMENT)))
    rotator.go_on.set()
    d = dispatcher(rotator, Endpoint(), Jobs())
    await d._refresh()  # noqa: SLF001
    await settled(d)
    job = d.job(SID)
    assert job is not None and job.failed == INTERNAL_FAILURE
    assert "INVALID_ARGUMENT" not in job.failed  # internal details stay in the log
