"""MongoDB over TLS with SCRAM-SHA-256: the URI carries the user and `tls=true`, the settings
the TLS files. Against a real Mongo-wire server (secantusd-py) started with --auth and
--tls-require-client-cert."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr
from pymongo import MongoClient
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError

from medbench_devstack.kafka_tls import ThrowawayPki, make_test_pki
from medbench_devstack.mongo import find_secantusd
from medbench_devstack.ports import LOOPBACK, free_port, port_is_open
from medbench_devstack.processes import ManagedProcess
from medbench_runtime.settings import MongoSettings
from medbench_storage.client import connect, ping, tls_options

pytestmark = [pytest.mark.integration]
USER, PASSWORD, DB = "app", "app-Scram-256-pw", "tlsdb"


def test_tls_files_turn_tls_on_and_reach_the_client() -> None:
    assert tls_options(MongoSettings()) == {}
    settings = MongoSettings(
        uri="mongodb://u:p@db:27017/?authSource=admin&authMechanism=SCRAM-SHA-256",
        tls_ca_file="/etc/medbench/mongo-ca/ca.crt",
        tls_certificate_key_file="/etc/medbench/mongo-client/tls.pem",
    )
    assert tls_options(settings) == {
        "tls": True,
        "tlsCAFile": "/etc/medbench/mongo-ca/ca.crt",
        "tlsCertificateKeyFile": "/etc/medbench/mongo-client/tls.pem",
    }


@dataclass(frozen=True)
class TlsMongo:
    port: int
    pki: ThrowawayPki

    def uri(self, password: str = PASSWORD, tls: bool = True) -> str:
        return (
            f"mongodb://{USER}:{password}@{LOOPBACK}:{self.port}/?directConnection=true"
            f"&authSource=admin&authMechanism=SCRAM-SHA-256{'&tls=true' if tls else ''}"
        )


def _serve(work: Path, port: int, *flags: str) -> ManagedProcess:
    exe = find_secantusd()
    assert exe, "secantusd-py not installed (uv sync installs it)"
    config = work / "secantusd.toml"
    config.write_text("# flags only\n")
    proc = ManagedProcess(
        "secantusd",
        [exe, "--config", str(config), "--host", LOOPBACK, "--port", str(port),
         "--storage-path", str(work / "data"), *flags],
        dict(os.environ),
        work / "secantusd.log",
        cwd=work,
    )  # fmt: skip
    proc.start()
    deadline = time.monotonic() + 30
    while not port_is_open(port):
        assert proc.alive() and time.monotonic() < deadline, proc.tail(20)
        time.sleep(0.05)
    return proc


@pytest.fixture(scope="module")
def tls_mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsMongo]:
    """Provisions a SCRAM user without auth (as mongod's localhost exception would), then
    serves the same data with --auth and TLS that requires a client certificate."""
    work = tmp_path_factory.mktemp("mongo-tls")
    pki = make_test_pki(work / "tls", (LOOPBACK, "localhost"), clients=(USER,))
    port = free_port()
    proc = _serve(work, port)
    try:
        client: MongoClient[dict[str, object]] = MongoClient(
            f"mongodb://{LOOPBACK}:{port}/?directConnection=true", serverSelectionTimeoutMS=10_000
        )
        client.admin.command(
            "createUser", USER, pwd=PASSWORD, roles=[{"role": "readWrite", "db": DB}]
        )
        client.close()
    finally:
        proc.terminate(10)
    server = str(pki.keystore_file)  # key and certificate chain in one PEM file
    proc = _serve(
        work, port, "--auth", "--tls-cert-file", server, "--tls-key-file", server,
        "--tls-ca-file", str(pki.ca_file), "--tls-require-client-cert",
    )  # fmt: skip
    try:
        yield TlsMongo(port, pki)
    finally:
        proc.terminate(10)


async def _roundtrip(settings: MongoSettings) -> int:
    async with connect(settings) as client:
        await ping(client)
        await client[DB]["t"].insert_one({"a": 1})
        return await client[DB]["t"].count_documents({})


def test_scram_over_tls_with_a_client_certificate(tls_mongo: TlsMongo) -> None:
    client_pem = str(tls_mongo.pki.client_files[USER])
    ok = MongoSettings(
        uri=tls_mongo.uri(),
        tls_ca_file=str(tls_mongo.pki.ca_file),
        tls_certificate_key_file=client_pem,
        server_selection_timeout_s=5,
    )
    assert asyncio.run(_roundtrip(ok)) >= 1
    # The TLS files alone turn TLS on (the URI without tls=true).
    files_only = ok.model_copy(update={"uri": SecretStr(tls_mongo.uri(tls=False))})
    assert asyncio.run(_roundtrip(files_only)) >= 2
    # Wrong password: the server's refusal, over TLS.
    wrong = ok.model_copy(update={"uri": SecretStr(tls_mongo.uri(password="not-the-password"))})
    with pytest.raises(OperationFailure, match="uthentication failed"):
        asyncio.run(_roundtrip(wrong))
    quick = {"server_selection_timeout_s": 5.0}
    # Not our CA: the server's certificate is refused.
    with pytest.raises(ServerSelectionTimeoutError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(_roundtrip(ok.model_copy(update={"tls_ca_file": "", **quick})))
    # No client certificate: the server requires one (it ends the handshake; what the driver
    # reports depends on when the alert arrives).
    with pytest.raises(ServerSelectionTimeoutError):
        asyncio.run(_roundtrip(ok.model_copy(update={"tls_certificate_key_file": "", **quick})))
