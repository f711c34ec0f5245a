"""The registry as immutable versions in the store: seeding version 1 from the bundled file,
reading the current version (re-read at most every cache_s) or any other, and maintainers'
changes (one dataset added or revised per version, against the version they read)."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from medbench_runtime.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from rotator.core.catalog import DatasetCatalog
from rotator.core.pools import PoolRecord
from rotator.core.ports import RegistryStore
from rotator.core.registry import RegistryError
from rotator.core.versions import (
    MAX_NOTE,
    StoredVersion,
    VersionInfo,
    is_retry,
    next_version,
    revise,
    seed_version,
    unchanged,
)

log = logging.getLogger(__name__)

MAX_VERSIONS_LISTED = 200
KEPT_VERSIONS = 16
"""Parsed versions kept in memory (versions never change, so a kept one is never stale)."""


@dataclass(frozen=True)
class Put:
    """What PutDataset did."""

    version: VersionInfo
    """The version made (the current one when unchanged)."""
    added: bool
    current: int
    """The current version's number."""
    unchanged: bool = False


@dataclass(frozen=True)
class Shown:
    """One version with its document, for GetRegistry."""

    info: VersionInfo
    data: Mapping[str, Any]
    current: bool


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RegistryVersions:
    """Catalogs over the store: every request reads the current version number at most
    cache_s late (0: on every call), and a replica's own change is current for it at once.
    Parsed versions are kept by number."""

    def __init__(
        self,
        store: RegistryStore,
        cache_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._store = store
        self._cache_s = cache_s
        self._clock = clock
        self._now = now
        self._latest = 0
        self._read_at: float | None = None
        self._kept: OrderedDict[int, tuple[StoredVersion, DatasetCatalog]] = OrderedDict()

    async def seed(self, raw: bytes, source: str) -> VersionInfo:
        """Stores the bundled registry file as version 1 when the store holds no version
        (replicas starting together store it once; a store that has versions keeps them and
        the file is only compared). Returns the current version.

        Raises:
            RegistryError: the file is not a valid registry (the service does not start).
        """
        seed = seed_version(raw, source, self._now())
        if await self._store.add(seed):
            log.info("registry: seeded version 1 from %s", source)
        current = (await self._version(await self._latest_now()))[0]
        if current.info.digest != seed.info.digest:
            log.info(
                "registry: current version %d differs from the bundled %s (maintainers' "
                "changes are kept; the bundled file only seeds an empty store)",
                current.info.number,
                source,
            )
        return current.info

    async def current(self, fresh: bool = False) -> DatasetCatalog:
        now = self._clock()
        if fresh or self._read_at is None or now - self._read_at >= self._cache_s:
            await self._latest_now()
        if not self._latest:
            raise FailedPrecondition("the registry store holds no version (not seeded)")
        return await self.at(self._latest)

    async def at(self, number: int) -> DatasetCatalog:
        return (await self._version(number))[1]

    async def of_pool(self, pool: PoolRecord) -> DatasetCatalog:
        label = pool.registry_version
        if label.isdigit():
            return await self.at(int(label))
        first = await self._store.get(1)
        if first is not None and label and first.info.legacy_label == label:
            return await self.at(1)
        raise FailedPrecondition(
            f"pool {pool.pool_id} was built from registry {label or '(unnamed)'}, before the "
            "registry was versioned, and that file is not version 1"
        )

    async def show(self, number: int = 0) -> Shown:
        """A version (the current one for 0) with its document; NotFound."""
        latest = await self._latest_now()
        stored = (await self._version(number or latest))[0]
        return Shown(stored.info, stored.data, stored.info.number == latest)

    async def versions(self, before: int = 0, limit: int = 0) -> tuple[list[VersionInfo], int]:
        """Versions numbered below before (0: all), newest first, at most limit
        (0: MAX_VERSIONS_LISTED), and the current version's number."""
        if before < 0 or limit < 0:
            raise InvalidArgument("before and limit cannot be negative")
        limit = min(limit or MAX_VERSIONS_LISTED, MAX_VERSIONS_LISTED)
        return await self._store.infos(before, limit), await self._latest_now()

    async def put_dataset(
        self, revises: int, dataset: Mapping[str, Any], author: str, note: str = ""
    ) -> Put:
        """Makes version revises + 1 with the dataset added or replaced, current at once.

        Raises:
            Aborted: revises is not the current version (unless this very request made the
                version after it: then that version is returned).
            DatasetRejected: the dataset does not fit (naming its field).
            InvalidArgument: revises is not a version number, the note is too long.
        """
        if revises < 1:
            raise InvalidArgument("revises: name the registry version this change revises")
        if len(note) > MAX_NOTE:
            raise InvalidArgument(f"note: at most {MAX_NOTE} characters")
        latest = await self._latest_now()
        if revises != latest:
            return await self._retried_or_abort(revises, latest, dataset, author, note)
        current = (await self._version(latest))[0]
        if unchanged(current.data, dataset):
            return Put(current.info, added=False, current=latest, unchanged=True)
        revision = revise(current.data, dataset)
        made = next_version(current, revision, author, note, self._now())
        if not await self._store.add(made):
            return await self._retried_or_abort(
                revises, await self._latest_now(), dataset, author, note
            )
        self._latest, self._read_at = made.info.number, self._clock()
        self._keep(made)
        log.info("registry: version %d: %s", made.info.number, made.info.change)
        return Put(made.info, added=revision.added, current=made.info.number)

    async def _retried_or_abort(
        self, revises: int, latest: int, dataset: Mapping[str, Any], author: str, note: str
    ) -> Put:
        if 0 < revises < latest:
            made = await self._store.get(revises + 1)
            if made is not None and is_retry(made, revises, dataset, author, note):
                return Put(made.info, added=made.info.action == "add", current=latest)
        raise Aborted(
            f"revises: the registry is at version {latest}, not {revises}; read version "
            f"{latest} and put the dataset again with revises={latest}"
        )

    async def _latest_now(self) -> int:
        self._latest = await self._store.latest(self._latest)
        self._read_at = self._clock()
        return self._latest

    async def _version(self, number: int) -> tuple[StoredVersion, DatasetCatalog]:
        kept = self._kept.get(number)
        if kept is not None:
            self._kept.move_to_end(number)
            return kept
        stored = await self._store.get(number) if number > 0 else None
        if stored is None:
            raise NotFound(f"registry version {number} not found")
        return self._keep(stored)

    def _keep(self, stored: StoredVersion) -> tuple[StoredVersion, DatasetCatalog]:
        try:
            catalog = DatasetCatalog.of_version(stored)
        except RegistryError as exc:
            raise FailedPrecondition(
                f"registry version {stored.info.number} does not pass validation: {exc}"
            ) from exc
        self._kept[stored.info.number] = (stored, catalog)
        while len(self._kept) > KEPT_VERSIONS:
            self._kept.popitem(last=False)
        return stored, catalog
