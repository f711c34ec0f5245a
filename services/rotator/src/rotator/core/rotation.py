"""Pool rotation: stratified, seeded, exposure-capped selection of question groups (pure).

The bank is streamed once through `RotationPlan.offer`; each (dataset, specialty) bucket keeps
only its best-ranked groups, so memory grows with the pool, not with the bank. Groups retired
by a pool's disclosure are never chosen, not even as anchors.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

BOARDS = ("api", "upload")


def rank(seed: int, group_id: str) -> bytes:
    """The group's place in the seed's order: reproducible, independent of bank order."""
    return hashlib.sha256(f"{seed}\x00{group_id}".encode()).digest()


def board_of(group_id: str) -> str:
    """The one board a question group may ever serve: the boards never share data."""
    return BOARDS[hashlib.sha256(f"board\x00{group_id}".encode()).digest()[0] & 1]


def seed_for_cycle(cycle: str) -> int:
    """Default seed of a cycle."""
    return int.from_bytes(hashlib.sha256(f"cycle\x00{cycle}".encode()).digest()[:6], "big")


@dataclass(frozen=True)
class RotationParams:
    """What a rotation asks for."""

    board: str
    seed: int
    groups_per_dataset: int = 30
    exposure_cap: int = 3
    anchors_per_dataset: int = 3


@dataclass
class _Bucket:
    """Best-ranked groups of one (dataset, specialty); a max-heap of at most `limit` entries."""

    limit: int
    heap: list[tuple[bytes, str]] = field(default_factory=list)
    members: set[str] = field(default_factory=set)

    def offer(self, key: bytes, group_id: str) -> None:
        if group_id in self.members:
            return
        # Stored negated so heap[0] is the worst of the kept groups.
        entry = (bytes(255 - b for b in key), group_id)
        if len(self.heap) < self.limit:
            heapq.heappush(self.heap, entry)
            self.members.add(group_id)
        elif entry > self.heap[0]:
            _, dropped = heapq.heapreplace(self.heap, entry)
            self.members.discard(dropped)
            self.members.add(group_id)

    def ordered(self) -> list[str]:
        """Kept groups, best first."""
        return [g for _, g in sorted(self.heap, reverse=True)]


@dataclass(frozen=True)
class Selection:
    """Groups chosen per dataset, anchors first, then in round-robin specialty order."""

    groups: Mapping[str, tuple[str, ...]]
    anchors: Mapping[str, tuple[str, ...]]
    shortfalls: tuple[str, ...]


class RotationPlan:
    """Collects candidates from a bank stream, then chooses the pool."""

    def __init__(
        self,
        params: RotationParams,
        exposures: Mapping[str, int],
        anchors: Mapping[str, Sequence[str]],
        retired: Collection[str] = frozenset(),
    ) -> None:
        """retired: groups of disclosed pools (their keys are public): never chosen."""
        self._params = params
        self._exposures = exposures
        self._retired = retired
        # Anchors are re-used on purpose (score equating), so they skip the exposure cap.
        # Which previous groups carry over is itself seeded, not an accident of pool order.
        carried = {d: [g for g in groups if g not in retired] for d, groups in anchors.items()}
        self._anchors = {
            d: tuple(
                sorted(groups, key=lambda g: rank(params.seed, g))[: params.anchors_per_dataset]
            )
            for d, groups in carried.items()
        }
        self._anchor_set = {g for groups in self._anchors.values() for g in groups}
        self._buckets: dict[str, dict[str, _Bucket]] = defaultdict(dict)
        self.offered = 0

    def offer(self, dataset: str, group_id: str, specialty: str) -> None:
        """One bank item (items of a group may be offered several times)."""
        self.offered += 1
        if group_id in self._anchor_set or board_of(group_id) != self._params.board:
            return
        if group_id in self._retired:
            return
        if self._exposures.get(group_id, 0) >= self._params.exposure_cap:
            return
        buckets = self._buckets[dataset]
        bucket = buckets.get(specialty)
        if bucket is None:
            # Any one bucket never contributes more than a full dataset's worth.
            bucket = buckets[specialty] = _Bucket(self._params.groups_per_dataset)
        bucket.offer(rank(self._params.seed, group_id), group_id)

    def choose(self, datasets: Sequence[str]) -> Selection:
        """Anchors first, then one group per specialty in turn until the dataset is full."""
        want = self._params.groups_per_dataset
        chosen: dict[str, tuple[str, ...]] = {}
        shortfalls = []
        for dataset in sorted(datasets):
            picked = list(self._anchors.get(dataset, ()))[:want]
            queues = [
                self._buckets[dataset][s].ordered() for s in sorted(self._buckets.get(dataset, {}))
            ]
            position = 0
            while len(picked) < want and any(position < len(q) for q in queues):
                for queue in queues:
                    if position < len(queue) and len(picked) < want:
                        picked.append(queue[position])
                position += 1
            if len(picked) < want:
                shortfalls.append(f"{dataset}: {len(picked)}/{want}")
            if picked:
                chosen[dataset] = tuple(picked)
        return Selection(
            groups=chosen,
            anchors={d: a for d, a in self._anchors.items() if d in chosen},
            shortfalls=tuple(shortfalls),
        )
