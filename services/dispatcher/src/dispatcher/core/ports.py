"""What the dispatcher's use cases need from the world (implemented in adapters/, faked in
tests/services/dispatcher/fakes.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from dispatcher.core.jobs import ItemOutcome, JobSpec, JobStatus, Recorded
from dispatcher.core.multimodal import Image

# The transactional ports every service shares (re-exported: use cases name them from here).
from medbench_runtime.transactional import Event as Event
from medbench_runtime.transactional import Outbox as Outbox
from medbench_runtime.transactional import Transactions as Transactions

T = TypeVar("T")


@dataclass(frozen=True)
class PromptItem:
    """One item of a submission's prompts as the rotator serves them."""

    item_id: str
    ordinal: int
    dataset: str
    messages: tuple[tuple[str, str], ...]
    question: str = ""
    image_ids: tuple[str, ...] = ()
    prompt_hash: str = ""
    canary: bool = False
    answer_format: str = ""


class Prompts(Protocol):
    """A submission's prompts, batch by batch (the rotator)."""

    def batches(self, submission_id: str) -> AsyncIterator[Sequence[PromptItem]]: ...


class Images(Protocol):
    async def get(self, image_id: str, tenant_id: str) -> Image:
        """The image as served to tenant_id (its own watermarked copy: rotator README, "Image
        watermarks"); ImageNotSendable when none has that id."""


class CallResult(Protocol):
    """What one HTTP attempt at an endpoint gave (medbench_runtime.openai_endpoint.CallResult)."""

    @property
    def status(self) -> int | None: ...
    @property
    def text(self) -> str: ...
    @property
    def finish_reason(self) -> str: ...
    @property
    def usage(self) -> dict[str, int] | None: ...
    @property
    def error(self) -> str: ...
    @property
    def retry_after(self) -> str | None: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def refused(self) -> bool: ...


class ModelsResult(Protocol):
    @property
    def status(self) -> int | None: ...
    @property
    def models(self) -> list[str] | None: ...
    @property
    def error(self) -> str: ...


class Endpoint(Protocol):
    """A partner's OpenAI-compatible endpoint; a failed call is reported, never raised."""

    async def chat(self, base_url: str, api_key: str, body: dict[str, Any]) -> CallResult: ...

    async def models(self, base_url: str, api_key: str) -> ModelsResult: ...


class JobStore(Protocol):
    """Dispatch jobs and their recorded item outcomes."""

    async def add(self, job: JobSpec, now: datetime) -> None:
        """Records a RUNNING job (idempotent: a job recorded before is left as it is)."""

    async def job(self, submission_id: str) -> JobStatus | None: ...

    async def state(self, submission_id: str) -> str | None: ...

    async def running(self) -> list[JobSpec]: ...

    async def recorded(self, submission_id: str) -> list[Recorded]: ...

    async def counts(self, submission_id: str) -> tuple[int, int]:
        """(answered, infra_failed) as recorded."""

    async def record(self, outcome: ItemOutcome) -> bool:
        """Stores one item outcome (concurrent ones share writes); False when the item was
        recorded before."""

    async def claim(self, tx: Any, submission_id: str, record_ids: Sequence[str]) -> str:
        """A fresh batch id of the submission, the records marked as sent in it."""

    async def next_sequence(self, tx: Any, submission_id: str) -> int:
        """The next progress-event sequence of the submission (1, 2, ...)."""

    async def set_state(
        self, tx: Any, submission_id: str, state: str, reason: str = "", now: datetime | None = None
    ) -> None: ...

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
        """A run ended: its state, reason, outcome counts, and the calls it made added."""

    async def resume(self, submission_id: str) -> int:
        """A STALLED job RUNNING again without its infrastructure failures; how many items go
        again (0 when it was not STALLED)."""

    async def stalled_before(self, cutoff: datetime) -> list[JobStatus]: ...

    async def fail_stalled(self, tx: Any, job: JobStatus, reason: str) -> bool:
        """FAILED with reason, unless the job changed since it was read."""

    async def states(self, submission_ids: Sequence[str]) -> dict[str, str]: ...

    async def api_key(self, submission_id: str, tenant_id: str) -> str:
        """The endpoint key in clear; KeyNotHeld / SecretsError when it cannot be had."""

    async def forget_key(self, submission_id: str) -> None: ...


class SealedKeys(Protocol):
    """The sealed endpoint keys (medbench_storage.endpoint_keys.EndpointKeys)."""

    async def held(self) -> Sequence[Mapping[str, Any]]: ...

    async def delete(self, submission_id: str) -> bool: ...


Outage = Callable[[BaseException], bool]
"""Whether an error is an outage that passes (a restarting peer or database) rather than a
fault of the job or a bug."""


LoadFailure = Callable[[BaseException], str]
"""The reason a job that cannot be loaded fails with (its endpoint key gone or unreadable, or an
internal error)."""
