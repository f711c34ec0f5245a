"""What the gateway's use cases need from the world (implemented in adapters/, faked in
tests/services/gateway/fakes.py). Wire messages that only pass through (a report, a page of
item results or of prompts, a leaderboard) are opaque here (Any)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from gateway.core.images import SubmissionImages
from gateway.core.listing import ListQuery
from gateway.core.probing import Finding, StoredDigest
from gateway.core.quotas import BoardPool, PoolRun, Quotas, UsageNow
from gateway.core.submission import Record
from gateway.core.uploads import Manifest

# The transactional ports every service shares (re-exported: use cases name them from here).
from medbench_runtime.transactional import Event as Event
from medbench_runtime.transactional import Outbox as Outbox
from medbench_runtime.transactional import Transactions as Transactions

T = TypeVar("T")


@dataclass(frozen=True)
class Expect:
    """A condition on the stored record for an update to apply (None: any)."""

    state: str | None = None
    state_not_in: tuple[str, ...] | None = None
    answered: int | None = None


class SubmissionStore(Protocol):
    """Submissions and accepted upload batches, every call scoped to one tenant; the sealed
    endpoint keys of API-mode submissions."""

    async def find(self, tenant_id: str, submission_id: str, tx: Any = None) -> Record | None: ...

    async def get(self, tenant_id: str, submission_id: str, tx: Any = None) -> Record:
        """The record, or NOT_FOUND (also when it belongs to another tenant)."""

    async def view(self, tenant_id: str, submission_id: str) -> Record:
        """The record without what no view shows (the answered-items bitmap); NOT_FOUND."""

    async def insert(self, tenant_id: str, record: Record, tx: Any) -> None:
        """DuplicateSubmission when one with the same id exists."""

    async def page(self, query: ListQuery, limit: int) -> list[Record]:
        """At most limit of query.tenant_id's records that query selects (see
        core.listing.selects), newest first (created_at, then _id, descending), without what no
        view shows (the bitmap)."""

    async def update(
        self,
        tenant_id: str,
        submission_id: str,
        fields: Record,
        tx: Any = None,
        expect: Expect | None = None,
    ) -> bool:
        """Sets fields (and updated_at); False when expect did not hold."""

    async def apply_dispatch(
        self, tenant_id: str, submission_id: str, fields: Record, state: str
    ) -> bool:
        """Sets fields carrying dispatch_sequence unless a record with that sequence or a later
        one is stored, or the record is no longer in state (the state fields were computed
        from: a completion applied meanwhile is never overwritten); False then."""

    async def store_key(self, tenant_id: str, submission_id: str, api_key: str, tx: Any) -> None:
        """The endpoint's API key, sealed, apart from the record."""

    async def forget_key(self, submission_id: str) -> None:
        """Deletes the endpoint key of an ended submission (idempotent)."""

    async def find_upload(
        self, tenant_id: str, submission_id: str, batch_id: str
    ) -> Record | None: ...

    async def record_upload(self, tenant_id: str, upload: Record, tx: Any) -> None: ...


class DuplicateSubmission(Exception):
    """A submission with this id was inserted meanwhile (a concurrent create)."""


class QuotaLedger(Protocol):
    """Each tenant's quotas, charged inside the create's transaction, given back at the end."""

    async def quotas(self, tenant_id: str) -> Quotas: ...

    async def check_active(self, tenant_id: str) -> None:
        """RESOURCE_EXHAUSTED early when no concurrent slot is free."""

    async def check_run(self, tenant_id: str, run: PoolRun, now: datetime) -> None:
        """RESOURCE_EXHAUSTED early when a cap on the run's pool is spent."""

    async def charge(
        self,
        tenant_id: str,
        submission_id: str,
        items: int,
        tx: Any,
        now: datetime,
        run: PoolRun | None = None,
    ) -> None: ...

    async def release(
        self,
        tenant_id: str,
        submission_id: str,
        created_at: datetime,
        refund_items: int = 0,
        refund_submission: bool = False,
        run: PoolRun | None = None,
        refund_run: bool = False,
    ) -> None: ...

    async def usage(
        self, tenant_id: str, now: datetime | None = None, pools: Sequence[BoardPool] = ()
    ) -> UsageNow: ...


@dataclass(frozen=True)
class Assignment:
    pool_id: str
    item_count: int
    canary_items: int


class Rotator(Protocol):
    """The rotator's TaskPoolService as the gateway uses it."""

    async def require_pool(self, track: int, api: bool) -> str:
        """The id of the track's board's current pool; FAILED_PRECONDITION when it has none."""

    async def current_pool(self, track: int, api: bool) -> str:
        """The id of the track's board's current pool, "" when it has none."""

    async def assign(
        self, submission_id: str, tenant_id: str, track: int, api: bool = False
    ) -> Assignment: ...

    async def manifest(self, submission_id: str, pool_id: str) -> Manifest: ...

    async def cycle(self, pool_id: str) -> str: ...

    async def disclosed(self, pool_id: str) -> datetime | None:
        """When maintainers disclosed the pool, None while it is live (one-way; a live answer
        may be a few seconds old); NOT_FOUND for an unknown pool."""

    def download(self, submission_id: str) -> AsyncIterator[Any]:
        """The submission's prompts as the partner downloads them (GetPrompts batches)."""


@dataclass(frozen=True)
class ImageRange:
    """A run of a stored image's bytes, with what the image is."""

    data: bytes
    media_type: str
    size: int  # the whole image's
    sha256: str = ""
    """Of the whole image served (a tenant's watermarked copy); "" when not told."""


class PoolImages(Protocol):
    """The task bank's images as the rotator serves them (DownloadImages)."""

    async def images(self, submission_id: str) -> SubmissionImages:
        """The images of the submission's served items (they never change once assigned)."""

    async def image_range(
        self, image_id: str, offset: int, max_bytes: int, tenant_id: str = ""
    ) -> ImageRange:
        """Bytes of a stored image from offset, at most max_bytes (0: to the end); NotFound
        when the bank has no such image, InvalidArgument for an offset past its size. With
        tenant_id: of that tenant's watermarked copy (offset and size are the copy's)."""

    async def image_info(self, image_id: str, tenant_id: str = "") -> ImageRange:
        """A stored image's media type and size, no bytes; NotFound. With tenant_id: the
        tenant's watermarked copy's size and sha256 (its content id for that tenant)."""


@dataclass(frozen=True)
class Publication:
    """A completed submission opted in to (or out of) its leaderboard."""

    submission_id: str
    tenant_id: str
    published: bool
    track: int
    api: bool
    cycle: str
    model: Record


class Reports(Protocol):
    """The aggregator's ReportService and LeaderboardService."""

    async def scored(self, submission_id: str) -> int:
        """Items scored so far (UNAVAILABLE when the aggregator cannot say)."""

    async def publish(self, publication: Publication) -> bool: ...

    def item_results(self, submission_id: str, tenant_id: str) -> AsyncIterator[Any]: ...

    async def report(self, submission_id: str, tenant_id: str, exact: bool = False) -> Any:
        """The submission's report: its live view (every score at its dataset's live
        resolution), or the exact report when ``exact`` (only for a disclosed pool)."""

    async def leaderboard(self, request: Any) -> Any: ...


@dataclass(frozen=True)
class PreflightResult:
    ok: bool
    reason: str = ""


class Dispatch(Protocol):
    """The dispatcher's commands (API mode); its progress arrives as events."""

    async def preflight(self, base_url: str, model: str, api_key: str) -> PreflightResult: ...

    async def resume(self, submission_id: str) -> int:
        """Items queued again; FAILED_PRECONDITION when the run is over."""


class Tenants(Protocol):
    """Tenant records (the identity collections)."""

    async def insert(self, tenant: Record) -> None:
        """ALREADY_EXISTS when the tenant exists."""

    async def find(self, tenant_id: str) -> Record | None: ...

    async def update(self, tenant_id: str, fields: Record) -> None: ...

    async def page(self, after: str, limit: int) -> list[Record]: ...


class ApiKeys(Protocol):
    """API key records (the secret is never stored, only its hash)."""

    async def insert(self, key: Record) -> None: ...

    async def find(self, key_id: str) -> Record | None: ...

    async def of_tenant(self, tenant_id: str) -> list[Record]:
        """Oldest first."""

    async def revoke(self, key_id: str, at: datetime) -> None:
        """Revoked at `at` unless revoked before."""

    def forget(self, key_id: str) -> None:
        """Drops the key from every verification cache of this process."""


class AuditLog(Protocol):
    async def read(
        self, tenant_id: str, since: datetime | None, after: Any, limit: int
    ) -> list[Record]: ...


class ProbingStore(Protocol):
    """Answer digests of submissions whose answers are final, and probing findings
    (adapters/mongo_probing.py)."""

    def answers(self, tenant_id: str, submission_id: str) -> AsyncIterator[tuple[str, str]]:
        """Every (item_id, answer) the submission's accepted upload batches hold."""

    async def save_digest(self, digest: StoredDigest) -> None:
        """Stores (or replaces) a submission's digest."""

    async def digests(self, tenant_id: str, pool_id: str, limit: int) -> list[StoredDigest]:
        """The tenant's stored digests on the pool, newest first, at most limit."""

    async def add_finding(self, finding: Finding) -> bool:
        """Stores a finding; False when one with its id is stored (nothing changes)."""

    async def findings(
        self, tenant_id: str, pool_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Finding]:
        """Findings (of one tenant and pool when given), newest first (found_at, then id,
        descending), after the (found_at, id) of the last one of the previous page."""


class Quarantine(Protocol):
    """Events held because they could never be processed as they were (medbench_storage's
    quarantine collection): entries are records without their payloads; a call on an entry
    that is not held raises LookupError."""

    # The states an entry can be listed by.
    states: tuple[str, ...]

    async def list(
        self, status: str = "", service: str = "", limit: int = 100, page_token: str = ""
    ) -> list[Record]:
        """Newest first, after page_token (ValueError when it is not one page_token made)."""

    def page_token(self, entry: Record) -> str: ...

    async def held_count(self) -> int: ...

    async def get(self, entry: str) -> Record: ...

    async def retry(self, entry: str, by: str, publisher: Any) -> Record:
        """Sends a held entry on again (ValueError when it kept no payload to send)."""

    async def drop(self, entry: str, by: str) -> Record: ...
