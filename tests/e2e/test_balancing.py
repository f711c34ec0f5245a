"""Replicas on the real stack (README "Balancing and replicas"): two gateways call two rotators
round robin, move to the survivor when one is killed (no partner call fails) and back when it
restarts; two metric scorers share the response topic's partitions in one consumer group, and an
evaluation completes with the uninterrupted report while the one scoring it is killed."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator

import pytest

from medbench_client.api import PartnerClient, channel
from medbench_devstack.services import ServiceStack
from rotator.core.synthetic import synthetic_answers, synthetic_items
from tests.conftest import Servers
from tests.e2e.harness import (
    Evaluation,
    comparable,
    eventually,
    lift_caps,
    load_pool,
    partner_key,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPLICAS = {"gateway": 2, "rotator": 2, "metric_scorer": 2}
N_ITEMS = 400
HANDLED = "medbench_grpc_server_handled_total"
# The rotator RPCs a CreateSubmission makes (the gateway is their only caller).
CREATE_CALLS = ('TaskPoolService/GetPool"', 'TaskPoolService/AssignItems"')


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    token = uuid.uuid4().hex[:8]
    services = ServiceStack(
        tmp_path_factory.mktemp(f"balancing-{token}"),
        servers.mongo_uri,
        f"balancing_{token}",
        servers.kafka_bootstrap,
        f"balancing{token}.",
        replicas=REPLICAS,
    )
    services.start(timeout_s=120)
    try:
        yield services
    finally:
        services.stop()


@pytest.fixture(scope="module")
async def answers(stack: ServiceStack) -> dict[str, str]:
    rows = list(synthetic_items(N_ITEMS, seed=21))
    await load_pool(stack, rows, "balancing-pool")
    return {a["item_id"]: a["answer"] for a in synthetic_answers(rows, 0.6, seed=8)}


def metric(stack: ServiceStack, name: str, family: str, *parts: str) -> float:
    """The sum of a process's series of family whose line holds every one of parts."""
    total = 0.0
    for line in stack.scrape(name).splitlines():
        if line.startswith(f"{family}{{") and all(p in line for p in parts):
            total += float(line.rsplit(" ", 1)[1])
    return total


def create_calls(stack: ServiceStack, replica: str) -> float:
    """GetPool and AssignItems calls one rotator replica answered OK."""
    return sum(metric(stack, replica, HANDLED, m, 'code="OK"') for m in CREATE_CALLS)


def failed_creates(stack: ServiceStack) -> float:
    """CreateSubmission calls the gateways answered with anything but OK."""
    return sum(
        metric(stack, g, HANDLED, "CreateSubmission")
        - metric(stack, g, HANDLED, "CreateSubmission", 'code="OK"')
        for g in stack.replicas("gateway")
    )


class Partner:
    """One tenant's partner clients, one per gateway replica, used in turn."""

    def __init__(self, stack: ServiceStack, tenant: str) -> None:
        key = partner_key(stack, tenant)
        self.clients = [
            PartnerClient(channel(stack.address(g), key)) for g in stack.replicas("gateway")
        ]
        self.created = 0

    async def create(self, count: int) -> None:
        for _ in range(count):
            client = self.clients[self.created % len(self.clients)]
            await client.create(f"balance-{self.created}", "e2e-model")
            self.created += 1


async def test_gateway_calls_spread_over_rotators_move_on_a_kill_and_come_back(
    stack: ServiceStack, answers: dict[str, str]
) -> None:
    rotators = stack.replicas("rotator")
    assert rotators == ["rotator", "rotator-2"]
    assert stack.env("gateway-2")["MEDBENCH_PEERS__ROTATOR"] == stack.target("rotator")
    assert stack.target("rotator").startswith("ipv4:127.0.0.1:")
    await lift_caps(stack, "hospital-b", quotas_too=True)
    partner = Partner(stack, "hospital-b")

    # Both gateways, both rotators: every create is a GetPool and an AssignItems.
    before = {r: create_calls(stack, r) for r in rotators}
    await partner.create(30)
    spread = {r: create_calls(stack, r) - before[r] for r in rotators}
    assert sum(spread.values()) == 60, spread
    assert min(spread.values()) >= 15, spread
    first = spread

    # One rotator killed: every create still succeeds, all on the survivor.
    stack.kill("rotator-2")
    assert stack.process("rotator-2").wait_exit(5) is not None
    before_survivor = create_calls(stack, "rotator")
    await partner.create(20)
    assert create_calls(stack, "rotator") - before_survivor == 40
    assert failed_creates(stack) == 0

    # Restarted on its port: the gateways reconnect (backoff at most 5 s) and send it calls.
    stack.restart("rotator-2", timeout_s=60)

    async def back() -> bool:
        await partner.create(1)
        return create_calls(stack, "rotator-2") > 0

    await eventually(back, 30, "calls on the restarted rotator", interval_s=0.5)
    before = {r: create_calls(stack, r) for r in rotators}
    await partner.create(30)
    spread = {r: create_calls(stack, r) - before[r] for r in rotators}
    assert sum(spread.values()) == 60 and min(spread.values()) >= 15, spread
    assert failed_creates(stack) == 0
    print(f"\nrotator calls of 30 creates: {first} before the kill, {spread} after the restart")
    assert partner.created >= 81


def assigned(stack: ServiceStack, replica: str) -> set[str]:
    """The response topic's partitions a metric scorer replica holds (its lag series: exported
    only by the member a partition is assigned to)."""
    found = set()
    for line in stack.scrape(replica).splitlines():
        if line.startswith("medbench_kafka_consumer_lag{") and "response-recorded" in line:
            match = re.search(r'partition="(\d+)"', line)
            assert match, line
            found.add(match.group(1))
    return found


async def shared(stack: ServiceStack) -> bool:
    """Both metric scorers hold partitions of the response topic, none twice, all of them."""
    parts = [assigned(stack, r) for r in stack.replicas("metric_scorer")]
    partitions = int(stack.env("metric_scorer")["MEDBENCH_KAFKA__PARTITIONS"])
    return (
        all(parts)
        and not set.intersection(*parts)
        and set.union(*parts) == {str(p) for p in range(partitions)}
    )


async def test_two_metric_scorers_share_partitions_and_survive_a_kill(
    stack: ServiceStack, answers: dict[str, str]
) -> None:
    scorers = stack.replicas("metric_scorer")
    assert scorers == ["metric_scorer", "metric_scorer-2"]
    assert stack.env("metric_scorer-2")["MEDBENCH_INSTANCE_ID"] != stack.env("metric_scorer").get(
        "MEDBENCH_INSTANCE_ID"
    )
    await lift_caps(stack, "hospital-s", quotas_too=True)
    # The lag of each assigned partition is measured every 10 s.
    await eventually(
        lambda: shared(stack),
        60,
        "both metric scorers holding partitions",
        interval_s=1,
        describe=lambda: str({r: assigned(stack, r) for r in scorers}),
    )

    reference = Evaluation(stack, "hospital-s", "uninterrupted", answers)
    await reference.create()
    for batch in reference.batches(await reference.prompts()):
        await reference.upload_batch(batch)
    uninterrupted = comparable(await reference.wait_completed())

    def scored() -> dict[str, float]:
        return {
            r: metric(stack, r, "medbench_items_total", 'stage="scored"', 'tenant="hospital-s"')
            for r in scorers
        }

    scored_before = scored()
    evaluation = Evaluation(stack, "hospital-s", "scorer-killed", answers)
    rest = await evaluation.half_uploaded()
    # The submission's messages share a key, so one partition, so one replica: kill that one.
    scored_now = scored()
    busy = max(scorers, key=lambda r: scored_now[r] - scored_before[r])
    assert scored_now[busy] > scored_before[busy], (scored_before, scored_now)
    held = {r: sorted(assigned(stack, r)) for r in scorers}
    stack.kill(busy)
    killed_at = time.monotonic()
    for batch in rest:
        await evaluation.upload_batch(batch)
    # The survivor takes the partition once the killed member's session times out.
    report = await evaluation.wait_completed(timeout_s=120)
    assert comparable(report) == uninterrupted
    print(
        f"\nmetric scorers' partitions {held}; {busy} killed after "
        f"{scored_now[busy] - scored_before[busy]:.0f} scored items; completed "
        f"{time.monotonic() - killed_at:.1f} s later with the uninterrupted report"
    )

    stack.restart(busy, timeout_s=60)
    await eventually(
        lambda: shared(stack),
        60,
        "the restarted metric scorer holding partitions again",
        interval_s=1,
        describe=lambda: str({r: assigned(stack, r) for r in scorers}),
    )
