"""The chaos run in small (`make chaos` runs it at 20,000 items per mode): in each mode, kill -9
of every service, a Kafka broker restart, a Mongo-wire server restart and a consumer paused past
its session timeout, each at a random moment of a live evaluation; every fault recovers and the
report equals the clean run's (nothing lost, nothing counted twice, nothing stuck)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.rig import FAULTS, ChaosRig, table

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ITEMS = 600


@pytest.mark.parametrize("mode", ["upload", "api"])
async def test_faults_during_an_evaluation_leave_its_report_unchanged(
    mode: str, tmp_path: Path
) -> None:
    with ChaosRig(tmp_path, ITEMS, seed=3 if mode == "upload" else 4) as rig:
        await rig.load()
        result = await rig.mode(mode, FAULTS)
    print(table([result]))
    assert sorted(f.fault for f in result.faults) == sorted(FAULTS)
    assert all(f.recovered_s is not None for f in result.faults), table([result])
    assert result.state == "SUBMISSION_STATE_COMPLETED", table([result])
    assert result.scored == result.expected == ITEMS
    assert result.equal, table([result])
