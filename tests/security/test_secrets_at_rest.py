"""Secrets at rest (issue 19): a partner's endpoint API key is stored only sealed, in the sealed
database, while its API-mode run needs it, and nowhere afterwards: not in either database, not
in the oplog (SecantusDB keeps one, local.oplog.rs), not on Kafka, not in a service's log.
A gateway or dispatcher started without a key-encryption key refuses to start, naming it.

Real stack: the six services, Kafka, the Mongo-wire server, and a real-HTTP fake endpoint."""

from __future__ import annotations

import base64
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
from bson.timestamp import Timestamp
from kafka import KafkaConsumer, TopicPartition
from pymongo import AsyncMongoClient

from medbench.common.v1 import common_pb2
from medbench.submission.v1 import submission_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client.api import AdminClient, channel
from medbench_client.bank_files import import_item, read_jsonl
from medbench_devstack.errors import DevstackError
from medbench_devstack.services import ServiceSpec, ServiceStack
from medbench_storage.endpoint_keys import EndpointKeys
from medbench_storage.secrets import LocalKeys, SecretsSettings, envelope_from_settings
from rotator.core.options import parse_options
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
from tests.e2e.fake_endpoint import FakeEndpoint, Reply, Script
from tests.e2e.harness import eventually, partner_client

pytestmark = [pytest.mark.e2e]

BANK = Path(__file__).resolve().parents[2] / "services/rotator/src/rotator/sample_bank"
ROWS = list(read_jsonl(BANK / "items.jsonl"))
COMPLETED = submission_pb2.SUBMISSION_STATE_COMPLETED
TENANT = "hospital-secrets"


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    with running_stack(servers, tmp_path_factory, "secrets") as services:
        yield services


@pytest.fixture(scope="module")
async def pool(stack: ServiceStack) -> str:
    admin = AdminClient(channel(stack.address("rotator"), stack.admin_key))
    await admin.import_items([import_item(r) for r in ROWS])
    await admin.publish("secrets-pool", board=taskpool_pb2.BOARD_API)
    return "secrets-pool"


def needles(secret: str) -> list[bytes]:
    """The secret's bytes as they could be stored: raw, hex, and base64 (standard and URL-safe)
    at each of the three alignments it can have inside a longer base64 text."""
    raw = secret.encode()
    found = [raw, raw.hex().encode()]
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            text = encode(b"\0" * shift + raw).rstrip(b"=")
            # Drop the characters that mix in the padding bytes or the unknown next bytes.
            found.append(text[4 if shift else 0 : -4])
    return found


def holds(raw: bytes, secret: str) -> bool:
    return any(n in raw for n in needles(secret))


async def documents_holding(client: Any, database: str, secret: str) -> list[str]:
    """Every document of every collection of database whose BSON holds the secret."""
    db = client[database]
    hits = []
    for name in await db.list_collection_names():
        async for doc in db[name].find({}):
            if holds(bson.encode(doc), secret):
                hits.append(f"{database}.{name}/{doc.get('_id')}")
    return hits


async def oplog_since(client: Any, since: Timestamp) -> list[dict[str, Any]]:
    return await client.local["oplog.rs"].find({"ts": {"$gte": since}}).to_list()


def topics_holding(bootstrap: str, prefix: str, secret: str) -> tuple[int, list[str]]:
    """(records read, topics with a record holding the secret) over every topic of the stack."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        names = sorted(t for t in consumer.topics() if t.startswith(prefix))
        tps = [TopicPartition(t, p) for t in names for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(tps)
        read, hits = 0, set()
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, "could not read the stack's topics to their end"
            for tp, records in consumer.poll(timeout_ms=200).items():
                for record in records:
                    read += 1
                    if holds((record.key or b"") + (record.value or b""), secret):
                        hits.add(tp.topic)
        return read, sorted(hits)
    finally:
        consumer.close()


async def test_an_endpoint_key_is_stored_only_sealed_and_only_while_its_run_needs_it(
    stack: ServiceStack, pool: str, servers: Servers
) -> None:
    key = f"sk-{secrets.token_urlsafe(24)}"
    database = stack.env("gateway")["MEDBENCH_MONGO__DATABASE"]
    sealed = f"{database}_sealed"
    release, calling = threading.Event(), threading.Event()

    def hold_items(question: str, attempt: int) -> Reply | None:
        if parse_options(question) is not None:  # an item, not the preflight's tiny prompt
            calling.set()
            release.wait(60)
        return None

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri)
    since = Timestamp(int(time.time()) - 1, 0)
    try:
        with FakeEndpoint(Script(answer=lambda q: "<A>", api_key=key, fault=hold_items)) as fake:
            partner = partner_client(stack, TENANT)
            try:
                created = await partner.create(
                    f"sec-{uuid.uuid4().hex[:6]}",
                    "secrets-model",
                    mode=common_pb2.SUBMISSION_MODE_API,
                    endpoint=submission_pb2.Endpoint(
                        base_url=fake.base_url, model="test-model", api_key=key, max_concurrency=4
                    ),
                )
                sid = created.submission.submission_id

                async def dispatching() -> bool:
                    return calling.is_set()

                await eventually(dispatching, 60, "the dispatcher to call the endpoint")

                # While the run lasts: ciphertext in the sealed database, nothing else anywhere.
                assert await documents_holding(client, database, key) == []
                assert await documents_holding(client, sealed, key) == []
                assert await client[database].endpoint_keys.count_documents({}) == 0
                stored = await client[sealed].endpoint_keys.find({}).to_list()
                assert [d["_id"] for d in stored] == [sid]
                assert set(stored[0]) == {
                    "_id", "tenant_id", "v", "key_id", "wrapped_key", "ciphertext", "created_at"
                }  # fmt: skip
                assert stored[0]["key_id"] == "dev1"
                # It is the key, sealed under the stack's key-encryption key for this run.
                kek = envelope_from_settings(SecretsSettings(keys=stack.secrets_keys))
                assert isinstance(kek.keys, LocalKeys)
                assert await EndpointKeys(client[sealed], kek).get(TENANT, sid) == key

                # The oplog records the sealed write, and never the key in clear.
                oplog = await oplog_since(client, since)
                assert [e for e in oplog if holds(bson.encode(e), key)] == []
                inserts = [
                    e
                    for e in oplog
                    if e.get("op") == "i"
                    and e.get("ns") == f"{sealed}.endpoint_keys"
                    and e["o"].get("_id") == sid
                ]
                assert len(inserts) == 1 and "ciphertext" in inserts[0]["o"]
            finally:
                release.set()

            last: list[Any] = []

            async def completed() -> bool:
                last[:] = [await partner.get(sid)]
                return last[0].state == COMPLETED

            await eventually(
                completed,
                120,
                "the API-mode submission to complete",
                interval_s=0.3,
                describe=lambda: f"last seen: {last[0] if last else None}",
            )
            # The endpoint was called with the key, opened from its sealed form, for every item.
            answered = fake.script.answered
            assert sum(n for q, n in answered.items() if parse_options(q)) == len(ROWS)

        async def key_deleted() -> bool:
            return await client[sealed].endpoint_keys.count_documents({"_id": sid}) == 0

        await eventually(key_deleted, 30, "the endpoint key to be deleted after completion")

        # Afterwards: the key is nowhere, in either database, the oplog, Kafka or the logs.
        assert await documents_holding(client, database, key) == []
        assert await documents_holding(client, sealed, key) == []
        oplog = await oplog_since(client, since)
        assert [e for e in oplog if holds(bson.encode(e), key)] == []
        deletes = [
            e
            for e in oplog
            if e.get("op") == "d"
            and e.get("ns") == f"{sealed}.endpoint_keys"
            and e["o"].get("_id") == sid
        ]
        assert len(deletes) == 1
        prefix = stack.env("gateway")["MEDBENCH_KAFKA__TOPIC_PREFIX"]
        read, topics = topics_holding(servers.kafka_bootstrap, prefix, key)
        assert read > 0 and topics == []
        for name in stack.names:
            assert not holds(stack.log_path(name).read_bytes(), key), f"{name} logged the key"
    finally:
        await client.close()


@pytest.mark.parametrize("service", ["gateway", "dispatcher"])
def test_a_key_holder_started_without_a_key_encryption_key_fails_at_start_naming_it(
    servers: Servers, tmp_path: Path, service: str
) -> None:
    token = uuid.uuid4().hex[:8]
    alone = ServiceStack(
        tmp_path,
        servers.mongo_uri,
        f"nokek_{token}",
        servers.kafka_bootstrap,
        f"nokek{token}.",
        specs=[ServiceSpec(service, service)],
        service_env={service: {"MEDBENCH_SECRETS__KEYS": ""}},
    )
    with pytest.raises(DevstackError) as failed:
        alone.start(timeout_s=60)
    assert f"service {service} exited" in str(failed.value)
    assert "MEDBENCH_SECRETS__KEYS is not set" in alone.log_path(service).read_text()
