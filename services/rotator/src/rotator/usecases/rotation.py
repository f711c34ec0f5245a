"""Making pools: a rotated pool per cycle (stratified, seeded, exposure-capped), or a whole-bank
pool; either becomes its board's current pool, announced as PoolRotated. Neither ever takes a
question group retired by a disclosure (usecases/disclosure.py), and a pool holding one is never
made current again."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from medbench_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from rotator.core.bank import BankEntry, DatasetInfo, KeyRecord, TaskRecord, check_id, freeze_pool
from rotator.core.catalog import DatasetCatalog, dataset_info
from rotator.core.pools import (
    PoolMeta,
    PoolParams,
    PoolRecord,
    RotationMeta,
    check_rotation,
    pool_id_of,
)
from rotator.core.ports import Catalogs, CurrentPools, PoolStore, TaskStore
from rotator.core.registry import RegistryError
from rotator.core.rotation import RotationParams, RotationPlan, seed_for_cycle

log = logging.getLogger(__name__)

DEFAULT_GROUPS_PER_DATASET = 30
DEFAULT_EXPOSURE_CAP = 3
DEFAULT_ANCHORS_PER_DATASET = 3


@dataclass(frozen=True)
class RotationRequest:
    """A rotation as asked: 0 (or empty) means the default."""

    track: str
    board: str
    cycle: str
    seed: int = 0
    """0: derived from the cycle."""
    groups_per_dataset: int = 0
    exposure_cap: int = 0
    anchors_per_dataset: int = 0
    datasets: tuple[str, ...] = ()
    """Empty: every dataset of the track."""

    def params(self) -> RotationParams:
        return RotationParams(
            board=self.board,
            seed=self.seed or seed_for_cycle(self.cycle),
            groups_per_dataset=self.groups_per_dataset or DEFAULT_GROUPS_PER_DATASET,
            exposure_cap=self.exposure_cap or DEFAULT_EXPOSURE_CAP,
            anchors_per_dataset=self.anchors_per_dataset or DEFAULT_ANCHORS_PER_DATASET,
        )


@dataclass(frozen=True)
class Rotated:
    """The board's pool after a rotation, and the datasets it could not fill."""

    pool: PoolRecord
    shortfalls: tuple[str, ...]


class PoolRotation:
    """Freezes pools from the bank under the current registry version (which the pool records:
    its items' datasets, metric specs and rules stay that version's) and makes them current."""

    def __init__(
        self,
        tasks: TaskStore,
        pools: PoolStore,
        current: CurrentPools,
        catalogs: Catalogs,
    ) -> None:
        self._tasks = tasks
        self._pools = pools
        self._current = current
        self._catalogs = catalogs

    async def rotate(self, request: RotationRequest) -> Rotated:
        """The cycle's pool of the track and board, made current. A cycle is rotated once:
        asking again with the same parameters returns the pool made the first time;
        AlreadyExists with others."""
        params = request.params()
        check_rotation(request.cycle, params)
        track = request.track
        catalog = await self._catalogs.current()
        if not set(request.datasets) <= {d.name for d in catalog.datasets_in(track)}:
            # Perhaps added a moment ago, on another replica.
            catalog = await self._catalogs.current(fresh=True)
        in_track = [d.name for d in catalog.datasets_in(track)]
        names = list(request.datasets) or in_track
        for name in names:
            if name not in in_track:
                raise InvalidArgument(
                    f"dataset {name!r} is not a {track} dataset of registry version "
                    f"{catalog.version}"
                )
        pool_id = pool_id_of(track, request.board, request.cycle)
        asked = PoolParams.of(params, names)
        existing = await self._pools.find_pool(pool_id)
        if existing is not None:
            if existing.params != asked:
                raise AlreadyExists(
                    f"pool {pool_id} exists with other parameters; a cycle is rotated once"
                )
        else:
            existing = await self._freeze_rotation(pool_id, request, params, names, catalog)
        await self._make_current(existing)
        return Rotated(existing, existing.shortfalls)

    async def _freeze_rotation(
        self,
        pool_id: str,
        request: RotationRequest,
        params: RotationParams,
        names: list[str],
        catalog: DatasetCatalog,
    ) -> PoolRecord:
        track = request.track
        previous = await self._pools.previous_pool(track, request.board)
        anchors = {} if previous is None else await self._pools.pool_groups(previous.pool_id)
        started = time.perf_counter()
        plan = RotationPlan(
            params, await self._pools.exposures(), anchors, await self._pools.retired_groups()
        )
        async for dataset, group_id, specialty in self._tasks.stream_candidates(track, names):
            plan.offer(dataset, group_id, specialty)
        selection = plan.choose(names)
        streamed = time.perf_counter()
        chosen = [g for groups in selection.groups.values() for g in groups]
        entries = await self._tasks.group_entries(chosen)
        fetched = time.perf_counter()
        meta = PoolMeta(
            board=request.board,
            method="rotation",
            registry_version=catalog.version,
            coverage=_coverage(catalog, track),
            rotation=RotationMeta(
                cycle=request.cycle,
                seed=params.seed,
                anchor_groups=sum(len(a) for a in selection.anchors.values()),
                params=PoolParams.of(params, names),
                shortfalls=selection.shortfalls,
                previous_pool=None if previous is None else previous.pool_id,
            ),
        )
        await self._store(pool_id, track, entries, meta, request.datasets, catalog)
        await self._pools.count_exposures(pool_id, chosen)
        log.info(
            "rotated %s: %d bank items streamed in %.1f s, %d groups fetched in %.1f s, "
            "stored in %.1f s",
            pool_id,
            plan.offered,
            streamed - started,
            len(chosen),
            fetched - streamed,
            time.perf_counter() - fetched,
        )
        return await self._stored(pool_id)

    async def publish(
        self, pool_id: str, track: str, board: str, datasets: Sequence[str] = ()
    ) -> PoolRecord:
        """A pool of every keyed item of the track (of the datasets, all when empty), made
        current; publishing an existing pool id makes that pool current again (AlreadyExists
        when it is another track's or board's)."""
        check_id("pool_id", pool_id)
        existing = await self._pools.find_pool(pool_id)
        if existing is None:
            catalog = await self._catalogs.current()
            if not set(datasets) <= {d.name for d in catalog.datasets_in(track)}:
                catalog = await self._catalogs.current(fresh=True)
            entries = await self._unretired(
                pool_id, await self._tasks.bank_entries(track, datasets)
            )
            meta = PoolMeta(
                board=board,
                method="whole-bank",
                registry_version=catalog.version,
                coverage=_coverage(catalog, track),
            )
            await self._store(pool_id, track, entries, meta, datasets, catalog)
            existing = await self._stored(pool_id)
        elif existing.track != track or existing.board != board:
            raise AlreadyExists(
                f"pool {pool_id} exists for track {existing.track}, board {existing.board}"
            )
        await self._make_current(existing)
        return existing

    async def _make_current(self, pool: PoolRecord) -> None:
        """The pool made its board's current one; FailedPrecondition for a disclosed pool or
        one holding a retired group (their keys are public)."""
        groups = {
            g for listed in (await self._pools.pool_groups(pool.pool_id)).values() for g in listed
        }
        await self._current.make_current(pool, groups)

    async def _unretired(self, pool_id: str, entries: list[BankEntry]) -> list[BankEntry]:
        """The entries whose question groups no disclosure retired; FailedPrecondition when
        there were entries and every one is retired."""
        retired = await self._pools.retired_groups()
        kept = [e for e in entries if (e[0].group_id or e[0].item_id) not in retired]
        if entries and not kept:
            raise FailedPrecondition(
                f"pool {pool_id}: every keyed item asked for belongs to a question group "
                f"retired by a pool's disclosure (its keys are public); import new items"
            )
        return kept

    async def _store(
        self,
        pool_id: str,
        track: str,
        entries: list[BankEntry],
        meta: PoolMeta,
        datasets: Sequence[str],
        catalog: DatasetCatalog,
    ) -> None:
        if not entries:
            await self._no_keyed_items(pool_id, track, datasets)
        frozen = freeze_pool(pool_id, track, _resolved(pool_id, entries, catalog))
        await self._pools.store_pool(
            frozen, meta, {t.item_id: images for t, _, _, images in entries}
        )

    async def _no_keyed_items(self, pool_id: str, track: str, datasets: Sequence[str]) -> None:
        """Says why nothing could be pooled when the track has items but none with a key
        (only keyed items are pooled); else freeze_pool says the bank has none."""
        counts = await self._tasks.dataset_counts(track)
        wanted = [n for name, n in counts.items() if not datasets or name in datasets]
        unkeyed = sum(items - keyed for items, keyed in wanted)
        if unkeyed and not any(keyed for _, keyed in wanted):
            which = "" if not datasets else f" (datasets {', '.join(sorted(datasets))})"
            raise InvalidArgument(
                f"pool {pool_id}: {unkeyed} items of track {track}{which} have no key; "
                "import keys to pool them"
            )

    async def _stored(self, pool_id: str) -> PoolRecord:
        stored = await self._pools.find_pool(pool_id)
        assert stored is not None, f"pool {pool_id} was just stored"
        return stored


def _coverage(catalog: DatasetCatalog, track: str) -> tuple[tuple[str, str], ...]:
    """Every dataset of the track with its dimension (in the pool's registry version): a pool's
    report must cover them all, whichever datasets the pool was asked for or could fill."""
    return tuple((d.name, d.dimension) for d in catalog.datasets_in(track))


def _resolved(
    pool_id: str, entries: list[BankEntry], catalog: DatasetCatalog
) -> list[tuple[TaskRecord, int, KeyRecord, DatasetInfo]]:
    """Each entry with its dataset part under the pool's registry version. Bank items that
    version does not fit (their dataset revised to another answer format, say) make the pool
    fail with each such dataset named, never a pool that silently lacks them."""
    out = []
    misfits: dict[tuple[str, str], int] = {}
    for task, version, key, _ in entries:
        try:
            dataset = catalog.registry.dataset(task.dataset)
            part = dataset.part_for_format(task.answer_format)
        except RegistryError:
            part = None
        if part is None or dataset.track != task.track:
            fit = (task.dataset, task.answer_format)
            misfits[fit] = misfits.get(fit, 0) + 1
            continue
        out.append((task, version, key, dataset_info(dataset, part)))
    if misfits:
        named = "; ".join(
            f"{n} items of {name} in answer format {answer_format}"
            for (name, answer_format), n in sorted(misfits.items())
        )
        raise FailedPrecondition(
            f"pool {pool_id}: registry version {catalog.version} does not fit {named}; "
            "re-import them in a format the version gives their dataset, or leave the dataset "
            "out of the pool"
        )
    return out
