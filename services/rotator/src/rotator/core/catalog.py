"""DatasetCatalog: the registry as the rotator uses it (dataset resolution, specialties)."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from rotator.core.bank import DatasetInfo, ItemRejected
from rotator.core.registry import Dataset, DatasetPart, Registry, RegistryError, parse_registry
from rotator.core.versions import StoredVersion, legacy_label


@dataclass(frozen=True)
class Resolved:
    """An item's dataset part, as a pool records it."""

    info: DatasetInfo
    answer_format: str


@dataclass(frozen=True)
class DatasetSummary:
    """A registry dataset with the bank's counts, as ListDatasets shows it."""

    name: str
    track: str
    dimension: str
    answer_formats: tuple[str, ...]
    """Sorted."""
    metric: str
    bank_items: int
    keyed_items: int
    dimension_name: str = ""
    dimension_name_zh: str = ""


def dataset_info(dataset: Dataset, part: DatasetPart) -> DatasetInfo:
    """What a pool records of an item's dataset part."""
    rule = "all_permutations" if part.permutations > 1 else dataset.dataset_rule
    return DatasetInfo(
        dataset.name, dataset.track, dataset.dimension, part.answer_format, part.metric, rule
    )


class DatasetCatalog:
    """One registry version as the rotator resolves items against it."""

    def __init__(self, registry: Registry, version: str, number: int = 0) -> None:
        self.registry = registry
        self.version = version
        """The version's label, as pools record it (Pool.registry_version)."""
        self.number = number
        """The stored version's number (0 for a catalog read from a file)."""
        # Items may name a specialty by code, English or Chinese name.
        self._specialty_codes: dict[str, str] = {}
        for s in registry.specialties:
            for name in (s.code, s.name, s.name_zh):
                self._specialty_codes.setdefault(name, s.code)

    @classmethod
    def from_json(cls, raw: bytes) -> DatasetCatalog:
        """The catalog of a registry file's bytes (tests, tools); its version names the
        registry's own version and the file's content, so two files never share one."""
        data = json.loads(raw)
        return cls(parse_registry(data), legacy_label(raw, data))

    @classmethod
    def load(cls, path: Path) -> DatasetCatalog:
        """Reads a registry file."""
        return cls.from_json(path.read_bytes())

    @classmethod
    def of_version(cls, stored: StoredVersion) -> DatasetCatalog:
        """The catalog of a stored registry version.

        Raises:
            RegistryError: the stored document does not pass validation.
        """
        return cls(parse_registry(stored.data), stored.info.label, stored.info.number)

    def knows(self, dataset: str, source: str) -> bool:
        """Whether an item naming this dataset (or, without one, this source tag) resolves."""
        try:
            if dataset:
                self.registry.dataset(dataset)
            elif source:
                self.registry.dataset_for_source(source)
        except RegistryError:
            return False
        return True

    def resolve(self, item_id: str, dataset: str, source: str, answer_format: str) -> Resolved:
        """Finds the dataset part of an item by dataset name (and answer format) or by the
        source tag of a MedBench pool file; ItemRejected naming the field otherwise."""
        try:
            if dataset:
                found = self.registry.dataset(dataset)
                if not answer_format and len(found.parts) == 1:
                    answer_format = found.parts[0].answer_format
                try:
                    part = found.part_for_format(answer_format)
                except KeyError as exc:
                    raise ItemRejected(
                        "task.answer_format",
                        f"item {item_id}: answer_format {answer_format!r} does not match "
                        f"dataset {dataset} ({', '.join(sorted(found.answer_formats))})",
                    ) from exc
            elif source:
                found, part = self.registry.dataset_for_source(source)
                if answer_format and answer_format != part.answer_format:
                    raise ItemRejected(
                        "task.answer_format",
                        f"item {item_id}: answer_format {answer_format!r} does not match "
                        f"source {source} ({part.answer_format})",
                    )
            else:
                raise ItemRejected("task.dataset", f"item {item_id}: neither dataset nor source")
        except RegistryError as exc:
            field = "task.dataset" if dataset else "task.source"
            raise ItemRejected(field, f"item {item_id}: {exc.args[0]}") from exc
        return Resolved(dataset_info(found, part), part.answer_format)

    def primary_specialty(self, item_id: str, codes: tuple[str, ...]) -> str:
        """The primary specialty of an item's first code ("" without codes)."""
        if not codes:
            return ""
        unknown = [c for c in codes if c not in self._specialty_codes]
        if unknown:
            raise ItemRejected("task.specialties", f"item {item_id}: unknown specialties {unknown}")
        return self.registry.primary_specialty(self._specialty_codes[codes[0]])

    def summaries(
        self,
        track: str | None,
        counts: Mapping[str, tuple[int, int]],
        only: Collection[str] | None = None,
    ) -> list[DatasetSummary]:
        """The datasets of a track (all when None; of those named in only, when given) in
        registry order, with their bank counts (dataset -> (items, keyed items); a dataset
        absent from counts has none)."""
        names = {d.code: d for d in self.registry.dimensions}
        out = []
        for d in self.datasets_in(track):
            if only is not None and d.name not in only:
                continue
            items, keyed = counts.get(d.name, (0, 0))
            dimension = names.get(d.dimension)
            out.append(
                DatasetSummary(
                    name=d.name,
                    track=d.track,
                    dimension=d.dimension,
                    answer_formats=tuple(sorted(d.answer_formats)),
                    metric=d.metric,
                    bank_items=items,
                    keyed_items=keyed,
                    dimension_name=dimension.name if dimension else "",
                    dimension_name_zh=dimension.name_zh if dimension else "",
                )
            )
        return out

    def datasets_in(self, track: str | None) -> list[Dataset]:
        if track is None:
            return list(self.registry.datasets)
        return list(self.registry.datasets_in(track))


def dataset_resolver(registry: Registry) -> Callable[[str, str], DatasetInfo | None]:
    """(dataset, answer_format) -> what a pool records of the item's dataset part."""
    catalog = DatasetCatalog(registry, "")

    def resolve(name: str, answer_format: str) -> DatasetInfo | None:
        try:
            return catalog.resolve("", name, "", answer_format).info
        except ItemRejected:
            return None

    return resolve
