"""MongoVariants: what each download showed, as the scorers read it (sealed), cached per
submission: the option order of every choice item and the keys of its canaries.

The rotator writes these (`variants`, rotator/adapters/mongo_assignment_store.py) before anyone
can download or score: a canary is one of the pool's items shown altered for the tenant, scored
like every other item, against its own key: an order canary through its order (the pool key's
letters as it shows them), a detail canary against the pool key with its age moved where the
key quotes it (medbench_runtime.canary_text, the rule the rotator showed it by); the judge
reads a detail canary's prompt with its age moved, as the download showed it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from medbench_runtime.canary_text import move_number

ORDER = "order"
DETAIL = "detail"


@dataclass(frozen=True)
class CanaryKey:
    """The sealed alteration of one canary of a download. Never leaves the scorers."""

    item_id: str
    kind: str
    """ORDER (scored through the download's order, like every choice item) or DETAIL (scored
    against the pool key with its age moved)."""
    originals: tuple[str, ...]
    """What a right answer to the original item reads as: the parsed option letters ("A,C")
    of ORDER, the original value (an age) for DETAIL. Such an answer is a leak signal."""
    age: str = ""
    """DETAIL: the age the item states ..."""
    moved: str = ""
    """... and the age the download showed instead (in its prompt, so in the judge's)."""
    moves_key: bool = False
    """DETAIL: the key quotes the age and moves with it (else the canary only traces a leak)."""

    @property
    def own_key(self) -> bool:
        """Scored against the pool key altered (`alter_key`), not as the pool stores it."""
        return self.kind == DETAIL and self.moves_key

    def alter_prompt(self, text: str) -> str:
        """The judge's prompt as this canary showed it: a DETAIL canary's age moved."""
        return move_number(text, self.age, self.moved) if self.kind == DETAIL else text

    def alter_key(self, text: str) -> str:
        """A text of the pool key (reference, key point) as this canary's key reads it."""
        return self.alter_prompt(text) if self.own_key else text


@dataclass(frozen=True)
class SubmissionVariant:
    """What one download showed: option orders and canaries by item id."""

    orders: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    """item_id -> the order shown (order[i] = the bank's option at letter i); absent: the
    bank's order."""
    canaries: Mapping[str, CanaryKey] = field(default_factory=dict)


def variant_from_doc(doc: Mapping[str, Any] | None) -> SubmissionVariant:
    """A stored variant (None: a submission without one, shown as the pool stores it). Canaries
    without a kind are an older download's fictitious extras, which were never scored."""
    if doc is None:
        return SubmissionVariant()
    orders = {
        item_id: tuple(map(int, order.split(","))) for item_id, order in doc.get("orders", ())
    }
    canaries = {
        c["item_id"]: CanaryKey(
            item_id=c["item_id"],
            kind=c["kind"],
            originals=tuple(c.get("originals", ())),
            age=c.get("moved", ("", ""))[0],
            moved=c.get("moved", ("", ""))[1],
            moves_key=c.get("moves_key", False),
        )
        for c in doc.get("canaries", ())
        if "kind" in c
    }
    return SubmissionVariant(orders, canaries)


class MongoVariants:
    """Reads the rotator's sealed `variants`; a submission's variant never changes."""

    def __init__(self, sealed: AsyncDatabase[dict[str, Any]], cached: int = 64) -> None:
        self._sealed = sealed
        self._cache: OrderedDict[str, SubmissionVariant] = OrderedDict()
        self._cached = cached
        self._lock = asyncio.Lock()

    async def variant(self, submission_id: str) -> SubmissionVariant:
        """The submission's orders and canaries (empty when it has no stored variant)."""
        async with self._lock:
            found = self._cache.get(submission_id)
            if found is not None:
                self._cache.move_to_end(submission_id)
                return found
            doc = await self._sealed.variants.find_one({"_id": submission_id})
            variant = variant_from_doc(doc)
            self._cache[submission_id] = variant
            while len(self._cache) > self._cached:
                self._cache.popitem(last=False)
            return variant

    async def orders(self, submission_id: str) -> Mapping[str, tuple[int, ...]]:
        """item_id -> order shown to this submission's tenant (empty: canonical order)."""
        return (await self.variant(submission_id)).orders
