"""Mutual TLS on the gateway: a partner's client certificate must come from the configured CA
and name a subject bound to its key's tenant; the API key is still required."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from medbench.identity.v1 import access_pb2, identity_service_pb2
from medbench.identity.v1 import identity_service_pb2_grpc as identity_grpc
from medbench_client.api import channel
from medbench_devstack.services import ServiceSpec, ServiceStack
from tests.conftest import Servers

pytestmark = [pytest.mark.e2e]

BOUND, UNBOUND = "hospital-tls.example.org", "someone-else.example.org"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def issue(folder: Path, name: str, subject: str, server: bool = False) -> None:
    """A P-256 key and a certificate for subject signed by the test CA."""
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={subject}",
        cwd=folder,
    )  # fmt: skip
    extensions = folder / f"{name}.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server else "extendedKeyUsage=clientAuth\n"
    )
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", extensions.name,
        cwd=folder,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("pki")
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=medbench test CA",
        cwd=folder,
    )  # fmt: skip
    issue(folder, "server", "localhost", server=True)
    issue(folder, "bound", BOUND)
    issue(folder, "unbound", UNBOUND)
    return folder


def credentials(pki: Path, client: str | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / f"{client}.key").read_bytes() if client else None,
        certificate_chain=(pki / f"{client}.pem").read_bytes() if client else None,
    )


@pytest.fixture(scope="module")
def tls_gateway(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory, pki: Path
) -> Iterator[ServiceStack]:
    # Unique across sessions too (servers given by MEDBENCH_MONGO__URI outlive a session).
    token = uuid.uuid4().hex[:8]
    stack = ServiceStack(
        tmp_path_factory.mktemp("tls-stack"),
        servers.mongo_uri,
        f"tls_{token}",
        servers.kafka_bootstrap,
        f"tls{token}.",
        specs=[ServiceSpec("gateway", "gateway")],
        service_env={
            "gateway": {
                "MEDBENCH_AUTH__TLS_CERT_FILE": str(pki / "server.pem"),
                "MEDBENCH_AUTH__TLS_KEY_FILE": str(pki / "server.key"),
                "MEDBENCH_AUTH__TLS_CLIENT_CA_FILE": str(pki / "ca.pem"),
            }
        },
        health_credentials={"gateway": credentials(pki, "bound")},
    )
    stack.start(timeout_s=90)
    try:
        yield stack
    finally:
        stack.stop()


def stub(
    stack: ServiceStack, pki: Path, client: str | None, key: str | None
) -> identity_grpc.IdentityServiceStub:
    return identity_grpc.IdentityServiceStub(
        channel(stack.address("gateway"), key, credentials(pki, client))
    )


async def code(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()


async def test_a_partner_needs_a_certificate_bound_to_its_tenant(
    tls_gateway: ServiceStack, pki: Path
) -> None:
    # The maintainer (not a partner: no binding needed) sets the tenant up over TLS.
    admin = stub(tls_gateway, pki, "unbound", tls_gateway.admin_key)
    await admin.CreateTenant(
        identity_service_pb2.CreateTenantRequest(tenant_id="tls-t", certificate_subjects=[BOUND])
    )
    made = await admin.CreateApiKey(
        identity_service_pb2.CreateApiKeyRequest(
            tenant_id="tls-t", role=access_pb2.ROLE_PARTNER_SUBMITTER
        )
    )
    whoami = identity_service_pb2.WhoAmIRequest()
    me = await stub(tls_gateway, pki, "bound", made.secret).WhoAmI(whoami)
    assert me.tenant_id == "tls-t"
    # The right key from a certificate bound to no tenant of it: refused.
    wrong_cert = stub(tls_gateway, pki, "unbound", made.secret).WhoAmI(whoami)
    assert await code(wrong_cert) == grpc.StatusCode.UNAUTHENTICATED
    # The right certificate without a key: refused.
    assert await code(stub(tls_gateway, pki, "bound", None).WhoAmI(whoami)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    # No client certificate, or no TLS at all: no connection.
    assert await code(stub(tls_gateway, pki, None, made.secret).WhoAmI(whoami)) == (
        grpc.StatusCode.UNAVAILABLE
    )
    plain = identity_grpc.IdentityServiceStub(channel(tls_gateway.address("gateway"), made.secret))
    assert await code(plain.WhoAmI(whoami)) == grpc.StatusCode.UNAVAILABLE
