"""Where partners' endpoints may be: the egress policy of API mode.

A partner names its endpoint by URL, and the platform then connects there from inside its own
network. Without a policy that URL could point the platform at itself (its MongoDB, Kafka, gRPC
and metrics ports, the website, cloud metadata). This one module decides, for the gateway's
static checks, the dispatcher's preflight and every call to a partner:

- **URL form** (`parse_endpoint_url`): http or https; no userinfo, query, fragment, backslash or
  control character anywhere; the host a DNS name (IDNA, then letters, digits and hyphens), a
  dotted-quad IPv4 literal or a bracketed IPv6 literal without a zone; every other numeric host
  form (2130706433, 0177.0.0.1, 0x7f.0.0.1, 127.1) is refused, since resolvers read them as
  addresses; the path is percent-encoded, so nothing but visible ASCII reaches the request line.
- **Ports**: a configured set (`DEFAULT_PORTS`: 80, 443 and 8000-8999, where OpenAI-compatible
  servers usually listen: vLLM 8000, llama.cpp and TGI 8080).
- **Addresses**: every address the host resolves to must be globally routable. Unspecified,
  loopback, link-local, multicast, private, reserved, shared (100.64.0.0/10), site-local and
  other non-global ranges are refused, also when carried inside IPv6 (IPv4-mapped,
  IPv4-compatible, NAT64, 6to4, Teredo), and so are the configured deny ranges (the cluster's own
  ranges when they are public). A configured allow-list lifts the refusal (an on-premise
  partner's network; a local stack's loopback); deny ranges win over it. A name with any refused
  address is refused as a whole.
- **Connection**: `EgressPolicy.addresses` resolves once per connection and the HTTP client
  connects to one of the addresses it returned, never to the name: DNS that changes between the
  check and the connection (rebinding) reaches nothing that was not checked. TLS still checks
  the certificate against the host name.

The policy is an object the dispatcher passes to its HTTP client, not a global: the judge
scorer's client calls an operator-configured, in-cluster judge model and has none.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from pydantic import BaseModel, field_validator

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) -> the addresses the host has (text), in the order to try them."""

DEFAULT_PORTS = "80,443,8000-8999"
MAX_URL = 2048


class EgressRefused(Exception):
    """The policy refuses the endpoint; the message says why (never what anything answered)."""


class BadEndpointUrl(EgressRefused):
    """The URL is not one the platform sends requests to; the message names the problem."""


class NameNotResolved(Exception):
    """The host name has no address (the lookup failed or answered nothing)."""


# -- URL form -------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_NUMERIC = re.compile(r"0x[0-9a-f]*|[0-9]+")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")
_PORT = re.compile(r"[0-9]{1,5}")
_HEX = frozenset("0123456789abcdefABCDEF")
# RFC 3986 pchar without "%" (kept only as the start of an escape), plus "/".
_PATH_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/"
)


@dataclass(frozen=True)
class EndpointUrl:
    """A parsed, normalised endpoint URL."""

    scheme: str
    host: str
    """ASCII, lower case, no trailing dot; an IPv6 literal without brackets."""
    port: int
    path: str
    """Percent-encoded, without a trailing "/"."""
    query: str = ""
    """Percent-encoded; only where queries are allowed (never for a partner's endpoint)."""
    ip: IPAddress | None = None
    """The host, when it is an address literal."""

    @property
    def authority(self) -> str:
        """host[:port] as it goes into the URL and the Host header (default port left out)."""
        host = f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The normalised URL."""
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{self.authority}{self.path}{query}"

    @property
    def target(self) -> str:
        """The request target of an HTTP request line: path and query."""
        return (self.path or "/") + (f"?{self.query}" if self.query else "")


def parse_endpoint_url(url: str, *, allow_query: bool = False) -> EndpointUrl:
    """The URL, normalised; BadEndpointUrl naming the problem when it is not usable.

    allow_query: keep a query (the HTTP client's own callers, e.g. an operator's judge URL);
    a partner's endpoint may not have one (it would let the caller choose the whole path).
    """
    if len(url) > MAX_URL:
        raise BadEndpointUrl(f"is longer than {MAX_URL} characters")
    control = _CONTROL.search(url)
    if control is not None:
        raise BadEndpointUrl(f"contains a control character (U+{ord(control.group()):04X})")
    if "\\" in url:
        raise BadEndpointUrl("contains a backslash")
    scheme = _SCHEME.match(url)
    if scheme is None or scheme.group(1).lower() not in ("http", "https"):
        raise BadEndpointUrl("must be an http:// or https:// URL")
    rest = url[scheme.end() :]
    if "#" in rest:
        raise BadEndpointUrl("has a fragment (#...): not allowed")
    query = ""
    if "?" in rest:
        if not allow_query:
            raise BadEndpointUrl("has a query (?...): not allowed")
        rest, query = rest.split("?", 1)
        query = _encode(query, "?")
    slash = rest.find("/")
    authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if "@" in authority:
        raise BadEndpointUrl("has userinfo (user@host): not allowed; the key goes in api_key")
    kind = scheme.group(1).lower()
    host, ip, port_text = _split_authority(authority)
    if port_text is None or port_text == "":
        port = 443 if kind == "https" else 80
    elif _PORT.fullmatch(port_text) and 1 <= int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise BadEndpointUrl(f"port {port_text!r} is not a number within 1-65535")
    return EndpointUrl(kind, host, port, _encode(path).rstrip("/"), query, ip)


def _split_authority(authority: str) -> tuple[str, IPAddress | None, str | None]:
    """(host, address literal or None, port text or None)."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise BadEndpointUrl("has an IPv6 literal without its closing ']'")
        literal, after = authority[1:end], authority[end + 1 :]
        if "%" in literal:
            raise BadEndpointUrl("has an IPv6 zone id (%...): not allowed")
        try:
            ip6 = ipaddress.IPv6Address(literal)
        except ValueError:
            raise BadEndpointUrl(f"host [{literal}] is not an IPv6 address") from None
        if after and not after.startswith(":"):
            raise BadEndpointUrl("has text after the IPv6 literal that is not a port")
        return ip6.compressed, ip6, after[1:] if after else None
    host_text, colon, port_text = authority.partition(":")
    if ":" in port_text:
        raise BadEndpointUrl("has more than one ':' in its host (IPv6 literals go in [...])")
    host, ip = _host(host_text)
    return host, ip, port_text if colon else None


def _host(text: str) -> tuple[str, IPAddress | None]:
    if not text:
        raise BadEndpointUrl("has no host")
    try:
        name = text if text.isascii() else text.encode("idna").decode("ascii")
    except UnicodeError:
        raise BadEndpointUrl(f"host {text!r} is not a valid domain name") from None
    name = name.lower()
    if name.endswith("."):
        name = name[:-1]
    labels = name.split(".")
    if _NUMERIC.fullmatch(labels[-1]):
        # Resolvers read 2130706433, 0177.0.0.1, 0x7f.0.0.1 and 127.1 as addresses.
        if not _DOTTED_QUAD.fullmatch(name):
            raise BadEndpointUrl(
                f"host {text!r} is a numeric form other than a dotted-quad IPv4 address "
                "(four decimal numbers 0-255 without leading zeros)"
            )
        return name, ipaddress.IPv4Address(name)
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise BadEndpointUrl(
            f"host {text!r} is not a valid DNS name (letters, digits and hyphens in labels)"
        )
    return name, None


def _encode(text: str, extra_safe: str = "") -> str:
    """Percent-encodes every character outside the safe set (UTF-8); keeps valid escapes."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%" and len(text) >= i + 3 and set(text[i + 1 : i + 3]) <= _HEX:
            out.append(text[i : i + 3].upper())
            i += 3
            continue
        if c in _PATH_SAFE or c in extra_safe:
            out.append(c)
        else:
            try:
                raw = c.encode("utf-8")
            except UnicodeEncodeError:
                problem = f"contains an unencodable character (U+{ord(c):04X})"
                raise BadEndpointUrl(problem) from None
            out.append("".join(f"%{b:02X}" for b in raw))
        i += 1
    return "".join(out)


# -- ports and ranges -----------------------------------------------------------------------


@dataclass(frozen=True)
class PortSet:
    """Ports as inclusive ranges."""

    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, spec: str) -> PortSet:
        """ "80,443,8000-8999" -> PortSet; ValueError naming a bad part."""
        ranges = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            low, _, high = part.partition("-")
            try:
                first, last = int(low), int(high or low)
            except ValueError:
                raise ValueError(f"port range {part!r} is not N or N-M") from None
            if not 1 <= first <= last <= 65535:
                raise ValueError(f"port range {part!r} is not within 1-65535 in order")
            ranges.append((first, last))
        return cls(tuple(ranges))

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and any(lo <= port <= hi for lo, hi in self.ranges)

    def __str__(self) -> str:
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ranges)


def parse_networks(spec: str) -> tuple[Network, ...]:
    """ "10.0.0.0/8,::1/128" -> networks; ValueError naming a bad one (host bits set too)."""
    networks = []
    for part in (p.strip() for p in spec.split(",")):
        if part:
            try:
                networks.append(ipaddress.ip_network(part, strict=True))
            except ValueError as exc:
                raise ValueError(f"{part!r} is not a CIDR range: {exc}") from None
    return tuple(networks)


# -- addresses ------------------------------------------------------------------------------

_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


def _why_not_public(ip: IPAddress) -> str | None:
    """The class of a non-public address ("loopback", ...); None for a public one."""
    for attribute, name in (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_site_local", "site-local"),
        ("is_reserved", "reserved"),
        ("is_private", "private"),
    ):
        if getattr(ip, attribute, False):
            return name
    if ip in _SHARED:
        return "shared (carrier-grade NAT)"
    if ip in _NAT64_LOCAL:
        return "local-use NAT64"
    if not ip.is_global:
        return "non-global"
    return None


def _views(ip: IPAddress) -> list[IPAddress]:
    """The addresses that decide about ip: the IPv4 address an IPv6 form carries (and may be
    translated to on the way) first, then ip itself unless the kernel connects to the IPv4 one."""
    if isinstance(ip, ipaddress.IPv4Address):
        return [ip]
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in _NAT64:  # DNS64: a public IPv4 host behind the cluster's NAT64
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if int(ip) >> 32 == 0 and int(ip) > 1:  # IPv4-compatible (deprecated); not :: or ::1
        return [ipaddress.IPv4Address(int(ip)), ip]
    if ip.sixtofour is not None:
        return [ip.sixtofour, ip]
    if ip.teredo is not None:
        return [*ip.teredo, ip]
    return [ip]


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (getaddrinfo), in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class EgressPolicy:
    """Decides which ports and addresses partners' endpoints may use (see the module doc)."""

    def __init__(
        self,
        allow: Iterable[Network] = (),
        deny: Iterable[Network] = (),
        ports: PortSet | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.allow = tuple(allow)
        self.deny = tuple(deny)
        self.ports = ports if ports is not None else PortSet.parse(DEFAULT_PORTS)
        self._resolver = resolver

    @classmethod
    def from_spec(
        cls,
        allow_cidrs: str = "",
        deny_cidrs: str = "",
        ports: str = DEFAULT_PORTS,
        resolver: Resolver = system_resolver,
    ) -> EgressPolicy:
        """From the settings' text forms (comma-separated CIDRs, ports and ranges)."""
        return cls(
            parse_networks(allow_cidrs), parse_networks(deny_cidrs), PortSet.parse(ports), resolver
        )

    def check_port(self, port: int) -> None:
        if port not in self.ports:
            raise EgressRefused(f"port {port} is not one endpoints may use ({self.ports})")

    def check_address(self, ip: IPAddress, host: str | None = None) -> None:
        """EgressRefused unless the address may be connected to."""
        subject = str(ip) if host is None or host == str(ip) else f"{host} resolves to {ip}, which"
        views = _views(ip)
        for network in self.deny:
            if any(view in network for view in views):
                raise EgressRefused(f"{subject} is in a denied range ({network})")
        if any(view in network for network in self.allow for view in {ip, views[0]}):
            return
        for view in views:
            reason = _why_not_public(view)
            if reason is not None:
                carried = "" if view == ip else f"it carries {view}, "
                raise EgressRefused(f"{subject} is not a public address ({carried}{reason})")

    def check_static(self, url: EndpointUrl) -> None:
        """What can be refused without resolving a name: the port and an address literal."""
        self.check_port(url.port)
        if url.ip is not None:
            self.check_address(url.ip)

    async def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses to connect to for host:port, every one of them checked; EgressRefused
        when the port or any address is refused, NameNotResolved when there is none."""
        self.check_port(port)
        try:
            return [_literal(host, self)]
        except ValueError:
            pass
        try:
            answers = await self._resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise NameNotResolved(f"the host {host} does not resolve") from exc
        found: list[IPAddress] = []
        for text in answers:
            try:
                ip = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                raise EgressRefused(f"{host} resolves to an unusable address") from None
            self.check_address(ip, host)
            if ip not in found:
                found.append(ip)
        if not found:
            raise NameNotResolved(f"the host {host} does not resolve")
        return found


def _literal(host: str, policy: EgressPolicy) -> IPAddress:
    """The host as an address literal, checked; ValueError when it is a name."""
    ip = ipaddress.ip_address(host)
    policy.check_address(ip)
    return ip


class EgressSettings(BaseModel):
    """The policy's settings (MEDBENCH_EGRESS__<FIELD>), read by the gateway (static checks) and
    the dispatcher (every connection); the two must agree."""

    # Ranges otherwise refused that endpoints may use (comma-separated CIDRs): an on-premise
    # partner's network. The devstack sets 127.0.0.0/8,::1/128 for its local model servers.
    allow_cidrs: str = ""
    # Ranges refused even when public or allow-listed (comma-separated CIDRs): the cluster's own
    # pod, service and node ranges when they are not private ones.
    deny_cidrs: str = ""
    # Ports endpoints may use: comma-separated ports and N-M ranges.
    ports: str = DEFAULT_PORTS

    @field_validator("allow_cidrs", "deny_cidrs")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: str) -> str:
        if not PortSet.parse(value).ranges:
            raise ValueError("at least one port is needed")
        return value

    def policy(self, resolver: Resolver = system_resolver) -> EgressPolicy:
        return EgressPolicy.from_spec(self.allow_cidrs, self.deny_cidrs, self.ports, resolver)
