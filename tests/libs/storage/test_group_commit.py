"""GroupCommit: concurrent writes share round trips; every caller gets its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from dispatcher.adapters.mongo_jobs import MongoJobs
from medbench_storage.group_commit import GroupCommit
from tests.conftest import Servers


class Recorder:
    """write_many that records its batches and can fail a chosen batch."""

    def __init__(self, fail_batch: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_batch = fail_batch
        self.writing = asyncio.Event()

    async def write_many(self, docs: Sequence[int]) -> list[int]:
        self.batches.append(list(docs))
        self.writing.set()
        await asyncio.sleep(0.01)  # one round trip, during which others queue
        if len(self.batches) - 1 == self.fail_batch:
            raise ConnectionError("write failed")
        return [d * 10 for d in docs]


async def test_concurrent_submits_are_batched_and_answered_each() -> None:
    recorder = Recorder()
    group: GroupCommit[int, int] = GroupCommit(recorder.write_many, max_batch=40)
    results = await asyncio.gather(*(group.submit(i) for i in range(100)))
    assert results == [i * 10 for i in range(100)]
    assert sorted(d for b in recorder.batches for d in b) == list(range(100))
    # All hundred queue before the first write starts: batches of at most 40, in order.
    assert [len(b) for b in recorder.batches] == [40, 40, 20]


async def test_callers_arriving_during_a_write_go_in_the_next_one() -> None:
    recorder = Recorder()
    group: GroupCommit[int, int] = GroupCommit(recorder.write_many)
    first = asyncio.create_task(group.submit(0))
    await recorder.writing.wait()
    later = [asyncio.create_task(group.submit(i)) for i in range(1, 6)]
    assert await first == 0
    assert await asyncio.gather(*later) == [10, 20, 30, 40, 50]
    assert recorder.batches == [[0], [1, 2, 3, 4, 5]]


async def test_a_failed_write_fails_only_its_own_callers() -> None:
    recorder = Recorder(fail_batch=0)
    group: GroupCommit[int, int] = GroupCommit(recorder.write_many, max_batch=2)
    outcomes = await asyncio.gather(*(group.submit(i) for i in range(5)), return_exceptions=True)
    assert [type(o) for o in outcomes[:2]] == [ConnectionError, ConnectionError]
    assert outcomes[2:] == [20, 30, 40]


async def test_a_write_with_the_wrong_number_of_results_is_an_error() -> None:
    async def short(docs: Sequence[int]) -> list[int]:
        return []

    group: GroupCommit[int, int] = GroupCommit(short)
    with pytest.raises(RuntimeError, match="0 results for 1"):
        await group.submit(1)


@pytest.mark.integration
async def test_record_many_reports_duplicates_per_document(servers: Servers, unique: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri)
    try:
        jobs = MongoJobs(client[f"gc_{unique}"])
        assert await jobs.record_many([{"_id": "a"}, {"_id": "b"}]) == [True, True]
        assert await jobs.record_many([{"_id": "c"}, {"_id": "a"}, {"_id": "d"}]) == [
            True,
            False,
            True,
        ]
        ids = await client[f"gc_{unique}"].responses.distinct("_id")
        assert sorted(ids) == ["a", "b", "c", "d"]
    finally:
        await client.close()
