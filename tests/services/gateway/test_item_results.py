"""Per-item results reach a submission's owner only once its pool is disclosed (both boards);
the gateway learns disclosure from the rotator's GetPool, a live answer kept briefly, a
disclosed one for good."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from gateway.adapters.grpc_peers import RotatorClient
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2
from medbench_runtime.errors import FailedPrecondition, NotFound
from tests.services.gateway.fakes import FakeReports
from tests.services.gateway.test_usecases import T, World

AT = datetime(2026, 12, 6, 12, tzinfo=UTC)


class CountingReports(FakeReports):
    """FakeReports that counts the aggregator's item-result streams."""

    def __init__(self) -> None:
        super().__init__()
        self.streams = 0

    async def item_results(self, submission_id: str, tenant_id: str) -> AsyncIterator[Any]:
        self.streams += 1
        yield {"submission_id": submission_id}


async def completed(w: World, api: bool = False) -> str:
    sid = await (w.api_mode() if api else w.upload_mode())
    await w.submissions.complete(T, sid, 4, AT)
    return sid


async def read(w: World, sid: str, tenant: str = T) -> list[Any]:
    return [batch async for batch in w.submissions.item_results(tenant, sid)]


@pytest.mark.parametrize("api", [False, True], ids=["upload board", "API board"])
async def test_a_live_pools_item_results_are_withheld_and_say_why_and_when(api: bool) -> None:
    w = World(reports=CountingReports())
    sid = await completed(w, api)
    with pytest.raises(FailedPrecondition) as refused:
        await read(w, sid)
    message = str(refused.value)
    assert f"per-item results of submission {sid} are withheld" in message
    assert "pool pool-1 is a live hidden pool" in message
    assert "would reveal its answer keys" in message
    assert "released when the maintainers disclose the pool" in message
    assert w.rotator.disclosure_reads == ["pool-1"]
    assert w.reports.streams == 0  # the aggregator is never asked


async def test_a_disclosed_pools_item_results_stream_to_their_owner_only() -> None:
    w = World(reports=CountingReports())
    sid = await completed(w)
    w.rotator.disclosed_pools.add("pool-1")
    assert await read(w, sid) == [{"submission_id": sid}]
    assert w.reports.streams == 1
    with pytest.raises(NotFound):
        await read(w, sid, tenant="tenant-b")


async def test_an_unfinished_submission_is_refused_before_disclosure_is_asked() -> None:
    w = World(reports=CountingReports())
    sid = await w.upload_mode()
    w.rotator.disclosed_pools.add("pool-1")
    with pytest.raises(FailedPrecondition, match="exist once it is COMPLETED"):
        await read(w, sid)
    assert w.rotator.disclosure_reads == [] and w.reports.streams == 0


class FakePools:
    """GetPool by id: pool-1, disclosed once `disclose` is called; counts the calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.disclosed = False

    async def GetPool(  # noqa: N802 - the stub's name
        self, request: taskpool_service_pb2.GetPoolRequest, timeout: float = 0
    ) -> taskpool_service_pb2.GetPoolResponse:
        self.calls += 1
        if request.pool_id != "pool-1":
            raise _NotFound()
        pool = taskpool_pb2.Pool(pool_id="pool-1")
        if self.disclosed:
            pool.disclosed_at.FromDatetime(AT)
        return taskpool_service_pb2.GetPoolResponse(pool=pool)


class _NotFound(grpc.aio.AioRpcError):
    def __init__(self) -> None:
        super().__init__(
            grpc.StatusCode.NOT_FOUND,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            details="pool 'pool-2' not found",
        )


def client(cache_s: float) -> tuple[RotatorClient, FakePools]:
    rotator = RotatorClient(grpc.aio.insecure_channel("127.0.0.1:9"), disclosure_cache_s=cache_s)
    fake = FakePools()
    rotator._stub = fake  # type: ignore[assignment]
    return rotator, fake


async def test_a_live_answer_is_kept_briefly_and_a_disclosed_one_for_good() -> None:
    rotator, pools = client(cache_s=60)
    assert not await rotator.disclosed("pool-1")
    pools.disclosed = True
    assert not await rotator.disclosed("pool-1")  # kept for the cache time
    assert pools.calls == 1

    fresh, pools = client(cache_s=0)
    assert not await fresh.disclosed("pool-1")
    pools.disclosed = True
    assert await fresh.disclosed("pool-1")
    calls = pools.calls
    assert await fresh.disclosed("pool-1")  # one-way: never asked again
    assert pools.calls == calls == 2
    with pytest.raises(NotFound, match="pool-2"):
        await fresh.disclosed("pool-2")
