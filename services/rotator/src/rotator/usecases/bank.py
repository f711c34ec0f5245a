"""The task bank: importing items (validated against the current registry version, images
stored), listing a registry version's datasets with the bank's counts."""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass, replace

from medbench_runtime.errors import InvalidArgument, NotFound
from medbench_runtime.images import FORMATS as IMAGE_FORMATS
from medbench_runtime.images import image_type
from rotator.core.bank import (
    MAX_IMPORT_BATCH,
    ImportItem,
    ImportOutcome,
    Incoming,
    ItemRejected,
    Rejection,
    TaskRecord,
    content_hash,
    normalise_key,
    validate_item,
)
from rotator.core.catalog import DatasetCatalog, DatasetSummary
from rotator.core.ports import Catalogs, ImageStore, PoolStore, TaskStore


class BankImport:
    """Imports items into the bank: each item is validated on its own (a rejected item is
    reported, the others go on), its images stored once by content, then the batch stored."""

    def __init__(self, tasks: TaskStore, images: ImageStore, catalogs: Catalogs) -> None:
        self._tasks = tasks
        self._images = images
        self._catalogs = catalogs

    async def import_items(self, batches: AsyncIterable[Sequence[ImportItem]]) -> ImportOutcome:
        """Imports the batches of a stream in turn (each batch is stored before the next is
        read); InvalidArgument for a batch over MAX_IMPORT_BATCH items."""
        imported = unchanged = new_versions = images_stored = 0
        rejected: list[Rejection] = []
        async for batch in batches:
            done = await self.import_batch(batch)
            imported += done.imported
            unchanged += done.unchanged
            new_versions += done.new_versions
            images_stored += done.images_stored
            rejected += done.rejected
        return ImportOutcome(imported, unchanged, new_versions, images_stored, tuple(rejected))

    async def import_batch(self, items: Sequence[ImportItem]) -> ImportOutcome:
        """Validates and stores one batch against the current registry version (read again
        before refusing an item whose dataset the version read last does not know: a dataset
        just added on another replica is found)."""
        if len(items) > MAX_IMPORT_BATCH:
            raise InvalidArgument(f"{len(items)} items in one message; at most {MAX_IMPORT_BATCH}")
        catalog = await self._catalogs.current()
        if not all(catalog.knows(item.dataset, item.source) for item in items):
            catalog = await self._catalogs.current(fresh=True)
        batch: list[Incoming] = []
        rejected: list[Rejection] = []
        seen: set[str] = set()
        images_stored = 0
        for item in items:
            try:
                incoming, stored = await self._incoming(item, catalog)
                if incoming.task.item_id in seen:
                    raise ItemRejected(
                        "task.item_id", f"item {incoming.task.item_id} appears twice"
                    )
            except ItemRejected as exc:
                rejected.append(Rejection(item.ref, item.item_id, exc.field, str(exc)))
                continue
            seen.add(incoming.task.item_id)
            images_stored += stored
            batch.append(incoming)
        counts = await self._tasks.import_items(batch)
        return ImportOutcome(
            counts.imported, counts.unchanged, counts.new_versions, images_stored, tuple(rejected)
        )

    async def _incoming(self, item: ImportItem, catalog: DatasetCatalog) -> tuple[Incoming, int]:
        """The item validated, with its images stored; ItemRejected naming the field."""
        resolved = catalog.resolve(item.item_id, item.dataset, item.source, item.answer_format)
        task = TaskRecord(
            item_id=item.item_id,
            dataset=resolved.info.name,
            # Unset: the dataset's track; set: checked against it by validate_item.
            track=resolved.info.track if item.track is None else item.track,
            question=item.question or (item.messages[-1][1] if item.messages else ""),
            answer_format=resolved.answer_format,
            group_id=item.group_id or item.item_id,
            specialties=item.specialties,
            image_paths=item.image_paths,
            provenance=item.provenance,
            licence=item.licence,
            source=item.source,
            messages=item.messages,
        )
        key = item.key
        if key is not None and (key.reference or key.key_points or key.rubric_id):
            key = normalise_key(
                replace(key, item_id=key.item_id or item.item_id), task.answer_format
            )
        else:
            key = None
        validate_item(task, key, resolved.info)
        primary = catalog.primary_specialty(task.item_id, task.specialties)
        unknown = sorted(set(item.images) - set(task.image_paths))
        if unknown:
            raise ItemRejected(
                "images", f"item {task.item_id}: images {unknown} not in image_paths"
            )
        # Every image is checked before any is stored: a rejected item stores nothing.
        media_types: dict[str, str] = {}
        for path, content in item.images.items():
            media_type = image_type(content)
            if media_type is None:
                raise ItemRejected(
                    "images",
                    f"item {task.item_id}: image {path} is not a {IMAGE_FORMATS} file (by its "
                    f"first bytes)",
                )
            media_types[path] = media_type
        image_ids: list[str] = []
        stored = 0
        for path in task.image_paths:
            blob = item.images.get(path)
            if blob is None:
                continue
            # The type the bytes have, whatever the client or the file name says.
            image_id, new = await self._images.put(path, blob, media_types[path])
            image_ids.append(image_id)
            stored += new
        incoming = Incoming(
            task, key, content_hash(task, key, image_ids), tuple(image_ids), primary
        )
        return incoming, stored


@dataclass(frozen=True)
class DatasetList:
    """The registry's datasets with the bank's counts, and the registry they come from."""

    registry_version: str
    datasets: tuple[DatasetSummary, ...]


class DatasetListing:
    """Lists a registry version's datasets with what the bank holds of each."""

    def __init__(self, tasks: TaskStore, pools: PoolStore, catalogs: Catalogs) -> None:
        self._tasks = tasks
        self._pools = pools
        self._catalogs = catalogs

    async def list_datasets(
        self, track: str | None, version: int = 0, pool_id: str = ""
    ) -> DatasetList:
        """The datasets of a track (all when None), in registry order: of the current version,
        of version `version`, or a pool's datasets under the version it was built from.
        NotFound for an unknown version or pool."""
        only: frozenset[str] | None = None
        if pool_id:
            if version:
                raise InvalidArgument("name a version or a pool, not both")
            pool = await self._pools.find_pool(pool_id)
            if pool is None:
                raise NotFound(f"pool {pool_id!r} not found")
            catalog = await self._catalogs.of_pool(pool)
            only = frozenset(name for name, _ in pool.datasets)
        elif version < 0:
            raise InvalidArgument("version cannot be negative")
        elif version:
            catalog = await self._catalogs.at(version)
        else:
            catalog = await self._catalogs.current()
        counts = await self._tasks.dataset_counts(track)
        return DatasetList(catalog.version, tuple(catalog.summaries(track, counts, only)))
