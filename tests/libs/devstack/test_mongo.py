"""A real MongoDB-wire server process: CRUD, multi-document transactions, failure reasons."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient

from medbench_devstack import DevstackError, MongoWireServer
from medbench_devstack.ports import port_is_open


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoWireServer]:
    srv = MongoWireServer(tmp_path_factory.mktemp("mongo"))
    srv.start(timeout_s=30)
    yield srv
    srv.stop()
    # stop() must really free the port, whatever the tests did to the server
    assert not srv.alive() and not port_is_open(srv.port)


def _client(srv: MongoWireServer) -> MongoClient[dict[str, object]]:
    return MongoClient(srv.uri, serverSelectionTimeoutMS=5000)


def test_insert_and_read(server: MongoWireServer) -> None:
    assert server.uri == f"mongodb://127.0.0.1:{server.port}/?directConnection=true"
    with _client(server) as client:
        coll = client["devstack_test"]["things"]
        inserted = coll.insert_one({"name": "alpha", "n": 1}).inserted_id
        coll.insert_many([{"name": "beta", "n": 2}, {"name": "gamma", "n": 3}])
        doc = coll.find_one({"_id": inserted})
        assert doc is not None and doc["name"] == "alpha"
        assert [d["name"] for d in coll.find({"n": {"$gte": 2}}).sort("n", 1)] == [
            "beta",
            "gamma",
        ]


def test_multi_document_transaction(server: MongoWireServer) -> None:
    with _client(server) as client:
        db = client["devstack_tx"]
        accounts, ledger = db["accounts"], db["ledger"]
        accounts.insert_many([{"_id": "a", "balance": 10}, {"_id": "b", "balance": 0}])
        ledger.insert_one({"_id": "seed"})  # collections exist before the transaction

        with client.start_session() as session, session.start_transaction():
            accounts.update_one({"_id": "a"}, {"$inc": {"balance": -4}}, session=session)
            accounts.update_one({"_id": "b"}, {"$inc": {"balance": 4}}, session=session)
            ledger.insert_one({"_id": "t1", "amount": 4}, session=session)
            # not visible outside the session until commit
            assert ledger.find_one({"_id": "t1"}) is None

        assert accounts.find_one({"_id": "a"})["balance"] == 6  # type: ignore[index]
        assert accounts.find_one({"_id": "b"})["balance"] == 4  # type: ignore[index]
        assert ledger.find_one({"_id": "t1"}) is not None

        with client.start_session() as session:
            session.start_transaction()
            accounts.update_one({"_id": "a"}, {"$set": {"balance": 999}}, session=session)
            ledger.insert_one({"_id": "t2"}, session=session)
            session.abort_transaction()
        assert accounts.find_one({"_id": "a"})["balance"] == 6  # type: ignore[index]
        assert ledger.find_one({"_id": "t2"}) is None


def test_kill9_then_restart_keeps_acknowledged_data_and_port(server: MongoWireServer) -> None:
    with _client(server) as client:
        client["d"]["c"].insert_one({"_id": 1})
    port, pid = server.port, server.pid
    server.kill(signal.SIGKILL)
    assert server.process is not None and server.process.wait_exit(5) == -signal.SIGKILL
    assert not port_is_open(port)
    server.restart(timeout_s=30)
    assert server.port == port and server.pid not in (None, pid)
    with _client(server) as client:
        assert client["d"]["c"].find_one({"_id": 1}) == {"_id": 1}


def test_missing_executable_is_named(tmp_path: Path) -> None:
    srv = MongoWireServer(tmp_path, executable="/nonexistent/bin/secantusd-py")
    with pytest.raises(DevstackError, match="cannot run '/nonexistent/bin/secantusd-py'"):
        srv.start(timeout_s=5)


def test_port_in_use_fails_with_reason(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        srv = MongoWireServer(tmp_path, port=squatter.getsockname()[1])
        with pytest.raises(DevstackError) as info:
            srv.start(timeout_s=10)
    assert "secantusd-py on port" in str(info.value)
    assert not srv.alive()
