"""The chaos run in small (`make chaos` runs it at 20,000 items per mode): in each mode, kill -9
of every service, a Kafka broker restart, a Mongo-wire server restart, a consumer paused past its
session timeout and poison events in every outbox and topic, each at a random moment of a live
evaluation; every fault recovers, every poison event is quarantined, and the report equals the
clean run's (nothing lost, nothing counted twice, nothing stuck)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medbench_messaging import topics
from tests.chaos.rig import FAULTS, RELAYING, ChaosRig, table
from tests.e2e.harness import eventually

# Topics some service consumes (pool-rotated has no consumer yet).
CONSUMED_TOPICS = [t for t in topics.ALL_TOPICS if t is not topics.POOL_ROTATED]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ITEMS = 600


@pytest.mark.parametrize("mode", ["upload", "api"])
async def test_faults_during_an_evaluation_leave_its_report_unchanged(
    mode: str, tmp_path: Path
) -> None:
    with ChaosRig(tmp_path, ITEMS, seed=3 if mode == "upload" else 4) as rig:
        await rig.load()
        result = await rig.mode(mode, FAULTS)

        # Every poison event was held: one per outbox, one per consumed topic.
        async def all_held() -> bool:
            return await rig.quarantined() == len(RELAYING) + len(CONSUMED_TOPICS)

        await eventually(all_held, 60, "the poison events quarantined")
    print(table([result]))
    assert sorted(f.fault for f in result.faults) == sorted(FAULTS)
    assert all(f.recovered_s is not None for f in result.faults), table([result])
    assert result.state == "SUBMISSION_STATE_COMPLETED", table([result])
    assert result.scored == result.expected == ITEMS
    assert result.equal, table([result])
