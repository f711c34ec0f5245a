"""In-memory fakes of the rotator's ports (rotator.core.ports), for use-case tests."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from medbench_runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from rotator.core.bank import BankEntry, FrozenPool, ImportCounts, Incoming
from rotator.core.download import option_count
from rotator.core.leaktrace import CanaryHit, LeakSignal, Variant
from rotator.core.pools import Assignment, PoolEntry, PoolKeyEntry, PoolMeta, PoolRecord
from rotator.core.ports import (
    AssignmentStore,
    CurrentPools,
    ImageStore,
    LeakSignals,
    PoolStore,
    RegistryStore,
    TaskStore,
)
from rotator.core.versions import StoredVersion, VersionInfo

PUBLISHED_AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class _Stored:
    item: Incoming
    version: int


class InMemoryTaskStore:
    """TaskStore: versions like the Mongo bank (same content: unchanged; other: new version)."""

    def __init__(self) -> None:
        self.tasks: dict[str, _Stored] = {}

    async def import_items(self, items: Sequence[Incoming]) -> ImportCounts:
        imported = unchanged = new_versions = 0
        for item in items:
            old = self.tasks.get(item.task.item_id)
            if old is None:
                self.tasks[item.task.item_id] = _Stored(item, 1)
                imported += 1
            elif old.item.hash == item.hash:
                unchanged += 1
            else:
                self.tasks[item.task.item_id] = _Stored(item, old.version + 1)
                new_versions += 1
        return ImportCounts(imported, unchanged, new_versions)

    async def dataset_counts(self, track: str | None) -> dict[str, tuple[int, int]]:
        counts: dict[str, tuple[int, int]] = {}
        for s in self.tasks.values():
            if track is None or s.item.task.track == track:
                n, keyed = counts.get(s.item.task.dataset, (0, 0))
                counts[s.item.task.dataset] = (n + 1, keyed + (s.item.key is not None))
        return counts

    async def stream_candidates(
        self, track: str, datasets: Sequence[str]
    ) -> AsyncIterator[tuple[str, str, str]]:
        for s in list(self.tasks.values()):
            t = s.item.task
            keyed = t.track == track and s.item.key is not None
            if keyed and (not datasets or t.dataset in datasets):
                yield t.dataset, t.group_id, s.item.primary_specialty

    async def group_entries(self, group_ids: Sequence[str]) -> list[BankEntry]:
        wanted = set(group_ids)
        return [e for e in self._entries() if e[0].group_id in wanted]

    async def bank_entries(self, track: str, datasets: Sequence[str]) -> list[BankEntry]:
        return [
            e
            for e in self._entries()
            if e[0].track == track and (not datasets or e[0].dataset in datasets)
        ]

    async def questions(self, item_ids: Sequence[str]) -> dict[str, str]:
        return {i: self.tasks[i].item.task.question for i in item_ids if i in self.tasks}

    def _entries(self) -> list[BankEntry]:
        return [
            (s.item.task, s.version, s.item.key, s.item.image_ids)
            for s in self.tasks.values()
            if s.item.key is not None
        ]


class InMemoryPoolStore:
    """PoolStore; `current` is the (track, board) -> pool_id pointer InMemoryCurrentPools moves."""

    def __init__(self) -> None:
        self.pools: dict[str, PoolRecord] = {}
        self.entries: dict[str, list[PoolEntry]] = {}
        self.groups: dict[str, dict[str, list[str]]] = {}
        self.exposed: dict[str, set[str]] = {}
        self.current: dict[tuple[str, str], str] = {}
        self.stored: list[str] = []
        self.metas: dict[str, PoolMeta] = {}
        self.frozen: dict[str, FrozenPool] = {}
        """Pools as stored, keys and each item's dataset part (what the sealed keys carry)."""
        """Pool ids in the order store_pool was called."""
        self.retired: dict[str, str] = {}
        """Retired question group -> the disclosed pool that retired it."""

    async def find_pool(self, pool_id: str) -> PoolRecord | None:
        return self.pools.get(pool_id)

    async def current_pool(self, track: str, board: str) -> PoolRecord:
        pool_id = self.current.get((track, board))
        if pool_id is None:
            raise FailedPrecondition(f"no pool is published for track {track}, board {board}")
        return self.pools[pool_id]

    async def previous_pool(self, track: str, board: str) -> PoolRecord | None:
        pool_id = self.current.get((track, board))
        return None if pool_id is None else self.pools[pool_id]

    async def is_current(self, pool: PoolRecord) -> bool:
        return self.current.get((pool.track, pool.board)) == pool.pool_id

    async def current_pools(self) -> list[PoolRecord]:
        return [self.pools[pool_id] for _, pool_id in sorted(self.current.items())]

    async def retired_groups(self) -> set[str]:
        return set(self.retired)

    async def pool_groups(self, pool_id: str) -> dict[str, list[str]]:
        return {d: list(g) for d, g in self.groups.get(pool_id, {}).items()}

    async def exposures(self) -> dict[str, int]:
        return {g: len(pools) for g, pools in self.exposed.items()}

    async def store_pool(
        self, pool: FrozenPool, meta: PoolMeta, image_ids: Mapping[str, tuple[str, ...]]
    ) -> None:
        if pool.pool_id in self.pools:
            raise AlreadyExists(f"pool {pool.pool_id} was published concurrently")
        self.stored.append(pool.pool_id)
        self.metas[pool.pool_id] = meta
        self.frozen[pool.pool_id] = pool
        groups: dict[str, list[str]] = {}
        for p in pool.items:
            listed = groups.setdefault(p.task.dataset, [])
            if p.task.group_id not in listed:
                listed.append(p.task.group_id)
        self.groups[pool.pool_id] = groups
        self.entries[pool.pool_id] = [
            PoolEntry(
                item_id=p.task.item_id,
                ordinal=p.ordinal,
                dataset=p.task.dataset,
                question=p.task.question,
                answer_format=p.task.answer_format,
                image_paths=p.task.image_paths,
                image_ids=image_ids.get(p.task.item_id, ()),
                messages=p.task.messages,
                n_options=option_count(p.task),
            )
            for p in pool.items
        ]
        r = meta.rotation
        self.pools[pool.pool_id] = PoolRecord(
            pool_id=pool.pool_id,
            track=pool.track,
            item_count=len(pool.items),
            datasets=pool.dataset_counts,
            published_at=PUBLISHED_AT,
            digest=pool.digest,
            board=meta.board,
            registry_version=meta.registry_version,
            method=meta.method,
            cycle=r.cycle if r else "",
            seed=r.seed if r else 0,
            anchor_groups=r.anchor_groups if r else 0,
            group_count=sum(len(g) for g in groups.values()),
            params=r.params if r else None,
            shortfalls=r.shortfalls if r else (),
        )

    async def count_exposures(self, pool_id: str, group_ids: Iterable[str]) -> None:
        for group_id in group_ids:
            self.exposed.setdefault(group_id, set()).add(pool_id)

    async def pool_entries(self, pool_id: str) -> AsyncIterator[PoolEntry]:
        for entry in self.entries.get(pool_id, []):
            yield entry

    async def pool_keys(self, pool_id: str) -> AsyncIterator[PoolKeyEntry]:
        """As MongoPoolStore reads the sealed keys (the judge's prompt for judged items)."""
        for p in self.frozen[pool_id].items if pool_id in self.frozen else ():
            turns = "\n".join(f"{role}: {content}" for role, content in p.task.messages)
            prompt = "\n".join(t for t in (p.task.question, turns) if t)
            yield PoolKeyEntry(
                item_id=p.task.item_id,
                ordinal=p.ordinal,
                dataset=p.task.dataset,
                group_id=p.task.group_id or p.task.item_id,
                metric=p.dataset.metric,
                reference=p.key.reference,
                key_points=p.key.key_points,
                prompt=prompt if "judge" in p.dataset.metric else "",
            )


class InMemoryCurrentPools:
    """CurrentPools: moves the pool store's pointer and records each announcement; discloses
    pools and retires their groups in the pool store."""

    def __init__(self, pools: InMemoryPoolStore) -> None:
        self._pools = pools
        self.announced: list[PoolRecord] = []

    async def make_current(self, pool: PoolRecord, groups: Collection[str]) -> None:
        stored = self._pools.pools.get(pool.pool_id)
        if stored is not None and stored.disclosed_at is not None:
            raise FailedPrecondition(f"pool {pool.pool_id} is disclosed")
        retired = sorted(set(groups) & set(self._pools.retired))
        if retired:
            raise FailedPrecondition(f"pool {pool.pool_id} holds retired group {retired[0]}")
        self._pools.current[(pool.track, pool.board)] = pool.pool_id
        self.announced.append(pool)

    async def disclose(
        self,
        pool: PoolRecord,
        groups: Collection[str],
        current: Mapping[tuple[str, str], str],
        at: datetime,
    ) -> datetime:
        stored = self._pools.pools[pool.pool_id]
        if stored.disclosed_at is not None:
            return stored.disclosed_at
        if dict(current) != self._pools.current:
            raise Aborted(
                f"a board's current pool changed while pool {pool.pool_id} was being disclosed"
            )
        for group in groups:
            self._pools.retired.setdefault(group, pool.pool_id)
        self._pools.pools[pool.pool_id] = replace(stored, disclosed_at=at)
        return at


class InMemoryAssignmentStore:
    """AssignmentStore over a pool store (for the board's current pool)."""

    def __init__(self, pools: PoolStore) -> None:
        self._pools = pools
        self.assignments: dict[str, Assignment] = {}
        self.stored_variants: dict[str, Variant] = {}
        self.canaries: dict[str, CanaryHit] = {}

    async def assign(
        self, submission_id: str, tenant_id: str, track: str, board: str
    ) -> Assignment:
        found = self.assignments.get(submission_id)
        if found is None:
            pool = await self._pools.current_pool(track, board)
            found = Assignment(submission_id, tenant_id, track, board, pool.pool_id)
            self.assignments[submission_id] = found
        return found

    async def assignment(self, submission_id: str) -> Assignment:
        found = self.assignments.get(submission_id)
        if found is None:
            raise NotFound(f"submission {submission_id} has no assignment")
        return found

    async def variant(self, submission_id: str) -> Variant | None:
        return self.stored_variants.get(submission_id)

    async def store_variant(self, variant: Variant) -> None:
        for c in variant.canaries:
            self.canaries[f"{c.fingerprint}:{variant.submission_id}"] = CanaryHit(
                variant.tenant_id,
                variant.submission_id,
                variant.pool_id,
                c.item_id,
                c.chance,
                c.fingerprint,
            )
        self.stored_variants[variant.submission_id] = variant

    async def canary_hits(self, fingerprints: Sequence[str]) -> list[CanaryHit]:
        wanted = set(fingerprints)
        return [hit for hit in self.canaries.values() if hit.fingerprint in wanted]

    async def variants(self) -> AsyncIterator[Variant]:
        for variant in list(self.stored_variants.values()):
            yield variant


class InMemoryLeakSignals:
    """LeakSignals: what the metric scorer recorded, newest first."""

    def __init__(self) -> None:
        self.recorded: list[LeakSignal] = []

    async def signals(self, tenant_id: str, pool_id: str, limit: int) -> list[LeakSignal]:
        found = [
            s
            for s in self.recorded
            if (not tenant_id or s.tenant_id == tenant_id) and (not pool_id or s.pool_id == pool_id)
        ]
        return sorted(found, key=lambda s: s.recorded_at, reverse=True)[:limit]


class InMemoryImageStore:
    """ImageStore: ids are content hashes, as in GridFS."""

    def __init__(self) -> None:
        self.images: dict[str, tuple[bytes, str]] = {}

    async def put(self, path: str, content: bytes, media_type: str = "") -> tuple[str, bool]:
        image_id = hashlib.sha256(content).hexdigest()
        if image_id in self.images:
            return image_id, False
        self.images[image_id] = (content, media_type)
        return image_id, True

    async def get(
        self, image_id: str, offset: int = 0, max_bytes: int = 0, content: bool = True
    ) -> tuple[bytes, str, int]:
        if image_id not in self.images:
            raise NotFound(f"image {image_id} not found")
        data, media_type = self.images[image_id]
        if not 0 <= offset <= len(data):
            raise InvalidArgument(f"offset {offset} is outside image {image_id}")
        end = offset + max_bytes if max_bytes > 0 else len(data)
        return data[offset:end] if content else b"", media_type, len(data)


class InMemoryRegistryStore:
    """RegistryStore: versions by number, each written once (as the unique _id does in Mongo).
    `reads` counts latest() calls, to show how often a replica asks."""

    def __init__(self) -> None:
        self.versions: dict[int, StoredVersion] = {}
        self.reads = 0

    async def add(self, version: StoredVersion) -> bool:
        if version.info.number in self.versions:
            return False
        self.versions[version.info.number] = version
        return True

    async def latest(self, known: int = 0) -> int:
        self.reads += 1
        assert known == 0 or known in self.versions, f"version {known} was never stored"
        return max(self.versions, default=0)

    async def get(self, number: int) -> StoredVersion | None:
        return self.versions.get(number)

    async def infos(self, before: int, limit: int) -> list[VersionInfo]:
        numbers = sorted((n for n in self.versions if not before or n < before), reverse=True)
        return [self.versions[n].info for n in numbers[:limit]]


def _typed() -> None:
    """The fakes satisfy the ports (checked by a type checker, never called)."""
    pools = InMemoryPoolStore()
    _tasks: TaskStore = InMemoryTaskStore()
    _pools: PoolStore = pools
    _current: CurrentPools = InMemoryCurrentPools(pools)
    _assignments: AssignmentStore = InMemoryAssignmentStore(pools)
    _images: ImageStore = InMemoryImageStore()
    _signals: LeakSignals = InMemoryLeakSignals()
    _registry: RegistryStore = InMemoryRegistryStore()
