"""The registry's versions in the real Mongo-wire server, shared by rotator replicas (one client
each): seeding once however many start together, concurrent changes of one version (exactly one
wins, the others ABORTED), and a replica seeing another's version within its cache time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from medbench_runtime.errors import Aborted
from rotator.adapters.mongo_registry_store import MongoRegistryStore
from rotator.registry import DEFAULT_REGISTRY_PATH
from rotator.usecases.registry import RegistryVersions
from tests.conftest import Servers

RAW = DEFAULT_REGISTRY_PATH.read_bytes()


def dataset(name: str, **changes: Any) -> dict[str, Any]:
    return {
        "name": name,
        "track": "agent",
        "dimension": "tool_use",
        "answer_format": "json_object",
        "metric": "field_accuracy",
        "dataset_rule": "mean",
        "permutations": 1,
        "pool_lines": 20,
    } | changes


@pytest.fixture
async def replicas(servers: Servers, unique: str) -> AsyncIterator[list[MongoRegistryStore]]:
    """Three stores on one database, each over its own client (as three rotator processes)."""
    clients: list[AsyncMongoClient[dict[str, Any]]] = [
        AsyncMongoClient(servers.mongo_uri, tz_aware=True) for _ in range(3)
    ]
    try:
        yield [MongoRegistryStore(c[f"registry_{unique}"]) for c in clients]
    finally:
        await clients[0].drop_database(f"registry_{unique}")
        for c in clients:
            await c.close()


async def test_replicas_starting_together_seed_one_version(
    replicas: list[MongoRegistryStore],
) -> None:
    versions = [RegistryVersions(store) for store in replicas]
    infos = await asyncio.gather(*(v.seed(RAW, "medbench_v4.json") for v in versions))
    assert {i.number for i in infos} == {1}
    assert [i.number for i in await replicas[0].infos(0, 10)] == [1]
    again = await versions[1].seed(RAW, "medbench_v4.json")
    assert again.number == 1 and await replicas[2].latest() == 1
    stored = await replicas[2].get(1)
    assert stored is not None and stored.info.created_at.tzinfo is not None
    assert stored.info.digest == infos[0].digest and stored.info.legacy_label.startswith("v4+")


async def test_concurrent_changes_of_one_version_one_wins_the_others_are_aborted(
    replicas: list[MongoRegistryStore],
) -> None:
    versions = [RegistryVersions(store) for store in replicas]
    await versions[0].seed(RAW, "medbench_v4.json")
    for _ in range(3):  # three rounds of a race, each from the version the last one made
        latest = await replicas[0].latest()
        outcomes = await asyncio.gather(
            *(
                v.put_dataset(latest, dataset(f"MedRace{latest}x{n}"), f"k{n}")
                for n, v in enumerate(versions)
            ),
            return_exceptions=True,
        )
        won = [o for o in outcomes if not isinstance(o, BaseException)]
        lost = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(won) == 1, outcomes
        assert len(lost) == 2 and all(isinstance(e, Aborted) for e in lost), lost
        assert all(f"not {latest}" in str(e) for e in lost)
        assert won[0].version.number == latest + 1 == await replicas[1].latest()
    numbers = [i.number for i in await replicas[0].infos(0, 100)]
    assert numbers == [4, 3, 2, 1]
    # The winners' datasets are all there, one per version; the losers' nowhere.
    current = await versions[2].current()
    racers = [d.name for d in current.registry.datasets if d.name.startswith("MedRace")]
    assert len(racers) == 3
    assert current.registry.track("agent").dataset_count == 14 + 3


async def test_a_replica_sees_another_ones_version_within_its_cache_time(
    replicas: list[MongoRegistryStore],
) -> None:
    writer = RegistryVersions(replicas[0], cache_s=0.2)
    reader = RegistryVersions(replicas[1], cache_s=0.2)
    await writer.seed(RAW, "medbench_v4.json")
    assert (await reader.current()).number == 1
    put = await writer.put_dataset(1, dataset("MedSeenQA"), "k1")
    assert (await writer.current()).number == 2  # its own change: at once
    made = time.monotonic()
    deadline = made + 5.0
    while (await reader.current()).number != 2:
        assert time.monotonic() < deadline, "the reader never saw version 2"
        await asyncio.sleep(0.02)
    seen_after = time.monotonic() - made
    assert seen_after < 0.2 + 0.1, seen_after
    assert (await reader.current()).registry.dataset("MedSeenQA").metric == "field_accuracy"
    # Version 1 stays readable, unchanged.
    first = await reader.at(1)
    assert "MedSeenQA" not in {d.name for d in first.registry.datasets}
    assert put.version.digest != (await replicas[2].get(1)).info.digest  # type: ignore[union-attr]
