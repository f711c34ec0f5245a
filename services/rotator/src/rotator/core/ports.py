"""What the rotator's use cases need from the world (implemented in adapters/, faked in tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from rotator.core.bank import BankEntry, FrozenPool, ImportCounts, Incoming
from rotator.core.catalog import DatasetCatalog
from rotator.core.leaktrace import CanaryHit, LeakSignal, Variant
from rotator.core.pools import Assignment, PoolEntry, PoolKeyEntry, PoolMeta, PoolRecord
from rotator.core.versions import StoredVersion, VersionInfo


class TaskStore(Protocol):
    """The task bank: tasks in the main database, their keys sealed."""

    async def import_items(self, items: Sequence[Incoming]) -> ImportCounts:
        """Stores validated items: new ones, new versions of changed ones; unchanged ones
        are counted, not written."""
        ...

    async def dataset_counts(self, track: str | None) -> dict[str, tuple[int, int]]:
        """dataset -> (items, keyed items) in the bank (of a track, or of all)."""
        ...

    def stream_candidates(
        self, track: str, datasets: Sequence[str]
    ) -> AsyncIterator[tuple[str, str, str]]:
        """(dataset, group_id, primary specialty) of every keyed task of the track (of the
        datasets, all when empty); items of a group may come several times."""
        ...

    async def group_entries(self, group_ids: Sequence[str]) -> list[BankEntry]:
        """Every keyed task of the groups, with its key and image ids."""
        ...

    async def bank_entries(self, track: str, datasets: Sequence[str]) -> list[BankEntry]:
        """Every keyed task of a track (of the datasets, all when empty)."""
        ...

    async def questions(self, item_ids: Sequence[str]) -> dict[str, str]:
        """item_id -> the bank's question, for the ids the bank holds."""
        ...


class PoolStore(Protocol):
    """Frozen pools, their items, and how often each question group was served."""

    async def find_pool(self, pool_id: str) -> PoolRecord | None: ...

    async def current_pool(self, track: str, board: str) -> PoolRecord:
        """The board's current pool; FailedPrecondition when none is published."""
        ...

    async def previous_pool(self, track: str, board: str) -> PoolRecord | None:
        """The board's current pool before a rotation replaces it (None for the first)."""
        ...

    async def is_current(self, pool: PoolRecord) -> bool: ...

    async def current_pools(self) -> list[PoolRecord]:
        """Every board's current pool (every track's)."""
        ...

    async def retired_groups(self) -> set[str]:
        """Question groups retired by disclosures: they never serve in a pool again."""
        ...

    async def pool_groups(self, pool_id: str) -> dict[str, list[str]]:
        """dataset -> group ids of a stored pool, in pool order."""
        ...

    async def exposures(self) -> dict[str, int]:
        """group_id -> rotated pools it was served in (groups never served are absent)."""
        ...

    async def store_pool(
        self, pool: FrozenPool, meta: PoolMeta, image_ids: Mapping[str, tuple[str, ...]]
    ) -> None:
        """Writes the pool's items, then its record (the commit point); AlreadyExists when
        another writer stored the same pool id first."""
        ...

    async def count_exposures(self, pool_id: str, group_ids: Iterable[str]) -> None:
        """Records that the groups are served in the pool (idempotent)."""
        ...

    def pool_entries(self, pool_id: str) -> AsyncIterator[PoolEntry]:
        """The pool's items in ordinal order."""
        ...

    def pool_keys(self, pool_id: str) -> AsyncIterator[PoolKeyEntry]:
        """The pool's sealed keys in ordinal order (canaries are made from them)."""
        ...


class CurrentPools(Protocol):
    """Which pool each (track, board) serves."""

    async def make_current(self, pool: PoolRecord, groups: Collection[str]) -> None:
        """Points the pool's (track, board) at it and announces it (PoolRotated) in one
        transaction: the pointer and the announcement never disagree. Idempotent.
        groups: the pool's question groups. FailedPrecondition (nothing changed) when the pool
        is disclosed or one of its groups is retired, checked in that transaction (a
        disclosure committing meanwhile makes one of the two fail, never both succeed)."""
        ...

    async def disclose(
        self,
        pool: PoolRecord,
        groups: Collection[str],
        current: Mapping[tuple[str, str], str],
        at: datetime,
    ) -> datetime:
        """Marks the pool disclosed at `at` and retires its question groups, in one
        transaction that holds only while every board's current pool is still the one in
        `current` ((track, board) -> pool id, as the caller checked them; Aborted otherwise).
        A pool disclosed before keeps its time; returns the pool's disclosure time."""
        ...


class AssignmentStore(Protocol):
    """Assignments of submissions to pools, and the sealed per-download variants."""

    async def assign(
        self, submission_id: str, tenant_id: str, track: str, board: str
    ) -> Assignment:
        """The submission's assignment to the board's current pool, created on the first
        call (later calls return the first)."""
        ...

    async def assignment(self, submission_id: str) -> Assignment:
        """NotFound when the submission has none."""
        ...

    async def variant(self, submission_id: str) -> Variant | None: ...

    async def store_variant(self, variant: Variant) -> None:
        """Stores the variant and indexes its canaries by fingerprint (idempotent)."""
        ...

    async def canary_hits(self, fingerprints: Sequence[str]) -> list[CanaryHit]:
        """One hit per (fingerprint, download) of a stored canary: the same question may be a
        canary of several downloads (one tenant's downloads of a pool show the same)."""
        ...

    def variants(self) -> AsyncIterator[Variant]:
        """Every stored variant (one per submission)."""
        ...


class LeakSignals(Protocol):
    """Canaries answered with their original's right answer, as the metric scorer records
    them (sealed `leak_signals`)."""

    async def signals(self, tenant_id: str, pool_id: str, limit: int) -> list[LeakSignal]:
        """At most limit signals, newest first (of the tenant, of the pool, when given)."""
        ...


class ImageStore(Protocol):
    """Where task images live; ids are content hashes, so storing twice stores once."""

    async def put(self, path: str, content: bytes, media_type: str = "") -> tuple[str, bool]:
        """Stores content; returns (image_id, newly stored)."""
        ...

    async def get(
        self, image_id: str, offset: int = 0, max_bytes: int = 0, content: bool = True
    ) -> tuple[bytes, str, int]:
        """(content, media_type, size): the bytes from offset, at most max_bytes of them (0: to
        the end; none without content), and the whole image's size; NotFound when absent,
        InvalidArgument for an offset past its size."""
        ...


class RegistryStore(Protocol):
    """The registry's versions: written once each, never changed."""

    async def add(self, version: StoredVersion) -> bool:
        """Stores a version under its number; False (nothing written) when a version of that
        number exists. Two writers adding the same number: exactly one gets True."""
        ...

    async def latest(self, known: int = 0) -> int:
        """The highest version number (0 when the store holds none). known: a number known to
        exist, so that only later ones are looked for (versions are numbered without gaps)."""
        ...

    async def get(self, number: int) -> StoredVersion | None: ...

    async def infos(self, before: int, limit: int) -> list[VersionInfo]:
        """At most limit versions numbered below before (all when 0), newest first, without
        their documents."""
        ...


class Catalogs(Protocol):
    """The registry versions as the bank and the rotation resolve items against them
    (usecases/registry.py: RegistryVersions)."""

    async def current(self, fresh: bool = False) -> DatasetCatalog:
        """The current version (as last read, at most a short while ago; fresh: read now)."""
        ...

    async def at(self, number: int) -> DatasetCatalog:
        """A version by number; NotFound."""
        ...

    async def of_pool(self, pool: PoolRecord) -> DatasetCatalog:
        """The version a pool was built from; FailedPrecondition for a pool of an unstored
        registry."""
        ...
