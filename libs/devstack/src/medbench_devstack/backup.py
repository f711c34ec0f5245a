"""Backup and restore of the platform's MongoDB state (README "Production topology, backup and
restore"): both databases (``<database>`` and its sealed twin), over the wire with PyMongo.

A dump is a folder::

    manifest.json                 what was dumped: databases, collections, counts, sha256s, the
                                  snapshot's cluster time, the Kafka consumer groups' offsets
    <db>/<collection>.bson        the documents, BSON one after another, in _id order
    <db>/<collection>.metadata.json   collection options and indexes (extended JSON)

(the layout of mongodump's output). The documents are read in one snapshot session when the
server is a replica set member, so on a MongoDB replica set (5.0 or later) every collection of
both databases is read at one point in time even while the services write (within the
server's snapshot history window, ``minSnapshotHistoryWindowInSeconds``, 300 s by default: a
larger state needs mongodump
--oplog or the operator's backup). The local Mongo-wire server ignores snapshot sessions (and a
standalone server refuses them), so there a consistent dump needs the services stopped, as the
restore drill does.

The Kafka consumer groups' committed offsets are read *before* the snapshot: a consumer
commits only after its handler's writes, so every offset recorded is at or behind the state
dumped. ``restore --rewind-offsets`` moves each group back to them (never forward): messages
between are delivered again and change nothing, because every handler is idempotent. A group
ahead of the restored state would skip messages whose effects the restore lost.

Usage::

    python -m medbench_devstack.backup dump --uri URI --database medbench --out DIR \\
        [--kafka HOST:PORT --topic-prefix P]
    python -m medbench_devstack.backup restore --uri URI --from DIR [--rewind-offsets --kafka ..]
    python -m medbench_devstack.backup verify --uri URI --from DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import json_util
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.operations import IndexModel

FORMAT = "medbench-backup/1"
MANIFEST = "manifest.json"
# Documents per insert on restore (and per getMore on dump): far below the 48 MB message limit
# for the platform's documents (the largest, an upload batch, is at most 16 MB).
BATCH = 500
RAW: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)
# Index fields that are not options of createIndexes.
_NOT_OPTIONS = {"v", "key", "ns"}


class BackupError(RuntimeError):
    """A dump that cannot be taken, verified or restored as asked."""


@dataclass(frozen=True)
class Timing:
    """What one dump or restore did, for the operator (and the drill's report)."""

    seconds: float
    documents: int
    bytes: int


def database_names(database: str, sealed_database: str = "") -> list[str]:
    """The platform's two databases (MongoSettings: "" sealed -> "<database>_sealed")."""
    return [database, sealed_database or f"{database}_sealed"]


def _client(uri: str) -> MongoClient[dict[str, Any]]:
    return MongoClient(uri, serverSelectionTimeoutMS=10_000, tz_aware=True)


def _collections(db: Database[dict[str, Any]]) -> list[dict[str, Any]]:
    """The database's collections (views and system collections left out), by name."""
    out = [
        dict(info)
        for info in db.list_collections()
        if info.get("type", "collection") == "collection"
        and not str(info["name"]).startswith("system.")
    ]
    return sorted(out, key=lambda info: str(info["name"]))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_digest(collections: Sequence[dict[str, Any]]) -> str:
    """One sha256 over every collection's name, count and file digests: the dump's checksum."""
    lines = [
        f"{c['database']}.{c['collection']} {c['count']} {c['sha256']} {c['metadata_sha256']}"
        for c in sorted(collections, key=lambda c: (c["database"], c["collection"]))
    ]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# --- Kafka consumer offsets ------------------------------------------------------------------


def consumer_offsets(bootstrap: str, topic_prefix: str = "") -> dict[str, dict[str, int]]:
    """Committed offsets of every consumer group under the prefix: {group: {"topic:partition":
    offset}} (only topics under the prefix)."""
    from kafka import KafkaAdminClient  # noqa: PLC0415 - only dumps that record offsets

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="medbench-backup")
    try:
        groups = sorted(
            str(g["group_id"])
            for g in admin.list_groups()
            if str(g["group_id"]).startswith(topic_prefix)
        )
        out: dict[str, dict[str, int]] = {}
        for group in groups:
            committed = admin.list_group_offsets({group: None}).get(group, {})
            out[group] = {
                f"{tp.topic}:{tp.partition}": int(meta.offset)
                for tp, meta in sorted(committed.items())
                if tp.topic.startswith(topic_prefix) and meta.offset >= 0
            }
        return out
    finally:
        admin.close()


def _wait_empty(admin: Any, group: str, timeout_s: float) -> None:
    """Waits until the group has no members (the services are stopped; a static member that
    left without a goodbye is dropped after its session timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        described = admin.describe_groups([group]).get(group, {})
        state = str(described.get("group_state", "")).lower()
        if state in ("empty", "dead", ""):
            return
        if time.monotonic() > deadline:
            raise BackupError(
                f"consumer group {group} still has members ({state}) after {timeout_s:.0f} s: "
                "stop every service before rewinding offsets"
            )
        time.sleep(0.5)


def rewind_offsets(
    bootstrap: str, recorded: dict[str, dict[str, int]], timeout_s: float = 60
) -> dict[str, dict[str, tuple[int, int]]]:
    """Moves every group's committed offset back to the recorded one where it is ahead, never
    forward; returns {group: {"topic:partition": (was, now)}} of the partitions moved. The
    groups must be empty (services stopped)."""
    from kafka import KafkaAdminClient, TopicPartition  # noqa: PLC0415
    from kafka.structs import OffsetAndMetadata  # noqa: PLC0415

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="medbench-backup")
    moved: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        for group, offsets in sorted(recorded.items()):
            _wait_empty(admin, group, timeout_s)
            committed = admin.list_group_offsets({group: None}).get(group, {})
            changes: dict[Any, Any] = {}
            for name, offset in offsets.items():
                topic, partition = name.rsplit(":", 1)
                tp = TopicPartition(topic, int(partition))
                now = committed.get(tp)
                if now is not None and now.offset > offset:
                    changes[tp] = OffsetAndMetadata(offset, "", -1)
                    moved.setdefault(group, {})[name] = (int(now.offset), offset)
            if changes:
                errors = admin.alter_group_offsets(group, changes)
                failed = {str(tp): e for tp, e in errors.items() if e.__name__ != "NoError"}
                if failed:
                    raise BackupError(f"rewinding {group} failed: {failed}")
        return moved
    finally:
        admin.close()


def offsets_ahead(
    bootstrap: str, recorded: dict[str, dict[str, int]]
) -> dict[str, dict[str, tuple[int, int]]]:
    """Partitions whose committed offset is beyond the recorded one: {group: {tp: (now,
    recorded)}}. Empty means restarting the services after the restore loses nothing."""
    now = consumer_offsets(bootstrap)
    ahead: dict[str, dict[str, tuple[int, int]]] = {}
    for group, offsets in recorded.items():
        for name, offset in offsets.items():
            current = now.get(group, {}).get(name)
            if current is not None and current > offset:
                ahead.setdefault(group, {})[name] = (current, offset)
    return ahead


# --- dump ------------------------------------------------------------------------------------


def _write_collection(
    db: Database[dict[str, Any]], info: dict[str, Any], folder: Path, session: Any
) -> dict[str, Any]:
    name = str(info["name"])
    coll: Collection[RawBSONDocument] = db[name].with_options(codec_options=RAW)
    bson_path = folder / f"{name}.bson"
    digest = hashlib.sha256()
    count = size = 0
    with bson_path.open("wb") as out:
        cursor = coll.find({}, session=session, sort=[("_id", 1)], batch_size=BATCH)
        for doc in cursor:
            raw = doc.raw
            out.write(raw)
            digest.update(raw)
            count += 1
            size += len(raw)
    # Outside the snapshot (not every server serves listIndexes there): the services declare
    # their indexes only at start-up, so they do not change under a running dump.
    indexes = [dict(ix) for ix in coll.list_indexes()]
    metadata = {
        "collectionName": name,
        "type": "collection",
        "options": dict(info.get("options") or {}),
        "indexes": indexes,
    }
    meta_path = folder / f"{name}.metadata.json"
    meta_path.write_text(
        json_util.dumps(metadata, json_options=json_util.CANONICAL_JSON_OPTIONS, indent=1),
        encoding="utf-8",
    )
    return {
        "database": db.name,
        "collection": name,
        "count": count,
        "bytes": size,
        "sha256": digest.hexdigest(),
        "metadata_sha256": _sha256_file(meta_path),
        "indexes": len(indexes),
    }


def dump(
    uri: str,
    databases: Sequence[str],
    out: Path,
    kafka_bootstrap: str = "",
    topic_prefix: str = "",
) -> Timing:
    """Writes a dump of the databases to out (which must not exist or be empty)."""
    t0 = time.monotonic()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BackupError(f"{out} is not empty")
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    # Before the snapshot: consumers commit after their writes, so these are at or behind it.
    offsets = consumer_offsets(kafka_bootstrap, topic_prefix) if kafka_bootstrap else {}
    collections: list[dict[str, Any]] = []
    with _client(uri) as client:
        hello = client.admin.command("hello")
        # Snapshot sessions need a replica set (a standalone server refuses them).
        point_in_time = bool(hello.get("setName"))
        with client.start_session(snapshot=point_in_time) as session:
            for name in databases:
                db = client[name]
                folder = out / name
                folder.mkdir()
                for info in _collections(db):
                    collections.append(_write_collection(db, info, folder, session))
            snapshot = getattr(session, "_snapshot_time", None)
    manifest = {
        "format": FORMAT,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "server": {"set_name": hello.get("setName", ""), "uri_host": _host(uri)},
        "snapshot_session": point_in_time,
        "snapshot_cluster_time": (
            {"t": snapshot.time, "i": snapshot.inc} if snapshot is not None else None
        ),
        "databases": list(databases),
        "collections": collections,
        "kafka": {"topic_prefix": topic_prefix, "consumer_offsets": offsets},
        "sha256": _manifest_digest(collections),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return Timing(
        time.monotonic() - t0,
        sum(c["count"] for c in collections),
        sum(f.stat().st_size for f in out.rglob("*") if f.is_file()),
    )


def _host(uri: str) -> str:
    """The URI's host part without credentials or options (manifests never hold secrets)."""
    rest = uri.split("://", 1)[-1]
    return rest.split("@", 1)[-1].split("/", 1)[0]


# --- verify and restore ----------------------------------------------------------------------


def read_manifest(folder: Path) -> dict[str, Any]:
    """The dump's manifest, after checking every file against it (BackupError if one differs)."""
    folder = Path(folder)
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(f"{folder / MANIFEST}: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{folder}: not a {FORMAT} dump ({manifest.get('format')!r})")
    collections = manifest["collections"]
    if _manifest_digest(collections) != manifest["sha256"]:
        raise BackupError(f"{folder / MANIFEST}: its checksum does not match its entries")
    for c in collections:
        base = folder / c["database"] / c["collection"]
        files = ((f"{base}.bson", "sha256"), (f"{base}.metadata.json", "metadata_sha256"))
        for name, key in files:
            path = Path(name)
            if not path.is_file():
                raise BackupError(f"{path} is missing")
            if _sha256_file(path) != c[key]:
                raise BackupError(f"{path} does not match the manifest's sha256")
    return manifest


def _documents(path: Path) -> Iterator[RawBSONDocument]:
    """The BSON documents of a .bson file, one after another, as raw documents."""
    with path.open("rb") as f:
        while header := f.read(4):
            if len(header) < 4:
                raise BackupError(f"{path}: truncated document length")
            length = int.from_bytes(header, "little")
            body = f.read(length - 4)
            if len(body) != length - 4:
                raise BackupError(f"{path}: truncated document")
            yield RawBSONDocument(header + body)


def _index_models(indexes: Sequence[dict[str, Any]]) -> list[IndexModel]:
    models = []
    for ix in indexes:
        if ix.get("name") == "_id_":
            continue
        options = {k: v for k, v in ix.items() if k not in _NOT_OPTIONS}
        models.append(IndexModel(list(dict(ix["key"]).items()), **options))
    return models


def restore(uri: str, folder: Path, *, rename: dict[str, str] | None = None) -> Timing:
    """Restores a verified dump into uri; refuses a target database that has any collection
    (restore into a fresh server, or drop the databases first). rename maps a dumped database
    name to the target's (default: the same names)."""
    t0 = time.monotonic()
    folder = Path(folder)
    manifest = read_manifest(folder)
    rename = rename or {}
    documents = size = 0
    with _client(uri) as client:
        for name in manifest["databases"]:
            target = client[rename.get(name, name)]
            if present := target.list_collection_names():
                raise BackupError(
                    f"database {target.name} on the target is not empty ({len(present)} "
                    "collections): restore into a fresh server or drop it first"
                )
        for c in manifest["collections"]:
            db = client[rename.get(c["database"], c["database"])]
            base = folder / c["database"] / c["collection"]
            metadata = json_util.loads(Path(f"{base}.metadata.json").read_text(encoding="utf-8"))
            coll = db.create_collection(c["collection"], **dict(metadata.get("options") or {}))
            raw = coll.with_options(codec_options=RAW)
            batch: list[RawBSONDocument] = []
            for doc in _documents(Path(f"{base}.bson")):
                batch.append(doc)
                size += len(doc.raw)
                if len(batch) >= BATCH:
                    raw.insert_many(batch, ordered=True)
                    documents += len(batch)
                    batch = []
            if batch:
                raw.insert_many(batch, ordered=True)
                documents += len(batch)
            if models := _index_models(metadata.get("indexes") or []):
                coll.create_indexes(models)
    return Timing(time.monotonic() - t0, documents, size)


def verify(uri: str, folder: Path, *, rename: dict[str, str] | None = None) -> list[str]:
    """Differences between the server's databases and the dump: every dumped collection's
    documents (the same bytes in _id order), count and index names; extra collections. An
    empty list means the server holds exactly what was dumped."""
    manifest = read_manifest(Path(folder))
    rename = rename or {}
    problems: list[str] = []
    with _client(uri) as client:
        for name in manifest["databases"]:
            db = client[rename.get(name, name)]
            dumped = {c["collection"] for c in manifest["collections"] if c["database"] == name}
            extra = sorted(set(db.list_collection_names()) - dumped)
            problems += [
                f"{db.name}.{n}: not in the dump" for n in extra if not n.startswith("system.")
            ]
        for c in manifest["collections"]:
            db = client[rename.get(c["database"], c["database"])]
            coll: Collection[RawBSONDocument] = db[c["collection"]].with_options(codec_options=RAW)
            where = f"{db.name}.{c['collection']}"
            digest = hashlib.sha256()
            count = 0
            for doc in coll.find({}, sort=[("_id", 1)], batch_size=BATCH):
                digest.update(doc.raw)
                count += 1
            if count != c["count"]:
                problems.append(f"{where}: {count} documents, the dump has {c['count']}")
            elif digest.hexdigest() != c["sha256"]:
                problems.append(f"{where}: documents differ from the dump's")
            meta_path = Path(folder) / c["database"] / f"{c['collection']}.metadata.json"
            meta = json_util.loads(meta_path.read_text(encoding="utf-8"))
            want = sorted(str(ix["name"]) for ix in meta.get("indexes") or [])
            have = sorted(str(ix["name"]) for ix in coll.list_indexes())
            if want != have:
                problems.append(f"{where}: indexes {have}, the dump has {want}")
    return problems


# --- command line ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m medbench_devstack.backup", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump", help="write a dump of both databases")
    d.add_argument("--uri", required=True, help="MongoDB URI (a user that may read both)")
    d.add_argument("--database", default="medbench", help="MEDBENCH_MONGO__DATABASE")
    d.add_argument("--sealed-database", default="", help="MEDBENCH_MONGO__SEALED_DATABASE")
    d.add_argument("--out", required=True, type=Path, help="an empty or new folder")
    d.add_argument("--kafka", default="", help="bootstrap servers: record consumer offsets")
    d.add_argument("--topic-prefix", default="", help="MEDBENCH_KAFKA__TOPIC_PREFIX")
    r = sub.add_parser("restore", help="restore a dump into a server without those databases")
    r.add_argument("--uri", required=True)
    r.add_argument("--from", dest="folder", required=True, type=Path)
    r.add_argument(
        "--rewind-offsets",
        action="store_true",
        help="move consumer groups back to the dump's offsets where ahead (services stopped; "
        "needs --kafka)",
    )
    r.add_argument("--kafka", default="")
    v = sub.add_parser("verify", help="compare a server's databases with a dump")
    v.add_argument("--uri", required=True)
    v.add_argument("--from", dest="folder", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "dump":
            names = database_names(args.database, args.sealed_database)
            t = dump(args.uri, names, args.out, args.kafka, args.topic_prefix)
            print(
                f"dumped {t.documents} documents of {', '.join(names)} to {args.out}: "
                f"{t.bytes} bytes in {t.seconds:.2f} s"
            )
        elif args.command == "restore":
            if args.rewind_offsets and not args.kafka:
                parser.error("--rewind-offsets needs --kafka")
            t = restore(args.uri, args.folder)
            print(f"restored {t.documents} documents ({t.bytes} bytes) in {t.seconds:.2f} s")
            if args.rewind_offsets:
                recorded = read_manifest(args.folder)["kafka"]["consumer_offsets"]
                moved = rewind_offsets(args.kafka, recorded)
                print(f"rewound {sum(len(m) for m in moved.values())} partitions: {moved}")
        else:
            problems = verify(args.uri, args.folder)
            for p in problems:
                print(p)
            print("identical to the dump" if not problems else f"{len(problems)} differences")
            return 1 if problems else 0
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
