"""The gateway's manifest cache: a partner's completed download fills it (no second pass over
the pool for the first upload); an unfinished one does not."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from gateway.adapters.grpc_peers import RotatorClient
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2

ITEMS = [
    taskpool_pb2.AssignedItem(
        item_id=f"item-{n}", ordinal=n, dataset=f"D{n % 2}", prompt_hash=f"h{n}", question=f"q{n}"
    )
    for n in range(5)
]


class FakeRotator:
    """GetPrompts in batches of two items; records every call's include_prompts."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def GetPrompts(  # noqa: N802 - the stub's name
        self, request: taskpool_service_pb2.GetPromptsRequest
    ) -> AsyncIterator[taskpool_service_pb2.GetPromptsResponse]:
        self.calls.append(request.include_prompts)

        async def batches() -> AsyncIterator[taskpool_service_pb2.GetPromptsResponse]:
            for k in range(0, len(ITEMS), 2):
                items = ITEMS[k : k + 2]
                if not request.include_prompts:
                    items = [taskpool_pb2.AssignedItem(**_without_question(i)) for i in items]
                yield taskpool_service_pb2.GetPromptsResponse(
                    items=items, item_count=len(ITEMS), pool_id="pool-1"
                )

        return batches()


def _without_question(item: taskpool_pb2.AssignedItem) -> dict[str, object]:
    return {
        "item_id": item.item_id,
        "ordinal": item.ordinal,
        "dataset": item.dataset,
        "prompt_hash": item.prompt_hash,
    }


def client() -> tuple[RotatorClient, FakeRotator]:
    rotator = RotatorClient(grpc.aio.insecure_channel("127.0.0.1:9"))
    fake = FakeRotator()
    rotator._stub = fake  # type: ignore[assignment]
    return rotator, fake


async def test_a_completed_download_leaves_the_manifest_the_upload_would_load() -> None:
    rotator, fake = client()
    downloaded = [i async for b in rotator.download("sub-1") for i in b.items]
    assert downloaded == ITEMS
    cached = await rotator.manifest("sub-1", "pool-1")
    assert fake.calls == [True], "the upload's manifest came from the download"

    loaded, fresh = client()
    expected = await loaded.manifest("sub-1", "pool-1")
    assert fresh.calls == [False]
    assert cached == expected
    assert cached.by_id["item-3"] == (3, "D1") and cached.by_ordinal[4] == ("item-4", "D0")
    assert cached.prompt_hash["item-2"] == "h2" and cached.pool_id == "pool-1"


async def test_an_unfinished_download_leaves_nothing() -> None:
    rotator, fake = client()
    async for _ in rotator.download("sub-1"):
        break
    manifest = await rotator.manifest("sub-1", "pool-1")
    assert fake.calls == [True, False]
    assert len(manifest.by_id) == len(ITEMS)
