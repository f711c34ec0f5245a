"""In-memory fakes of the gateway's ports (gateway.core.ports), for use-case tests without a
stack. Store writes apply at once; the outbox keeps a transaction's events only when its work
returns (what a rolled-back transaction would have published is dropped)."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from gateway.core.images import ImagesBuilder, SubmissionImages
from gateway.core.listing import ListQuery, newest_first, selects
from gateway.core.ports import (
    Assignment,
    DuplicateSubmission,
    Expect,
    ImageRange,
    PoolImages,
    PreflightResult,
    ProbingStore,
    Publication,
    QuotaLedger,
    Rotator,
)
from gateway.core.probing import Finding, StoredDigest
from gateway.core.quotas import (
    BoardPool,
    PoolRun,
    PoolUsage,
    Quotas,
    UsageNow,
    cap_refusal,
    caps_for,
    spent,
)
from gateway.core.submission import Record
from gateway.core.uploads import Manifest
from medbench_runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

T = TypeVar("T")


def _holds(record: Record, expect: Expect | None) -> bool:
    if expect is None:
        return True
    if expect.state is not None and record["state"] != expect.state:
        return False
    if expect.state_not_in is not None and record["state"] in expect.state_not_in:
        return False
    return expect.answered is None or record["answered"] == expect.answered


class InMemorySubmissionStore:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], Record] = {}
        self.uploads: dict[tuple[str, str], Record] = {}
        self.keys: dict[str, str] = {}
        self.reads = 0
        self.writes = 0

    async def find(self, tenant_id: str, submission_id: str, tx: Any = None) -> Record | None:
        self.reads += 1
        found = self.records.get((tenant_id, submission_id))
        return copy.deepcopy(found) if found is not None else None

    async def get(self, tenant_id: str, submission_id: str, tx: Any = None) -> Record:
        found = await self.find(tenant_id, submission_id, tx)
        if found is None:
            raise NotFound(f"submission {submission_id} not found")
        return found

    async def view(self, tenant_id: str, submission_id: str) -> Record:
        found = await self.get(tenant_id, submission_id)
        found.pop("answered_bits", None)
        return found

    async def insert(self, tenant_id: str, record: Record, tx: Any) -> None:
        if (tenant_id, record["_id"]) in self.records:
            raise DuplicateSubmission(record["_id"])
        self.writes += 1
        self.records[(tenant_id, record["_id"])] = {**copy.deepcopy(record), "tenant_id": tenant_id}

    async def page(self, query: ListQuery, limit: int) -> list[Record]:
        self.reads += 1
        found = [r for (t, _), r in self.records.items() if t == query.tenant_id]
        found = sorted((r for r in found if selects(query, r)), key=newest_first, reverse=True)
        return [
            {k: v for k, v in copy.deepcopy(r).items() if k != "answered_bits"}
            for r in found[:limit]
        ]

    async def update(
        self,
        tenant_id: str,
        submission_id: str,
        fields: Record,
        tx: Any = None,
        expect: Expect | None = None,
    ) -> bool:
        record = self.records.get((tenant_id, submission_id))
        if record is None or not _holds(record, expect):
            return False
        self.writes += 1
        record.update(copy.deepcopy(fields), updated_at=datetime.now(UTC))
        return True

    async def apply_dispatch(
        self, tenant_id: str, submission_id: str, fields: Record, state: str
    ) -> bool:
        record = self.records.get((tenant_id, submission_id))
        if record is None or record.get("dispatch_sequence", 0) >= fields["dispatch_sequence"]:
            return False
        if record["state"] != state:
            return False
        self.writes += 1
        record.update(fields, updated_at=datetime.now(UTC))
        return True

    async def store_key(self, tenant_id: str, submission_id: str, api_key: str, tx: Any) -> None:
        self.keys[submission_id] = api_key

    async def forget_key(self, submission_id: str) -> None:
        self.keys.pop(submission_id, None)

    async def find_upload(self, tenant_id: str, submission_id: str, batch_id: str) -> Record | None:
        return self.uploads.get((tenant_id, f"{submission_id}:{batch_id}"))

    async def record_upload(self, tenant_id: str, upload: Record, tx: Any) -> None:
        self.uploads[(tenant_id, upload["_id"])] = upload


class InMemoryQuotaLedger:
    """Concurrent slots and the caps per pool, by the core's rules (the day and month limits
    are the Mongo ledger's, tested against it)."""

    def __init__(self, concurrent: int = 5, **caps: int) -> None:
        self.defaults = Quotas(50, concurrent, 1_000_000, **caps)
        self.active: dict[str, set[str]] = {}
        self.charged_items: dict[str, int] = {}
        self.refunded: dict[str, int] = {}
        self.counters: dict[str, int] = {}
        self.run_checks: list[PoolRun] = []

    async def quotas(self, tenant_id: str) -> Quotas:
        return self.defaults

    async def check_active(self, tenant_id: str) -> None:
        if len(self.active.get(tenant_id, set())) >= self.defaults.concurrent_submissions:
            raise ResourceExhausted("too many submissions in progress")

    async def check_run(self, tenant_id: str, run: PoolRun, now: datetime) -> None:
        self.run_checks.append(run)
        for cap in caps_for(run, self.defaults, now):
            if spent(cap, self.counters.get(f"{tenant_id}:{cap.counter}", 0)):
                raise cap_refusal(cap, tenant_id, run, now)

    async def charge(
        self,
        tenant_id: str,
        submission_id: str,
        items: int,
        tx: Any,
        now: datetime,
        run: PoolRun | None = None,
    ) -> None:
        caps = caps_for(run, self.defaults, now) if run is not None else ()
        for cap in caps:
            if spent(cap, self.counters.get(f"{tenant_id}:{cap.counter}", 0)):
                assert run is not None
                raise cap_refusal(cap, tenant_id, run, now)
        for cap in caps:
            key = f"{tenant_id}:{cap.counter}"
            self.counters[key] = self.counters.get(key, 0) + 1
        self.active.setdefault(tenant_id, set()).add(submission_id)
        self.charged_items[tenant_id] = self.charged_items.get(tenant_id, 0) + items

    async def release(
        self,
        tenant_id: str,
        submission_id: str,
        created_at: datetime,
        refund_items: int = 0,
        refund_submission: bool = False,
        run: PoolRun | None = None,
        refund_run: bool = False,
    ) -> None:
        ids = self.active.get(tenant_id, set())
        if submission_id not in ids:
            return
        ids.discard(submission_id)
        self.refunded[tenant_id] = self.refunded.get(tenant_id, 0) + refund_items
        if run is not None and (refund_submission or refund_run):
            for cap in caps_for(run, self.defaults, created_at):
                key = f"{tenant_id}:{cap.counter}"
                self.counters[key] = max(0, self.counters.get(key, 0) - 1)

    async def usage(
        self, tenant_id: str, now: datetime | None = None, pools: Sequence[BoardPool] = ()
    ) -> UsageNow:
        now = now or datetime.now(UTC)

        def used(pool: BoardPool, official: bool) -> list[int]:
            run = PoolRun(pool.pool_id, official)
            return [
                self.counters.get(f"{tenant_id}:{c.counter}", 0)
                for c in caps_for(run, self.defaults, now)
            ]

        return UsageNow(
            self.defaults, 0, len(self.active.get(tenant_id, set())),
            self.charged_items.get(tenant_id, 0),
            tuple(
                PoolUsage(p, used(p, True)[0], used(p, False)[1], used(p, False)[0])
                for p in pools
            ),
        )  # fmt: skip


def manifest_of(
    n: int, canaries: int = 0, pool_id: str = "pool-1", answer_format: str = ""
) -> Manifest:
    """Items item-0..item-<n-1>, then canaries canary-0.. (ordinals from n on), every one of
    answer_format when given."""
    ids = [f"item-{i}" for i in range(n)] + [f"canary-{i}" for i in range(canaries)]
    return Manifest(
        pool_id,
        {item: (o, "D") for o, item in enumerate(ids)},
        {o: (item, "D") for o, item in enumerate(ids)},
        {item: f"h-{item}" for item in ids},
        {item: answer_format for item in ids} if answer_format else {},
    )


# When the fake rotator's disclosed pools were disclosed.
DISCLOSED_AT = datetime(2026, 12, 20, 8, 30, tzinfo=UTC)


class FakeRotator:
    def __init__(self, items: int = 4, canaries: int = 0, has_pool: bool = True) -> None:
        self.items, self.canaries, self.has_pool = items, canaries, has_pool
        self.assigned: list[str] = []
        # The pool each board assigns (by api): a rotation is a new id here.
        self.pools = {True: "pool-1", False: "pool-1"}
        # Pools the maintainers disclosed (every other pool is live); calls of disclosed().
        self.disclosed_pools: set[str] = set()
        self.disclosed_at = DISCLOSED_AT
        self.disclosure_reads: list[str] = []
        # The answer format of every item ("": none, read as text).
        self.answer_format = ""

    async def require_pool(self, track: int, api: bool) -> str:
        if not self.has_pool:
            raise FailedPrecondition("no published pool")
        return self.pools[api]

    async def current_pool(self, track: int, api: bool) -> str:
        return self.pools[api] if self.has_pool else ""

    async def assign(
        self, submission_id: str, tenant_id: str, track: int, api: bool = False
    ) -> Assignment:
        self.assigned.append(submission_id)
        return Assignment(self.pools[api], self.items, 0 if api else self.canaries)

    async def manifest(self, submission_id: str, pool_id: str) -> Manifest:
        return manifest_of(self.items, self.canaries, pool_id, self.answer_format)

    async def cycle(self, pool_id: str) -> str:
        return "2026-12"

    async def disclosed(self, pool_id: str) -> datetime | None:
        self.disclosure_reads.append(pool_id)
        return self.disclosed_at if pool_id in self.disclosed_pools else None

    async def download(self, submission_id: str) -> AsyncIterator[Any]:
        yield {"submission_id": submission_id}


class FakePoolImages:
    """The bank's images (content id -> (bytes, media type)) and each submission's served
    items ([(item_id, [path, ...], [image_id, ...])]); records every range read (reads) and
    size read (infos). fail_after:
    reads that succeed before every later one raises Unavailable (None: never); fail_attempts:
    the numbers (1, 2, ...) of the read attempts that raise Unavailable."""

    def __init__(
        self,
        bank: dict[str, tuple[bytes, str]],
        served: dict[str, list[tuple[str, list[str], list[str]]]],
    ) -> None:
        self.bank, self.served = bank, served
        self.reads: list[tuple[str, int, int]] = []
        self.infos: list[str] = []
        self.index_loads = 0
        self.fail_after: int | None = None
        self.fail_attempts: set[int] = set()
        self.attempts = 0
        self.watermark = False

    async def images(self, submission_id: str) -> SubmissionImages:
        self.index_loads += 1
        builder = ImagesBuilder()
        for item_id, paths, ids in self.served.get(submission_id, []):
            builder.add(item_id, paths, ids)
        return builder.build()

    def served_copy(self, image_id: str, tenant_id: str) -> tuple[bytes, str]:
        """What the rotator serves the tenant: with watermark, a per-tenant copy (the bank's
        bytes and the tenant's name); else the bank's bytes."""
        content, media_type = self.bank[image_id]
        if self.watermark and tenant_id:
            content = content + b"|" + tenant_id.encode()
        return content, media_type

    async def image_range(
        self, image_id: str, offset: int, max_bytes: int, tenant_id: str = ""
    ) -> ImageRange:
        self.attempts += 1
        if self.fail_after is not None and len(self.reads) >= self.fail_after:
            raise Unavailable("rotator down")
        if self.attempts in self.fail_attempts:
            raise Unavailable("rotator blip")
        self.reads.append((image_id, offset, max_bytes))
        if image_id not in self.bank:
            raise NotFound(f"image {image_id} not found")
        content, media_type = self.served_copy(image_id, tenant_id)
        if not 0 <= offset <= len(content):
            raise InvalidArgument(f"offset {offset} is outside image {image_id}")
        end = offset + max_bytes if max_bytes else len(content)
        return ImageRange(
            content[offset:end], media_type, len(content), self._sha(image_id, tenant_id)
        )

    async def image_info(self, image_id: str, tenant_id: str = "") -> ImageRange:
        self.infos.append(image_id)
        if image_id not in self.bank:
            raise NotFound(f"image {image_id} not found")
        content, media_type = self.served_copy(image_id, tenant_id)
        return ImageRange(b"", media_type, len(content), self._sha(image_id, tenant_id))

    def _sha(self, image_id: str, tenant_id: str) -> str:
        """As the rotator: the copy's sha256 when watermarked, else the id asked (even when
        the bank's bytes are damaged)."""
        if self.watermark and tenant_id:
            return hashlib.sha256(self.served_copy(image_id, tenant_id)[0]).hexdigest()
        return image_id


def _typed() -> None:
    """The fakes satisfy the ports (checked by a type checker, never called)."""
    _images: PoolImages = FakePoolImages({}, {})
    _quotas: QuotaLedger = InMemoryQuotaLedger()
    _rotator: Rotator = FakeRotator()
    _probing: ProbingStore = InMemoryProbingStore(InMemorySubmissionStore())


class FakeReports:
    def __init__(self, scored: int = 0, available: bool = True) -> None:
        self.scored_items, self.available = scored, available
        self.progress_calls = 0
        self.published: list[Publication] = []

    async def scored(self, submission_id: str) -> int:
        self.progress_calls += 1
        if not self.available:
            raise Unavailable("aggregator down")
        return self.scored_items

    async def publish(self, publication: Publication) -> bool:
        self.published.append(publication)
        return publication.published

    async def item_results(self, submission_id: str, tenant_id: str) -> AsyncIterator[Any]:
        yield {"submission_id": submission_id}

    async def report(self, submission_id: str, tenant_id: str, exact: bool = False) -> Any:
        raise AssertionError("not used")

    async def leaderboard(self, request: Any) -> Any:
        return request


class FakeDispatch:
    """Scripted dispatcher commands; it is never asked for progress (that arrives as events)."""

    def __init__(self, ok: bool = True, reason: str = "", resumed: int = 0) -> None:
        self.ok, self.reason, self.resumed = ok, reason, resumed
        self.preflights: list[str] = []
        self.resumes: list[str] = []

    async def preflight(self, base_url: str, model: str, api_key: str) -> PreflightResult:
        self.preflights.append(base_url)
        return PreflightResult(self.ok, self.reason)

    async def resume(self, submission_id: str) -> int:
        self.resumes.append(submission_id)
        return self.resumed


class InMemoryQuarantine:
    """The Quarantine port over a dict: entries newest first by their position."""

    states = ("held", "retried", "dropped")

    def __init__(self, entries: list[Record]) -> None:
        self.entries = {e["_id"]: dict(e, status=e.get("status", "held")) for e in entries}
        self.sent: list[tuple[Record, Any]] = []

    async def list(
        self, status: str = "", service: str = "", limit: int = 100, page_token: str = ""
    ) -> list[Record]:
        ids = list(self.entries)
        if page_token:
            if page_token not in self.entries:
                raise ValueError(page_token)
            ids = ids[ids.index(page_token) + 1 :]
        found = [
            self.entries[i]
            for i in ids
            if (not status or self.entries[i]["status"] == status)
            and (not service or self.entries[i].get("service") == service)
        ]
        return found[:limit]

    def page_token(self, entry: Record) -> str:
        return str(entry["_id"])

    async def held_count(self) -> int:
        return sum(e["status"] == "held" for e in self.entries.values())

    async def get(self, entry: str) -> Record:
        if entry not in self.entries:
            raise LookupError(entry)
        return self.entries[entry]

    async def _take(self, entry: str, to: str, by: str) -> Record:
        found = self.entries.get(entry)
        if found is None or found["status"] != "held":
            raise LookupError(entry)
        before = dict(found)
        found.update(status=to, resolved_by=by)
        return before

    async def retry(self, entry: str, by: str, publisher: Any) -> Record:
        found = self.entries.get(entry)
        if found is not None and found["status"] == "held" and found.get("payload") is None:
            raise ValueError(f"entry {entry} kept no payload")
        before = await self._take(entry, "retried", by)
        self.sent.append((before, publisher))
        return before

    async def drop(self, entry: str, by: str) -> Record:
        return await self._take(entry, "dropped", by)


class InMemoryProbingStore:
    """Digests and findings in dicts; answers read from a submission store's upload batches."""

    def __init__(self, submissions: InMemorySubmissionStore) -> None:
        self.submissions = submissions
        self.stored: dict[str, StoredDigest] = {}
        self.found: dict[str, Finding] = {}

    async def answers(self, tenant_id: str, submission_id: str) -> AsyncIterator[tuple[str, str]]:
        for (t, _), batch in self.submissions.uploads.items():
            if t == tenant_id and batch["submission_id"] == submission_id:
                for a in batch["answers"]:
                    yield a["item_id"], a["answer"]

    async def save_digest(self, digest: StoredDigest) -> None:
        self.stored[digest.submission_id] = digest

    async def digests(self, tenant_id: str, pool_id: str, limit: int) -> list[StoredDigest]:
        mine = [d for d in self.stored.values() if (d.tenant_id, d.pool_id) == (tenant_id, pool_id)]
        return sorted(mine, key=lambda d: d.created_at, reverse=True)[:limit]

    async def add_finding(self, finding: Finding) -> bool:
        if finding.finding_id in self.found:
            return False
        self.found[finding.finding_id] = finding
        return True

    async def findings(
        self, tenant_id: str, pool_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Finding]:
        def key(f: Finding) -> tuple[datetime, str]:
            return f.found_at, f.finding_id

        found = sorted(
            (
                f
                for f in self.found.values()
                if (not tenant_id or f.tenant_id == tenant_id)
                and (not pool_id or f.pool_id == pool_id)
                and (after is None or key(f) < after)
            ),
            key=key,
            reverse=True,
        )
        return found[:limit]
