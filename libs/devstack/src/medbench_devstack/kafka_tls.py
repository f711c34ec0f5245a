"""A throwaway TLS authority and SCRAM users for a local SASL_SSL Kafka broker (tests only).

The CA and the broker's key live in the broker's work dir and die with it: nothing here is fit
for a real deployment, where the certificates come from the cluster's own CA (cert-manager,
the Kafka operator) and the users from the operator's KafkaUser objects.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from medbench_devstack.errors import DevstackError

# The user the broker itself authenticates as on its inter-broker listener.
BROKER_USER = "broker"
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_VALIDITY = dt.timedelta(days=2)


@dataclass(frozen=True)
class ThrowawayPki:
    """PEM files: the CA certificate, and the broker's key followed by its certificate chain
    (what Kafka's ssl.keystore.type=PEM reads)."""

    ca_file: Path
    keystore_file: Path
    # Client certificates signed by the same CA (key, then certificate), by name.
    client_files: dict[str, Path] = field(default_factory=dict)


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    common_name: str,
    names: list[x509.GeneralName],
    now: dt.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _key_and_chain(key: ec.EllipticCurvePrivateKey, *certs: x509.Certificate) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ) + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def make_test_pki(
    directory: Path,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    clients: tuple[str, ...] = (),
) -> ThrowawayPki:
    """A fresh CA and a server certificate for `hosts` (IP addresses or DNS names), signed by
    it, and a client certificate per name in `clients`; P-256 keys, valid for two days."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "medbench devstack test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key, cert = _leaf(ca_key, ca_name, hosts[0], names, now)
    pki = ThrowawayPki(directory / "ca.pem", directory / "broker-keystore.pem")
    pki.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(pki.keystore_file, _key_and_chain(key, cert, ca_cert))
    for name in clients:
        client_key, client_cert = _leaf(ca_key, ca_name, name, [], now)
        pki.client_files[name] = directory / f"{name}-client.pem"
        _write_private(pki.client_files[name], _key_and_chain(client_key, client_cert))
    return pki


@dataclass(frozen=True)
class SaslSsl:
    """A broker whose client port takes SCRAM-SHA-512 over TLS only. `users` maps names to
    passwords ([A-Za-z0-9._-]); the broker's own inter-broker user is added with a random
    password."""

    users: dict[str, str]
    broker_password: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def __post_init__(self) -> None:
        if not self.users:
            raise DevstackError("SaslSsl needs at least one user")
        for name, password in self.users.items():
            if not (_NAME.match(name) and _NAME.match(password)):
                raise DevstackError(
                    f"SCRAM user {name!r}: names and passwords are limited to [A-Za-z0-9._-]"
                )
        if BROKER_USER in self.users:
            raise DevstackError(f"SCRAM user {BROKER_USER!r} is the broker's own")

    def write_users(self, path: Path) -> Path:
        """The users file of kafka-test-broker.sh (the broker's own user first), mode 0600."""
        lines = [f"{BROKER_USER} {self.broker_password}"]
        lines += [f"{n} {p}" for n, p in self.users.items()]
        _write_private(path, ("\n".join(lines) + "\n").encode())
        return path
