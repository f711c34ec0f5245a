"""DatasetCatalog: the registry as the rotator uses it (dataset resolution, specialties)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from rotator.core.bank import DatasetInfo, ItemRejected
from rotator.core.registry import Dataset, DatasetPart, Registry, RegistryError, load_registry


@dataclass(frozen=True)
class Resolved:
    """An item's dataset part, as a pool records it."""

    info: DatasetInfo
    answer_format: str


def _info(dataset: Dataset, part: DatasetPart) -> DatasetInfo:
    rule = "all_permutations" if part.permutations > 1 else dataset.dataset_rule
    return DatasetInfo(
        dataset.name, dataset.track, dataset.dimension, part.answer_format, part.metric, rule
    )


class DatasetCatalog:
    """Wraps the registry loaded at start-up."""

    def __init__(self, registry: Registry, version: str) -> None:
        self.registry = registry
        self.version = version
        # Items may name a specialty by code, English or Chinese name.
        self._specialty_codes: dict[str, str] = {}
        for s in registry.specialties:
            for name in (s.code, s.name, s.name_zh):
                self._specialty_codes.setdefault(name, s.code)

    @classmethod
    def load(cls, path: Path) -> DatasetCatalog:
        raw = path.read_bytes()
        version = f"{json.loads(raw).get('version', '?')}+{hashlib.sha256(raw).hexdigest()[:12]}"
        return cls(load_registry(path), version)

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
        return Resolved(_info(found, part), part.answer_format)

    def primary_specialty(self, item_id: str, codes: tuple[str, ...]) -> str:
        """The primary specialty of an item's first code ("" without codes)."""
        if not codes:
            return ""
        unknown = [c for c in codes if c not in self._specialty_codes]
        if unknown:
            raise ItemRejected("task.specialties", f"item {item_id}: unknown specialties {unknown}")
        return self.registry.primary_specialty(self._specialty_codes[codes[0]])

    def datasets_in(self, track: str | None) -> list[Dataset]:
        if track is None:
            return list(self.registry.datasets)
        return list(self.registry.datasets_in(track))
