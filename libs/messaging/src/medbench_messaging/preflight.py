"""A broker's answer to the service's transport security settings, checked once at start.

kafka-python retries a refused TLS handshake or SASL login like a broker outage, until it gives
up with "Unable to bootstrap"; this check names the cause instead: a certificate not signed by
MEDBENCH_KAFKA__SSL_CAFILE, a plaintext client on a TLS port (or the reverse), a listener that
needs SASL, a mechanism the listener does not enable, credentials the broker refused (its own
reason). A broker that cannot be reached, or answers in a way this check does not know, passes:
the clients wait those out as before. Passwords are never part of a message.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
from typing import Any

from kafka.net.sasl import get_sasl_mechanism

from medbench_messaging.security import KafkaSecurityError, client_options
from medbench_runtime.settings import KafkaSettings

_API_VERSIONS = 18
_METADATA = 3
_SASL_HANDSHAKE = 17
_SASL_AUTHENTICATE = 36
_CLIENT_ID = b"medbench-preflight"
_MAX_RESPONSE = 1 << 20


class _Closed(Exception):
    """The broker closed the connection instead of answering."""


class _Wire:
    """Kafka requests (header v1, non-flexible versions) over one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._correlation = 0

    def call(self, api_key: int, version: int, body: bytes) -> bytes:
        self._correlation += 1
        header = struct.pack(">hhih", api_key, version, self._correlation, len(_CLIENT_ID))
        payload = header + _CLIENT_ID + body
        try:
            self.sock.sendall(struct.pack(">i", len(payload)) + payload)
            size = struct.unpack(">i", self._read(4))[0]
            if not 4 <= size <= _MAX_RESPONSE:
                raise _Closed(f"a response of {size} bytes")
            data = self._read(size)
        except (ConnectionError, ssl.SSLError) as exc:
            raise _Closed(str(exc) or type(exc).__name__) from None
        return data[4:]  # past the correlation id

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise _Closed("closed by the broker")
            out += chunk
        return out


def _string(data: bytes, at: int) -> tuple[str | None, int]:
    (n,) = struct.unpack_from(">h", data, at)
    if n < 0:
        return None, at + 2
    return data[at + 2 : at + 2 + n].decode("utf-8", "replace"), at + 2 + n


def _kafka_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def _tls_context(options: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.get("ssl_cafile"))
    context.check_hostname = bool(options.get("ssl_check_hostname", True))
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    return context


def _speaks_tls(host: str, port: int, timeout_s: float) -> bool:
    """Whether host:port completes a TLS handshake (certificate not checked)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False


def _split(server: str) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    return host.strip("[]") or server, int(port or 9092)


def _check_server(settings: KafkaSettings, options: dict[str, Any], server: str, t: float) -> None:
    host, port = _split(server)
    protocol = settings.security_protocol
    where = f"Kafka broker {host}:{port}"
    setting = f"MEDBENCH_KAFKA__SECURITY_PROTOCOL={protocol}"
    try:
        sock = socket.create_connection((host, port), t)
    except OSError:
        return  # unreachable: an outage, waited out by the clients
    with contextlib.ExitStack() as stack:
        stack.callback(sock.close)
        if protocol.endswith("SSL"):
            try:
                sock = _tls_context(options).wrap_socket(sock, server_hostname=host)
            except ssl.SSLCertVerificationError as exc:
                ca = settings.ssl_cafile or "the system's CAs"
                raise KafkaSecurityError(
                    f"{where}: TLS certificate refused ({exc.verify_message}); "
                    f"MEDBENCH_KAFKA__SSL_CAFILE ({ca}) must hold the CA that signed it"
                    + (
                        " and the certificate must name the host connected to"
                        if "match" in (exc.verify_message or "")
                        else ""
                    )
                ) from None
            except (ssl.SSLError, ConnectionError) as exc:
                raise KafkaSecurityError(
                    f"{where}: no TLS handshake ({getattr(exc, 'reason', None) or exc}): the port "
                    f"does not speak TLS, but {setting}; use PLAINTEXT or SASL_PLAINTEXT for it, "
                    "or the broker's TLS port"
                ) from None
            except OSError:
                return
            stack.callback(sock.close)
        wire = _Wire(sock)
        try:
            wire.call(_API_VERSIONS, 0, b"")
        except _Closed:
            if not protocol.endswith("SSL") and _speaks_tls(host, port, t):
                raise KafkaSecurityError(
                    f"{where}: the port speaks TLS, but {setting}; use SSL or SASL_SSL "
                    "(with MEDBENCH_KAFKA__SSL_CAFILE)"
                ) from None
            return
        except OSError:
            return
        try:
            if protocol.startswith("SASL_"):
                _login(settings, options, wire, where, host)
            else:
                # All topics' metadata: refused by a listener that wants SASL first.
                try:
                    wire.call(_METADATA, 0, struct.pack(">i", 0))
                except _Closed:
                    raise KafkaSecurityError(
                        f"{where}: the connection was closed before any SASL login: the "
                        f"listener requires SASL, but {setting}; use SASL_SSL or "
                        "SASL_PLAINTEXT with MEDBENCH_KAFKA__SASL_USERNAME and a password"
                    ) from None
        except OSError:
            return


def _login(
    settings: KafkaSettings, options: dict[str, Any], wire: _Wire, where: str, host: str
) -> None:
    mechanism_name = settings.sasl_mechanism
    try:
        reply = wire.call(_SASL_HANDSHAKE, 1, _kafka_string(mechanism_name))
    except _Closed:
        raise KafkaSecurityError(
            f"{where}: the SASL handshake was refused (the listener does not take SASL?), but "
            f"MEDBENCH_KAFKA__SECURITY_PROTOCOL={settings.security_protocol}"
        ) from None
    (error,) = struct.unpack_from(">h", reply, 0)
    if error:
        (count,) = struct.unpack_from(">i", reply, 2)
        at, offered = 6, []
        for _ in range(max(count, 0)):
            name, at = _string(reply, at)
            offered.append(name or "")
        raise KafkaSecurityError(
            f"{where}: SASL mechanism {mechanism_name} is not enabled on this listener "
            f"(it offers {', '.join(offered) or 'none'}); set MEDBENCH_KAFKA__SASL_MECHANISM"
        )
    mechanism = get_sasl_mechanism(mechanism_name)(host=host, **options)
    user = settings.sasl_username
    while not mechanism.is_done():
        token = mechanism.auth_bytes()
        try:
            reply = wire.call(_SASL_AUTHENTICATE, 0, struct.pack(">i", len(token)) + token)
        except _Closed:
            raise KafkaSecurityError(
                f"{where}: SASL {mechanism_name} login as {user!r} failed: the broker closed "
                "the connection (wrong username or password?)"
            ) from None
        (error,) = struct.unpack_from(">h", reply, 0)
        message, at = _string(reply, 2)
        if error:
            raise KafkaSecurityError(
                f"{where}: SASL {mechanism_name} login as {user!r} refused: "
                f"{message or f'error code {error}'} (check MEDBENCH_KAFKA__SASL_USERNAME and "
                "the password)"
            )
        (n,) = struct.unpack_from(">i", reply, at)
        mechanism.receive(reply[at + 4 : at + 4 + max(n, 0)])
    if not mechanism.is_authenticated():
        raise KafkaSecurityError(
            f"{where}: SASL {mechanism_name} login as {user!r} failed: the broker's proof did "
            "not check out (is this the broker you meant?)"
        )


def check_broker(settings: KafkaSettings, timeout_s: float = 10.0) -> None:
    """Raises KafkaSecurityError when a bootstrap server refuses the settings' TLS or SASL (or
    needs what they leave out); returns when one accepts them or none can be reached."""
    options = client_options(settings)
    for server in settings.bootstrap_servers.split(","):
        if server.strip():
            _check_server(settings, options, server, timeout_s)
            return
