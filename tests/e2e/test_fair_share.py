"""Fair share through the stack: a tenant's large API-mode run does not starve a small one.

The dispatcher's global cap (4 calls in flight) is what the two runs compete for; each
endpoint declares more (8), so only the scheduler decides who gets a freed slot.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from medbench.common.v1 import common_pb2
from medbench.submission.v1 import submission_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client.api import AdminClient, channel
from medbench_client.bank_files import import_item
from medbench_devstack.services import ServiceStack
from rotator.core.synthetic import synthetic_items
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
from tests.e2e.fake_endpoint import FakeEndpoint, Script
from tests.e2e.harness import eventually, partner_client

pytestmark = [pytest.mark.e2e]

BIG, SMALL = 400, 20
LATENCY_S = 0.05
COMPLETED = submission_pb2.SUBMISSION_STATE_COMPLETED


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    with running_stack(
        servers, tmp_path_factory, "fair", {"MEDBENCH_GLOBAL_CONCURRENCY": "4"}
    ) as services:
        yield services


def small_rows() -> list[dict[str, object]]:
    return [
        {
            "item_id": f"small-{i}",
            "dataset": "MedClass",
            "track": "multimodal",
            "question": f"第{i}号病例最可能的诊断是？只回答“正常”或“肺炎”。",
            "reference": ["正常"],
        }
        for i in range(SMALL)
    ]


async def test_a_small_run_is_not_starved_by_a_large_one(stack: ServiceStack) -> None:
    admin = AdminClient(channel(stack.address("rotator"), stack.admin_key))
    await admin.import_items([import_item(r) for r in synthetic_items(BIG, seed=11)])
    await admin.import_items([import_item(r) for r in small_rows()])
    await admin.publish("fair-big", board=taskpool_pb2.BOARD_API)
    await admin.publish(
        "fair-small", track=common_pb2.TRACK_MULTIMODAL, board=taskpool_pb2.BOARD_API
    )

    def endpoint(fake: FakeEndpoint) -> submission_pb2.Endpoint:
        return submission_pb2.Endpoint(
            base_url=fake.base_url, model="test-model", api_key="secret-key", max_concurrency=8
        )

    big_script = Script(answer=lambda q: "<A>", latency_s=LATENCY_S)
    small_script = Script(answer=lambda q: "正常", latency_s=LATENCY_S)
    with FakeEndpoint(big_script) as big_fake, FakeEndpoint(small_script) as small_fake:
        big = partner_client(stack, "hospital-big")
        small = partner_client(stack, "clinic-small")
        big_sid = (
            await big.create(
                "big-run",
                "big-model",
                mode=common_pb2.SUBMISSION_MODE_API,
                endpoint=endpoint(big_fake),
            )
        ).submission.submission_id

        async def big_running() -> bool:
            return len(big_script.times) >= 60

        await eventually(big_running, 60, "the large run to be under way", interval_s=0.05)
        small_sid = (
            await small.create(
                "small-run",
                "small-model",
                track=common_pb2.TRACK_MULTIMODAL,
                mode=common_pb2.SUBMISSION_MODE_API,
                endpoint=endpoint(small_fake),
            )
        ).submission.submission_id

        async def small_done() -> bool:
            return (await small.get(small_sid)).state == COMPLETED

        await eventually(small_done, 60, "the small run to complete", interval_s=0.2)
        # One preflight call per endpoint, then one call per item.
        small_calls = sorted(small_script.times[1:])
        assert len(small_calls) == SMALL

        async def big_done() -> bool:
            return (await big.get(big_sid)).state == COMPLETED

        await eventually(big_done, 120, "the large run to complete", interval_s=0.3)
    first, last = small_calls[0], small_calls[-1]
    big_during = sum(1 for t in big_script.times if first <= t <= last)
    big_after = sum(1 for t in big_script.times if t > last)
    # While both were active they shared the four slots about evenly (deficit round robin:
    # the small run's 20 calls went alongside about as many of the large run's) ...
    assert SMALL * 0.5 <= big_during <= SMALL * 2.0, big_during
    # ... so the small run was done long before the large one: most of the large run's calls
    # came after it (first-come-first-served would have made the small one wait for all).
    assert big_after >= BIG / 2, big_after
    assert len(big_script.times) == BIG + 1
