"""medbench_devstack.backup against the real servers: a dump restores byte for byte with its
indexes, a damaged dump is refused, a non-empty target is refused, and consumer offsets are
only ever moved back to the recorded ones."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from bson import Binary
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata
from pymongo import ASCENDING, MongoClient

from medbench_devstack import backup
from tests.conftest import Servers


@pytest.fixture
def source(servers: Servers, unique: str) -> tuple[str, list[str]]:
    """Two databases (main and sealed) with varied documents and indexes."""
    names = backup.database_names(f"bk_{unique}")
    with MongoClient(servers.mongo_uri, tz_aware=True) as client:
        main, sealed = client[names[0]], client[names[1]]
        main.submissions.insert_many(
            [
                {
                    "_id": f"sub_{i:03d}",
                    "n": i,
                    "at": dt.datetime(2026, 12, 1, 12, i % 60, tzinfo=dt.UTC),
                    "blob": Binary(bytes([i % 256]) * 40),
                    "nested": {"b": [1, 2.5, None], "a": "医"},
                }
                for i in range(520)
            ]
        )
        main.submissions.create_index([("n", ASCENDING)], unique=True, name="n_unique")
        main.outbox_gateway.insert_one({"_id": "e1", "topic": "t", "payload": b"x"})
        sealed.references.insert_one({"_id": "item-1", "reference": ["A"]})
        sealed.references.create_index("reference", name="by_reference")
    return servers.mongo_uri, names


def drop(uri: str, names: list[str]) -> None:
    with MongoClient(uri) as client:
        for name in names:
            client.drop_database(name)


def test_a_dump_restores_byte_for_byte_with_its_indexes(
    source: tuple[str, list[str]], tmp_path: Path, unique: str
) -> None:
    uri, names = source
    out = tmp_path / "dump"
    try:
        timing = backup.dump(uri, names, out)
        assert timing.documents == 522
        manifest = backup.read_manifest(out)
        counts = {(c["database"], c["collection"]): c["count"] for c in manifest["collections"]}
        assert counts == {
            (names[0], "outbox_gateway"): 1,
            (names[0], "submissions"): 520,
            (names[1], "references"): 1,
        }
        assert backup.verify(uri, out) == []
        copy = {n: n.replace(f"bk_{unique}", f"bkc_{unique}") for n in names}
        try:
            restored = backup.restore(uri, out, rename=copy)
            assert restored.documents == 522
            assert backup.verify(uri, out, rename=copy) == []
            with MongoClient(uri) as client:
                ix = {i["name"]: i for i in client[copy[names[0]]].submissions.list_indexes()}
                assert ix["n_unique"]["unique"] is True
                # Restoring again into the same (now non-empty) databases is refused.
                with pytest.raises(backup.BackupError, match="not empty"):
                    backup.restore(uri, out, rename=copy)
                # A changed document is seen by verify.
                changed = client[copy[names[0]]].submissions
                changed.update_one({"_id": "sub_007"}, {"$set": {"n": -7}})
            assert backup.verify(uri, out, rename=copy) == [
                f"{copy[names[0]]}.submissions: documents differ from the dump's"
            ]
        finally:
            drop(uri, list(copy.values()))
    finally:
        drop(uri, names)


def test_a_damaged_dump_is_refused(source: tuple[str, list[str]], tmp_path: Path) -> None:
    uri, names = source
    out = tmp_path / "dump"
    try:
        backup.dump(uri, names, out)
    finally:
        drop(uri, names)
    data = out / names[0] / "submissions.bson"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(backup.BackupError, match="does not match the manifest"):
        backup.restore(uri, out)
    data.unlink()
    with pytest.raises(backup.BackupError, match="is missing"):
        backup.read_manifest(out)


def test_offsets_are_recorded_and_only_ever_rewound(servers: Servers, unique: str) -> None:
    prefix = f"bk{unique}."
    topic, group = f"{prefix}events", f"{prefix}scorer"
    bootstrap = servers.kafka_bootstrap
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(6):
        producer.send(topic, f"m{i}".encode())
    producer.flush()
    producer.close()
    tp = TopicPartition(topic, 0)

    def commit(offset: int) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        try:
            consumer.assign([tp])
            consumer.commit({tp: OffsetAndMetadata(offset, "", -1)})
        finally:
            consumer.close()

    commit(2)
    recorded = backup.consumer_offsets(bootstrap, prefix)
    assert recorded == {group: {f"{topic}:0": 2}}
    assert backup.offsets_ahead(bootstrap, recorded) == {}
    commit(5)  # the group went on after the backup: ahead of the restored state
    assert backup.offsets_ahead(bootstrap, recorded) == {group: {f"{topic}:0": (5, 2)}}
    assert backup.rewind_offsets(bootstrap, recorded) == {group: {f"{topic}:0": (5, 2)}}
    assert backup.consumer_offsets(bootstrap, prefix) == recorded
    commit(1)  # behind the recorded offset: left alone (redelivery is harmless)
    assert backup.rewind_offsets(bootstrap, recorded) == {}
    assert backup.consumer_offsets(bootstrap, prefix) == {group: {f"{topic}:0": 1}}
