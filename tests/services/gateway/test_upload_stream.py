"""The bound on a silent UploadAnswers stream (the servicer's message pump)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.entrypoints.grpc_servicer import until_idle
from medbench_runtime.errors import DeadlineExceeded


async def stalls_after(messages: list[str], stalled: asyncio.Event) -> AsyncIterator[str]:
    for message in messages:
        yield message
    stalled.set()
    await asyncio.Event().wait()


async def test_a_stream_that_falls_silent_ends_with_deadline_exceeded() -> None:
    stalled = asyncio.Event()
    received: list[str] = []
    with pytest.raises(DeadlineExceeded, match="no UploadAnswers message arrived for 0.05 s"):
        async for message in until_idle(stalls_after(["b1", "b2"], stalled), 0.05):
            received.append(message)
    assert received == ["b1", "b2"] and stalled.is_set()


async def test_a_stream_that_keeps_sending_is_never_cut() -> None:
    async def slow() -> AsyncIterator[int]:
        for i in range(5):
            await asyncio.sleep(0.02)
            yield i

    assert [m async for m in until_idle(slow(), 0.2)] == [0, 1, 2, 3, 4]
