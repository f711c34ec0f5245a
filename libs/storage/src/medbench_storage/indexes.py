"""Index declarations, created at start-up (idempotent)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase


@dataclass(frozen=True)
class IndexSpec:
    """One index of one collection."""

    collection: str
    keys: tuple[tuple[str, int], ...]
    unique: bool = False
    expire_after_s: int | None = None

    @property
    def name(self) -> str:
        return "_".join(f"{k}_{d}" for k, d in self.keys)


def asc(*fields: str) -> tuple[tuple[str, int], ...]:
    """Ascending keys for IndexSpec."""
    return tuple((f, ASCENDING) for f in fields)


async def ensure_indexes(db: AsyncDatabase[dict[str, Any]], specs: Iterable[IndexSpec]) -> None:
    """Creates every declared index that does not exist yet."""
    by_collection: dict[str, list[IndexModel]] = {}
    for spec in specs:
        options: dict[str, Any] = {"name": spec.name, "unique": spec.unique}
        if spec.expire_after_s is not None:
            options["expireAfterSeconds"] = spec.expire_after_s
        by_collection.setdefault(spec.collection, []).append(IndexModel(list(spec.keys), **options))
    for collection, models in by_collection.items():
        await db[collection].create_indexes(models)
