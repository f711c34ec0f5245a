"""API mode cannot be turned against the platform: the egress policy of partners' endpoints.

Unit level: the URL form, every address class, the resolver step with an injected resolver
(including DNS that changes between check and connect), TLS checked against the host name.
End to end (a stack with the production default policy): every SSRF target class is refused at
CreateSubmission with INVALID_ARGUMENT, and a real TCP listener on loopback sees no connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest

from medbench.common.v1 import common_pb2
from medbench.dispatch.v1 import dispatch_service_pb2, dispatch_service_pb2_grpc
from medbench.submission.v1 import submission_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_client.api import AdminClient, PartnerClient
from medbench_client.bank_files import import_item, read_jsonl
from medbench_devstack.services import ServiceStack
from medbench_runtime.egress import (
    BadEndpointUrl,
    EgressPolicy,
    EgressRefused,
    EgressSettings,
    NameNotResolved,
    PortSet,
    parse_endpoint_url,
)
from medbench_runtime.http_client import HttpClient, HttpError
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
from tests.e2e.harness import admin_channel, partner_client, service_channel

BANK = Path(__file__).resolve().parents[2] / "services/rotator/src/rotator/sample_bank"
ANY_PORT = PortSet.parse("1-65535")
Reply = Callable[[bytes], Iterable[bytes]]


# -- a real listener ------------------------------------------------------------------------


def ok_json(payload: object, status: str = "200 OK") -> list[bytes]:
    body = json.dumps(payload).encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return [head.encode(), body]


class Listener:
    """A real TCP listener: counts connections, keeps each request's head and body, and
    answers with reply(request) (pieces sent in turn, then the connection closes)."""

    def __init__(self, host: str, port: int = 0, reply: Reply | None = None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.host = host
        self.port = self._sock.getsockname()[1]
        self.reply = reply or (lambda head: ok_json({"error": {"message": "nothing here"}}))
        self.connections = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.sent = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, body = data.split(b"\r\n\r\n", 1)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:  # read it all: unread bytes would reset the reply
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    body += chunk
                with self._lock:
                    self.heads.append(head)
                    self.bodies.append(body)
                for piece in self.reply(head + b"\r\n\r\n" + body):
                    conn.sendall(piece)
                    with self._lock:
                        self.sent += len(piece)
            except OSError as exc:  # the client cut the reply: expected for oversized ones
                self.errors.append(type(exc).__name__)

    def close(self) -> None:
        self._closed.set()
        self._sock.close()
        self._thread.join(5)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bind_in_range(
    hosts: list[str], low: int = 8000, high: int = 8999, reply: Reply | None = None
) -> list[Listener]:
    """Listeners on the same free port within [low, high] on every host (the default policy's
    ports, so that only the address can be what refuses)."""
    ports = list(range(low, high + 1))
    random.shuffle(ports)
    for port in ports:
        made: list[Listener] = []
        try:
            for host in hosts:
                made.append(Listener(host, port, reply))
        except OSError:
            for listener in made:
                listener.close()
            continue
        return made
    raise RuntimeError(f"no free port within {low}-{high} on {hosts}")


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# -- unit: the URL form ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://user@example.com/v1", "userinfo"),
        ("http://a@127.0.0.1/v1", "userinfo"),
        ("http://user:pw@example.com/v1", "userinfo"),
        ("http://example.com/v1?x=", "query"),
        ("http://example.com/v1?", "query"),
        ("http://example.com/v1#top", "fragment"),
        ("http://example.com/a b HTTP/1.0\x0bX: y", "control character (U+000B)"),
        ("http://example.com/a\x00b", "control character (U+0000)"),
        ("http://example.com/a\x7fb", "control character (U+007F)"),
        ("http://example.com/a\r\nHost: evil", "control character (U+000D)"),
        ("http://example.com\x85/v1", "control character (U+0085)"),
        ("http://example.com\\@127.0.0.1/v1", "backslash"),
        ("ftp://example.com/v1", "http:// or https://"),
        ("example.com/v1", "http:// or https://"),
        ("http:///v1", "no host"),
        ("http://2130706433/v1", "numeric form"),
        ("http://0177.0.0.1/v1", "numeric form"),
        ("http://0x7f.0.0.1/v1", "numeric form"),
        ("http://0x7f000001/v1", "numeric form"),
        ("http://127.1/v1", "numeric form"),
        ("http://127.0.0.01/v1", "numeric form"),
        ("http://1.2.3.4.5/v1", "numeric form"),
        ("http://example.com:0/v1", "port '0'"),
        ("http://example.com:65536/v1", "port '65536'"),
        ("http://example.com:+80/v1", "port '+80'"),
        ("http://example.com:8o/v1", "port '8o'"),
        ("http://example.com:80:80/v1", "more than one ':'"),
        ("http://[fe80::1%25eth0]/v1", "zone id"),
        ("http://[::1/v1", "closing ']'"),
        ("http://[1:2:3]/v1", "not an IPv6 address"),
        ("http://exa_mple.com/v1", "not a valid DNS name"),
        ("http://a..b/v1", "not a valid DNS name"),
        ("http://a..bü/v1", "not a valid domain name"),
        ("http://" + "a" * 64 + ".com/v1", "not a valid DNS name"),
        ("http://example.com/" + "a" * 2048, "longer than 2048"),
    ],
)
def test_unusable_urls_are_refused_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(BadEndpointUrl) as err:
        parse_endpoint_url(url)
    assert problem in str(err.value)


@pytest.mark.parametrize(
    ("url", "normalised", "target"),
    [
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1", "/v1"),
        ("HTTPS://Api.Example.COM:443/v1/", "https://api.example.com/v1", "/v1"),
        ("http://example.com:80", "http://example.com", "/"),
        (
            'http://example.com/a b/"<>^`{|}',
            "http://example.com/a%20b/%22%3C%3E%5E%60%7B%7C%7D",
            "",
        ),
        ("http://example.com/%7e%zz/%41", "http://example.com/%7E%25zz/%41", ""),
        ("http://example.com/模型/v1", "http://example.com/%E6%A8%A1%E5%9E%8B/v1", ""),
        ("http://bücher.example/v1", "http://xn--bcher-kva.example/v1", "/v1"),
        ("http://[::FFFF:127.0.0.1]:8000/v1", "http://[::ffff:7f00:1]:8000/v1", "/v1"),
        ("http://localhost.:8000/v1", "http://localhost:8000/v1", "/v1"),
    ],
)
def test_urls_are_normalised_and_their_paths_percent_encoded(
    url: str, normalised: str, target: str
) -> None:
    parsed = parse_endpoint_url(url)
    assert parsed.url == normalised
    assert all("!" <= c <= "~" for c in parsed.target)
    if target:
        assert parsed.target == target


def test_full_width_digits_are_the_address_they_spell() -> None:
    parsed = parse_endpoint_url("http://１２７．０．０．１:8000/v1")
    assert parsed.ip == ipaddress.ip_address("127.0.0.1")
    with pytest.raises(EgressRefused, match="loopback"):
        EgressPolicy().check_static(parsed)


# -- unit: addresses and ports --------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "shared"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "private"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "carries 127.0.0.1, loopback"),
        ("::ffff:169.254.169.254", "carries 169.254.169.254, link-local"),
        ("::127.0.0.1", "carries 127.0.0.1, loopback"),
        ("::10.0.0.1", "carries 10.0.0.1, private"),
        ("64:ff9b::a00:1", "carries 10.0.0.1, private"),
        ("2002:7f00:1::1", "carries 127.0.0.1, loopback"),
        ("2002:a9fe:a9fe::1", "carries 169.254.169.254, link-local"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("fc00::1", "private"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "private"),
    ],
)
def test_every_non_public_address_class_is_refused(address: str, kind: str) -> None:
    with pytest.raises(EgressRefused) as err:
        EgressPolicy().check_address(ipaddress.ip_address(address))
    assert "not a public address" in str(err.value) and kind in str(err.value)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "64:ff9b::808:808"])
def test_public_addresses_pass(address: str) -> None:
    EgressPolicy().check_address(ipaddress.ip_address(address))


def test_the_allow_list_lifts_a_refusal_and_deny_ranges_win() -> None:
    settings = EgressSettings(allow_cidrs="10.20.0.0/16, ::1/128", deny_cidrs="10.20.30.0/24")
    policy = settings.policy()
    policy.check_address(ipaddress.ip_address("10.20.1.1"))
    policy.check_address(ipaddress.ip_address("::ffff:10.20.1.1"))  # the same host, mapped
    policy.check_address(ipaddress.ip_address("::1"))
    for address in ("10.20.30.5", "::ffff:10.20.30.5", "10.21.0.1", "127.0.0.1"):
        with pytest.raises(EgressRefused):
            policy.check_address(ipaddress.ip_address(address))
    public_deny = EgressPolicy.from_spec(deny_cidrs="8.8.8.0/24")
    with pytest.raises(EgressRefused, match="denied range"):
        public_deny.check_address(ipaddress.ip_address("8.8.8.8"))


def test_ports_outside_the_set_are_refused_and_the_default_set_is_documented() -> None:
    policy = EgressPolicy()
    assert str(policy.ports) == "80,443,8000-8999"
    for port in (80, 443, 8000, 8080, 8999):
        policy.check_port(port)
    for port in (22, 25, 6379, 7999, 9000, 9092, 9090, 11434, 27017, 50051, 65535):
        with pytest.raises(EgressRefused, match=f"port {port} "):
            policy.check_port(port)


@pytest.mark.parametrize(
    ("field", "value"),
    [("allow_cidrs", "10.0.0.1/8"), ("deny_cidrs", "nope"), ("ports", "0"), ("ports", "90-80")],
)
def test_bad_settings_fail_at_start(field: str, value: str) -> None:
    with pytest.raises(ValueError):
        EgressSettings(**{field: value})


# -- unit: the resolver step ----------------------------------------------------------------


class Resolver:
    """An injected resolver: answers[host] is a list of answers, one per lookup (the last one
    repeats); counts lookups."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        seq = self.answers[host]
        return seq[min(len([h for h in self.lookups if h == host]), len(seq)) - 1]


@pytest.mark.parametrize(
    ("answers", "kind"),
    [
        (["127.0.0.1"], "loopback"),
        (["10.1.2.3"], "private"),
        (["169.254.169.254"], "link-local"),
        (["fe80::1%eth0"], "link-local"),
        (["::ffff:127.0.0.1"], "loopback"),
        (["8.8.8.8", "10.0.0.1"], "private"),  # one refused address refuses the name
    ],
)
async def test_a_name_resolving_to_a_refused_address_is_refused(
    answers: list[str], kind: str
) -> None:
    policy = EgressPolicy(resolver=Resolver({"model.partner.example": [answers]}))
    with pytest.raises(EgressRefused) as err:
        await policy.addresses("model.partner.example", 443)
    assert "model.partner.example resolves to" in str(err.value) and kind in str(err.value)


async def test_a_public_name_gives_its_checked_addresses_and_a_missing_one_does_not_resolve() -> (
    None
):
    policy = EgressPolicy(resolver=Resolver({"api.example": [["8.8.8.8", "8.8.8.8", "1.1.1.1"]]}))
    assert [str(a) for a in await policy.addresses("api.example", 443)] == ["8.8.8.8", "1.1.1.1"]
    with pytest.raises(NameNotResolved):
        await policy.addresses("nowhere.example", 443)
    with pytest.raises(EgressRefused, match="port 22"):
        await policy.addresses("api.example", 22)  # refused before any lookup


async def test_dns_that_changes_between_check_and_connect_reaches_only_the_checked_address() -> (
    None
):
    # 127.0.0.2 stands for the partner's public address (allow-listed here); the name then
    # rebinds to 127.0.0.1, the platform's own loopback. Listeners on both, same port.
    good, own = bind_in_range(
        ["127.0.0.2", "127.0.0.1"],
        1024,
        65535,
        reply=lambda head: ok_json({"object": "list", "data": [{"id": "m"}]}),
    )
    try:
        resolver = Resolver({"rebind.example": [["127.0.0.2"], ["127.0.0.1"]]})
        policy = EgressPolicy.from_spec("127.0.0.2/32", "", "1-65535", resolver)
        client = HttpClient(egress=policy)
        url = f"http://rebind.example:{good.port}/v1/models"
        response = await client.request("GET", url, timeout_s=10)
        assert response.status == 200
        # One lookup, checked, and the connection went to what it answered: not a second lookup.
        assert resolver.lookups == ["rebind.example"]
        assert (good.connections, own.connections) == (1, 0)
        assert good.heads[0].startswith(b"GET /v1/models HTTP/1.1\r\nHost: rebind.example:")
        # The next connection resolves again (the reply closed the first): now refused.
        with pytest.raises(EgressRefused, match="loopback"):
            await client.request("GET", url, timeout_s=10)
        assert resolver.lookups == ["rebind.example"] * 2
        assert (good.connections, own.connections) == (1, 0)
        await client.aclose()
    finally:
        good.close()
        own.close()


async def test_every_refusal_comes_before_any_connection(tmp_path: Path) -> None:
    (own,) = bind_in_range(["127.0.0.1"])
    try:
        client = HttpClient(
            egress=EgressPolicy(resolver=Resolver({"own.example": [["127.0.0.1"]]}))
        )
        for url in (
            f"http://127.0.0.1:{own.port}/v1/models",
            f"http://own.example:{own.port}/v1/models",
            f"http://[::ffff:127.0.0.1]:{own.port}/v1/models",
            f"http://a@127.0.0.1:{own.port}/v1/models",
            f"http://127.1:{own.port}/v1/models",
        ):
            with pytest.raises(EgressRefused):
                await client.request("GET", url, timeout_s=5)
        assert own.connections == 0
    finally:
        own.close()


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", f"/CN={name}", "-addext",
            f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert),
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


async def test_tls_is_checked_against_the_host_name_not_the_address(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path, "endpoint.test")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            for piece in ok_json({"object": "list", "data": []}):
                writer.write(piece)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.2", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    client_ctx = ssl.create_default_context(cafile=str(cert))
    resolver = Resolver({"endpoint.test": [["127.0.0.2"]], "other.test": [["127.0.0.2"]]})
    policy = EgressPolicy.from_spec("127.0.0.2/32", "", "1-65535", resolver)
    client = HttpClient(egress=policy, ssl_context=client_ctx)
    try:
        response = await client.request("GET", f"https://endpoint.test:{port}/v1/models")
        assert response.status == 200
        assert names == ["endpoint.test"]  # SNI is the name, though the connection is to an IP
        with pytest.raises(HttpError, match="TLS: the certificate is not valid for other.test"):
            await client.request("GET", f"https://other.test:{port}/v1/models")
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


# -- end to end: a stack with the production default policy ---------------------------------


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    with running_stack(servers, tmp_path_factory, "egress", loopback_endpoints=False) as s:
        yield s


@pytest.fixture(scope="module")
async def pool(stack: ServiceStack) -> str:
    """An API-board pool: without one CreateSubmission stops before the dispatcher is asked."""
    admin = AdminClient(admin_channel(stack, "rotator"))
    await admin.import_items([import_item(r) for r in read_jsonl(BANK / "items.jsonl")])
    await admin.publish("egress-api-pool", board=taskpool_pb2.BOARD_API)
    return "egress-api-pool"


@pytest.fixture(scope="module")
def watch() -> Iterator[list[Listener]]:
    """Listeners on 127.0.0.1 and (if there is IPv6) ::1, on one port within the default set."""
    hosts = ["127.0.0.1"] + (["::1"] if ipv6_loopback() else [])
    listeners = bind_in_range(hosts)
    yield listeners
    for listener in listeners:
        listener.close()


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


async def _create(partner: PartnerClient, base_url: str) -> grpc.aio.AioRpcError:
    endpoint = submission_pb2.Endpoint(base_url=base_url, model="m", api_key="k", max_concurrency=1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await partner.create(
            f"ssrf-{uuid.uuid4().hex[:8]}",
            "m",
            mode=common_pb2.SUBMISSION_MODE_API,
            endpoint=endpoint,
        )
    return err.value


def _targets(stack: ServiceStack, servers: Servers, port: int) -> dict[str, tuple[str, str]]:
    """Name -> (base_url, what the refusal names)."""
    mongo = urlsplit(servers.mongo_uri).port
    kafka = _port(servers.kafka_bootstrap)
    return {
        "the stack's MongoDB": (f"http://127.0.0.1:{mongo}/v1", "port"),
        "the stack's Kafka": (f"http://127.0.0.1:{kafka}/v1", "port"),
        "the gateway's gRPC port": (f"http://127.0.0.1:{stack.grpc_port('gateway')}", "port"),
        "the rotator's metrics": (f"http://127.0.0.1:{stack.metrics_port('rotator')}/", "port"),
        "MongoDB by name": (f"http://localhost:{mongo}/v1", "port"),
        "loopback": (f"http://127.0.0.1:{port}/v1", "loopback"),
        "loopback, other address": (f"http://127.0.0.53:{port}/v1", "loopback"),
        "unspecified": (f"http://0.0.0.0:{port}/v1", "unspecified"),
        "10/8": ("http://10.0.0.1/v1", "private"),
        "172.16/12": ("http://172.16.0.1:8080/v1", "private"),
        "192.168/16": ("https://192.168.1.1/v1", "private"),
        "cloud metadata": ("http://169.254.169.254/latest/meta-data", "link-local"),
        "IPv6 loopback": (f"http://[::1]:{port}/v1", "loopback"),
        "IPv4-mapped": (f"http://[::ffff:127.0.0.1]:{port}/v1", "loopback"),
        "IPv4-compatible": (f"http://[::127.0.0.1]:{port}/v1", "loopback"),
        "IPv6 link-local": ("http://[fe80::1]/v1", "link-local"),
        "IPv6 unique-local": ("http://[fd00::1]/v1", "private"),
        "6to4 of loopback": (f"http://[2002:7f00:1::1]:{port}/v1", "loopback"),
        "decimal": (f"http://2130706433:{port}/v1", "numeric form"),
        "octal": (f"http://0177.0.0.1:{port}/v1", "numeric form"),
        "hex": (f"http://0x7f.0.0.1:{port}/v1", "numeric form"),
        "short": (f"http://127.1:{port}/v1", "numeric form"),
        "userinfo": ("http://user@example.com/v1", "userinfo"),
        "userinfo to loopback": (f"http://a@127.0.0.1:{port}/v1", "userinfo"),
        "chosen path": (f"http://localhost:{port}/v1?x=", "query"),
        "SSH port": ("http://example.com:22/v1", "port 22"),
        "Redis port": ("http://example.com:6379/v1", "port 6379"),
        "port 0": ("http://example.com:0/v1", "port '0'"),
        "port 65536": ("http://example.com:65536/v1", "port '65536'"),
        "raw request line": (f"http://localhost:{port}/a b HTTP/1.0\x0bX: y", "control character"),
    }


@pytest.mark.e2e
async def test_every_ssrf_target_class_is_refused_at_create_before_any_connection(
    stack: ServiceStack, servers: Servers, pool: str, watch: list[Listener]
) -> None:
    partner = partner_client(stack, "ssrf-tenant")
    failures = []
    for name, (url, named) in _targets(stack, servers, watch[0].port).items():
        error = await _create(partner, url)
        details = error.details() or ""
        if error.code() != grpc.StatusCode.INVALID_ARGUMENT or named not in details:
            failures.append(f"{name}: {error.code().name} {details!r}")
        assert "endpoint.base_url" in details, (name, details)
    assert failures == []
    assert [listener.connections for listener in watch] == [0] * len(watch)


@pytest.mark.e2e
async def test_a_name_resolving_to_loopback_is_refused_by_the_dispatcher_as_invalid_argument(
    stack: ServiceStack, pool: str, watch: list[Listener]
) -> None:
    # localhost passes the gateway (it resolves no names); the dispatcher resolves it where
    # it would connect, and refuses: INVALID_ARGUMENT all the way back, nothing connected.
    partner = partner_client(stack, "ssrf-tenant")
    for url in (f"http://localhost:{watch[0].port}/v1", f"http://LocalHost.:{watch[0].port}"):
        error = await _create(partner, url)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        details = error.details() or ""
        assert "refused by the egress policy: localhost resolves to" in details, details
        assert "not a public address (loopback)" in details, details
    assert [listener.connections for listener in watch] == [0] * len(watch)


@pytest.mark.e2e
async def test_the_dispatcher_refuses_every_class_itself_when_asked_directly(
    stack: ServiceStack, servers: Servers, watch: list[Listener]
) -> None:
    # The gateway's static checks are a first line only: the service token's caller (a
    # compromised or buggy peer) gets the same refusals from the dispatcher.
    stub = dispatch_service_pb2_grpc.DispatcherServiceStub(service_channel(stack, "dispatcher"))
    failures = []
    for name, (url, named) in _targets(stack, servers, watch[0].port).items():
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Preflight(
                dispatch_service_pb2.PreflightRequest(base_url=url, model="m", api_key="k"),
                timeout=30,
            )
        details = err.value.details() or ""
        if err.value.code() != grpc.StatusCode.INVALID_ARGUMENT or named not in details:
            failures.append(f"{name}: {err.value.code().name} {details!r}")
    assert failures == []
    assert [listener.connections for listener in watch] == [0] * len(watch)
