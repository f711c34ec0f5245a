"""In-memory fakes of the dispatcher's ports (dispatcher.core.ports), for use-case tests
without a stack. Store writes apply at once; the outbox keeps a transaction's events only when
its work returns."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from dispatcher.core.jobs import (
    ANSWERED,
    INFRA_FAILED,
    RUNNING,
    STALLED,
    ItemOutcome,
    JobSpec,
    JobStatus,
    Recorded,
)
from dispatcher.core.multimodal import Image, ImageNotSendable
from dispatcher.core.policy import DecodingSettings
from dispatcher.core.ports import PromptItem
from medbench_storage.endpoint_keys import KeyNotHeld
from medbench_storage.testing import InMemoryOutbox

T = TypeVar("T")


def spec(sid: str = "sub_1", cap: int = 4, expected: int = 3) -> JobSpec:
    return JobSpec(
        submission_id=sid,
        tenant_id="tenant-a",
        pool_id="pool-1",
        track=1,
        expected=expected,
        base_url="https://e.example.com/v1",
        model="m",
        max_concurrency=cap,
        decoding=DecodingSettings(0.7, 64, 2048),
    )


class InMemoryJobs:
    def __init__(self, keys: Mapping[str, str] | None = None) -> None:
        self.jobs: dict[str, JobSpec] = {}
        self.status: dict[str, JobStatus] = {}
        self.records: dict[str, ItemOutcome | Recorded] = {}
        self.batched: dict[str, str] = {}
        self.sequences: dict[str, int] = {}
        self.batches: dict[str, int] = {}
        self.keys = dict(keys or {})

    async def add(self, job: JobSpec, now: datetime) -> None:
        if job.submission_id in self.jobs:
            return
        self.jobs[job.submission_id] = job
        self.status[job.submission_id] = JobStatus(
            job.submission_id, job.tenant_id, RUNNING, updated_at=now
        )

    async def job(self, submission_id: str) -> JobStatus | None:
        return self.status.get(submission_id)

    async def state(self, submission_id: str) -> str | None:
        found = self.status.get(submission_id)
        return None if found is None else found.state

    async def running(self) -> list[JobSpec]:
        return [self.jobs[s] for s, st in self.status.items() if st.state == RUNNING]

    def _of(self, submission_id: str) -> list[ItemOutcome | Recorded]:
        return [r for k, r in self.records.items() if k.startswith(f"{submission_id}:")]

    async def recorded(self, submission_id: str) -> list[Recorded]:
        return [
            Recorded(r.item_id, r.status, r.ordinal, r.dataset, r.text, r.prompt_hash,
                     self.batched.get(f"{submission_id}:{r.item_id}", ""), r.digest)
            for r in self._of(submission_id)
        ]  # fmt: skip

    async def counts(self, submission_id: str) -> tuple[int, int]:
        found = self._of(submission_id)
        answered = sum(r.status == ANSWERED for r in found)
        return answered, len(found) - answered

    async def record(self, outcome: ItemOutcome) -> bool:
        if outcome.record_id in self.records:
            return False
        self.records[outcome.record_id] = outcome
        return True

    async def claim(self, tx: Any, submission_id: str, record_ids: Sequence[str]) -> str:
        self.batches[submission_id] = self.batches.get(submission_id, 0) + 1
        batch_id = f"api-{self.batches[submission_id] - 1:06d}"
        for r in record_ids:
            self.batched.setdefault(r, batch_id)
        return batch_id

    async def next_sequence(self, tx: Any, submission_id: str) -> int:
        self.sequences[submission_id] = self.sequences.get(submission_id, 0) + 1
        return self.sequences[submission_id]

    async def set_state(
        self, tx: Any, submission_id: str, state: str, reason: str = "", now: datetime | None = None
    ) -> None:
        self.status[submission_id] = replace(
            self.status[submission_id], state=state, reason=reason, updated_at=now
        )

    async def finish(
        self,
        tx: Any,
        submission_id: str,
        state: str,
        reason: str,
        answered: int,
        infra_failed: int,
        calls: int,
    ) -> None:
        old = self.status[submission_id]
        self.status[submission_id] = replace(
            old, state=state, reason=reason, answered=answered, infra_failed=infra_failed,
            calls=old.calls + calls, updated_at=datetime.now(UTC),
        )  # fmt: skip

    async def resume(self, submission_id: str) -> int:
        if self.status[submission_id].state != STALLED:
            return 0
        failed = [k for k, r in self.records.items()
                  if k.startswith(f"{submission_id}:") and r.status == INFRA_FAILED]  # fmt: skip
        for k in failed:
            del self.records[k]
        self.status[submission_id] = replace(
            self.status[submission_id], state=RUNNING, reason="", answered=None, infra_failed=None
        )
        return len(failed)

    async def stalled_before(self, cutoff: datetime) -> list[JobStatus]:
        return [
            s for s in self.status.values()
            if s.state == STALLED and s.updated_at is not None and s.updated_at < cutoff
        ]  # fmt: skip

    async def fail_stalled(self, tx: Any, job: JobStatus, reason: str) -> bool:
        current = self.status[job.submission_id]
        if current.state != STALLED or current.updated_at != job.updated_at:
            return False
        self.status[job.submission_id] = replace(current, state="FAILED", reason=reason)
        return True

    async def states(self, submission_ids: Sequence[str]) -> dict[str, str]:
        return {s: self.status[s].state for s in submission_ids if s in self.status}

    async def api_key(self, submission_id: str, tenant_id: str) -> str:
        if submission_id not in self.keys:
            raise KeyNotHeld(submission_id)
        return self.keys[submission_id]

    async def forget_key(self, submission_id: str) -> None:
        self.keys.pop(submission_id, None)


class InMemorySealedKeys:
    def __init__(self, jobs: InMemoryJobs) -> None:
        self._jobs = jobs

    async def held(self) -> Sequence[Mapping[str, Any]]:
        return [{"_id": s} for s in sorted(self._jobs.keys)]

    async def delete(self, submission_id: str) -> bool:
        return self._jobs.keys.pop(submission_id, None) is not None


def item(n: int, canary: bool = False) -> PromptItem:
    return PromptItem(f"item-{n}", n, "D", (("user", f"q-{n}"),), prompt_hash=f"h{n}",
                      canary=canary)  # fmt: skip


class FakePrompts:
    """Every submission's prompts: the given batches."""

    def __init__(self, *batches: list[PromptItem]) -> None:
        self._batches = batches

    async def batches(self, submission_id: str) -> AsyncIterator[Sequence[PromptItem]]:
        for batch in self._batches:
            yield batch


class NoImages:
    async def get(self, image_id: str, tenant_id: str) -> Image:
        raise ImageNotSendable(image_id)


@dataclass(frozen=True)
class Reply:
    status: int | None
    text: str = ""
    finish_reason: str = "stop"
    usage: dict[str, int] | None = None
    error: str = ""
    retry_after: str | None = None
    latency_ms: float = 1.0
    refused: bool = False


@dataclass(frozen=True)
class Models:
    status: int | None
    models: list[str] | None = None
    error: str = ""


class FakeEndpoint:
    """answer(question) -> Reply; every question asked is counted."""

    def __init__(
        self,
        answer: Callable[[str], Reply] = lambda q: Reply(200, f"A:{q}"),
        models: Models = Models(200, ["m"]),
    ) -> None:
        self.answer = answer
        self.listed = models
        self.asked: list[str] = []

    async def chat(self, base_url: str, api_key: str, body: dict[str, Any]) -> Reply:
        question = body["messages"][-1]["content"]
        self.asked.append(question)
        return self.answer(question)

    async def models(self, base_url: str, api_key: str) -> Models:
        return self.listed


def never_an_outage(exc: BaseException) -> bool:
    return False


def failure_reason(exc: BaseException) -> str:
    return f"cannot load: {type(exc).__name__}"


def progress_events(outbox: InMemoryOutbox) -> list[Any]:
    """The dispatch-progressed events the outbox holds, oldest first."""
    return outbox.of_topic("medbench.dispatch.dispatch-progressed.v1")
