"""A background worker's failure restarts the worker, never ends the process."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from medbench_runtime import service
from medbench_runtime.service import supervise


class Flaky:
    """Fails its first runs, then runs until stopped."""

    def __init__(self, name: str, failures: int) -> None:
        self.name = name
        self.failures = failures
        self.runs = 0
        self.running = asyncio.Event()
        self._stop = asyncio.Event()

    async def run(self) -> None:
        self.runs += 1
        if self.failures:
            self.failures -= 1
            raise RuntimeError("one bad round")
        self.running.set()
        await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()


async def test_a_failed_worker_is_restarted_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "RESTART_FIRST_S", 0.01)
    worker = Flaky("flaky-worker", failures=3)
    stopping = asyncio.Event()
    task = asyncio.create_task(supervise(worker, stopping))
    await asyncio.wait_for(worker.running.wait(), 10)
    assert worker.runs == 4 and not task.done()
    restarts = REGISTRY.get_sample_value(
        "medbench_worker_restarts_total", {"worker": "flaky-worker"}
    )
    assert restarts == 3
    stopping.set()
    worker.stop()
    await asyncio.wait_for(task, 10)


async def test_a_stopping_service_does_not_restart_a_failed_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "RESTART_FIRST_S", 30.0)
    worker = Flaky("failing-at-stop", failures=1)
    stopping = asyncio.Event()
    task = asyncio.create_task(supervise(worker, stopping))
    await asyncio.sleep(0)  # the first run fails; supervise waits out its backoff
    stopping.set()
    await asyncio.wait_for(task, 5)  # ends at once, not after the 30 s backoff
    assert worker.runs == 1
