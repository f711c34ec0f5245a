"""At-least-once delivery: the same messages delivered again change nothing; a message that
cannot be decoded goes to the dead-letter topic and the consumer goes on."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import KafkaProducer

from medbench_client.bank_files import answers_by_item, read_jsonl
from medbench_devstack.services import ServiceStack
from medbench_messaging import topics
from tests.e2e.harness import Evaluation, checked_report, load_pool, read_topic, wait_consumed

pytestmark = [pytest.mark.e2e]

BANK = Path(__file__).resolve().parents[2] / "services/rotator/src/rotator/sample_bank"
ROWS = list(read_jsonl(BANK / "items.jsonl"))
BASELINE = answers_by_item(read_jsonl(BANK / "baseline_answers.jsonl"))


def names(stack: ServiceStack) -> tuple[str, str]:
    env = stack.env("gateway")
    return env["MEDBENCH_KAFKA__TOPIC_PREFIX"], env["MEDBENCH_KAFKA__BOOTSTRAP_SERVERS"]


@pytest.fixture(scope="module")
async def finished(stack: ServiceStack) -> Evaluation:
    await load_pool(stack, ROWS, "redelivery-pool")
    evaluation = Evaluation(stack, "hospital-r", "first", BASELINE, batch_size=20)
    await evaluation.create()
    for batch in evaluation.batches(await evaluation.prompts()):
        await evaluation.upload_batch(batch)
    evaluation.report = await evaluation.wait_completed()
    return evaluation


def republish(bootstrap: str, topic: str) -> int:
    """Sends every record of topic again, byte for byte (what a redelivery looks like)."""
    records = read_topic(bootstrap, topic)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for r in records:
            producer.send(topic, value=r.value, key=r.key, headers=r.headers)
        producer.flush()
    finally:
        producer.close()
    return len(records)


async def test_every_outbox_event_is_published_once(
    stack: ServiceStack, finished: Evaluation
) -> None:
    """Each service relays only its own outbox; one event, one Kafka message."""
    prefix, bootstrap = names(stack)
    for topic in (
        topics.SUBMISSION_CREATED,
        topics.RESPONSE_RECORDED,
        topics.SUBMISSION_COMPLETED,
        topics.POOL_ROTATED,
    ):
        ids = [dict(r.headers)["event-id"] for r in read_topic(bootstrap, topic.full_name(prefix))]
        assert ids, topic.name
        assert len(ids) == len(set(ids)), topic.name


async def test_redelivered_responses_and_scores_change_nothing(
    stack: ServiceStack, finished: Evaluation
) -> None:
    prefix, bootstrap = names(stack)
    responses = topics.RESPONSE_RECORDED.full_name(prefix)
    scores = topics.ITEM_SCORED.full_name(prefix)
    assert republish(bootstrap, responses) >= 3
    await wait_consumed(bootstrap, f"{prefix}metric-scorer", responses)
    assert republish(bootstrap, scores) >= 6
    await wait_consumed(bootstrap, f"{prefix}aggregator", scores)

    again = await checked_report(stack, finished.tenant, finished.submission_id)
    assert again == finished.report, "the report was not rebuilt or changed"
    sub = await finished.partner().get(finished.submission_id)
    assert sub.progress.scored_items == len(ROWS)
    completions = read_topic(bootstrap, topics.SUBMISSION_COMPLETED.full_name(prefix))
    assert [r.key.decode() for r in completions].count(finished.submission_id) == 1


async def test_undecodable_message_is_dead_lettered_and_consumption_goes_on(
    stack: ServiceStack, finished: Evaluation
) -> None:
    prefix, bootstrap = names(stack)
    responses = topics.RESPONSE_RECORDED.full_name(prefix)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    producer.send(responses, value=b"\xff\x00 not a protobuf", key=b"poison")
    producer.send(
        responses,
        value=b"\x08\x96\x01",
        key=b"wrong-type",
        headers=[("type", b"medbench.scoring.v1.ItemsScored")],
    )
    producer.flush()
    producer.close()

    # The consumer goes on: a new evaluation behind the poison messages completes.
    later = Evaluation(stack, "hospital-r", "after-poison", BASELINE, batch_size=30)
    await later.create()
    for batch in later.batches(await later.prompts()):
        await later.upload_batch(batch)
    report = await later.wait_completed()
    assert report.overall == finished.report.overall

    dead = read_topic(bootstrap, topics.RESPONSE_RECORDED.dead_letter_name(prefix))
    by_key = {r.key: dict(r.headers) for r in dead}
    assert set(by_key) == {b"poison", b"wrong-type"}
    assert b"undecodable" in by_key[b"poison"]["dlq-reason"]
    assert b"ItemsScored" in by_key[b"wrong-type"]["dlq-reason"]
    assert by_key[b"poison"]["dlq-group"] == f"{prefix}metric-scorer".encode()
    assert [r.value for r in dead if r.key == b"poison"] == [b"\xff\x00 not a protobuf"]
