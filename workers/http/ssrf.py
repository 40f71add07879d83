"""The SSRF guard of the ``http`` worker: which destinations a request may reach, checked on the
address actually connected to (policy prose: ``docs/http.md``).

For every hop (the first request and each redirect) :func:`vet_url`:

1. refuses schemes other than ``http``/``https`` and URLs carrying ``user:password@``;
2. turns the host into addresses **once**: an IP literal is parsed (including the legacy
   decimal/octal/hex IPv4 spellings ``2130706433``, ``0x7f.1``, ``017700000001``, which are
   decoded, checked, and then refused anyway as ambiguous), a name is resolved with
   :func:`resolve_host`;
3. checks every address (:func:`blocked_reason`): loopback, private, link-local, CGNAT,
   multicast, unspecified, reserved/documentation, IPv6 unique-local and site-local, the IPv4
   embedded in IPv4-mapped, IPv4-compatible, 6to4 and NAT64 addresses, Teredo, and the cloud
   metadata addresses are refused unless the allow-list (``FLEET_HTTP_ALLOW``, :class:`AllowList`)
   admits them on the hop's port; an allow-listed *name* admits internal addresses but never
   metadata or link-local ones; a name is refused if *any* of its addresses is refused.

The vetted addresses are then *pinned*: :class:`PinnedResolver` is the only resolver of the
aiohttp connector that makes the connection, and it answers with exactly those addresses, so
nothing can re-resolve the name between the check and the connect (DNS rebinding). The URL keeps
the original host, so the ``Host`` header, TLS SNI and certificate verification all use the
name, not the address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from shared.contract import ErrorCode
from shared.errors import ConfigError, ExecutionFailed, FleetError
from shared.settings import Settings

__all__ = [
    "METADATA_ADDRESSES",
    "AllowEntry",
    "AllowList",
    "DestinationBlocked",
    "HttpPolicy",
    "InvalidUrl",
    "PinnedResolver",
    "VettedTarget",
    "blocked_reason",
    "embedded_ipv4",
    "needs_address_entry",
    "parse_host",
    "resolve_host",
    "vet_url",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# ----------------------------------------------------------------------------------- errors


class DestinationBlocked(ExecutionFailed):
    """The URL policy refused a destination: ``destination_blocked``, never retryable.

    ``details`` is ``{"host", "reason"}`` plus ``"address"`` when an address was refused.
    """

    code = ErrorCode.DESTINATION_BLOCKED

    def __init__(self, message: str, *, host: str, reason: str, address: str | None = None) -> None:
        details: dict[str, Any] = {"host": host, "reason": reason}
        if address is not None:
            details["address"] = address
        super().__init__(message, retryable=False, details=details)
        self.host = host
        self.reason = reason
        self.address = address


class InvalidUrl(FleetError, ValueError):
    """A URL that cannot be a request target at all (no host, bad characters, bad port).

    Callers turn it into ``invalid_input`` (the caller's URL) or ``http_error`` (a redirect's
    ``Location``)."""


# ------------------------------------------------------------------------------ the ranges

#: Cloud metadata endpoints. They sit inside blocked ranges (or, for Azure's wireserver, in
#: public space) and are refused even when a *range* containing them is allow-listed: only an
#: allow-list entry naming exactly the address (``169.254.169.254`` or ``.../32``) admits one.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS VPC DNS
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::253",
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "168.63.129.16",  # Azure wireserver (public address space, host-only service)
    )
)


def _nets(*pairs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), reason) for net, reason in pairs)


_V4_BLOCKED = _nets(
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "cgnat"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "reserved"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved"),
    ("198.51.100.0/24", "reserved"),
    ("203.0.113.0/24", "reserved"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # includes 255.255.255.255
)
_V6_BLOCKED = _nets(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "reserved"),  # IPv4-compatible (deprecated); never a real destination
    ("64:ff9b:1::/48", "private"),  # local-use NAT64 (RFC 8215)
    ("100::/64", "reserved"),  # discard-only
    ("2001::/32", "reserved"),  # Teredo: the tunnelled IPv4 client cannot be vetted
    ("2001::/23", "reserved"),
    ("2001:db8::/32", "reserved"),
    ("3fff::/20", "reserved"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIXTOFOUR = ipaddress.ip_network("2002::/16")


def _without_zone(ip: IPAddress) -> IPAddress:
    # A zone index (fe80::1%eth0) only selects an interface; ranges are matched without it.
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        return ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    return ip


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and would reach: IPv4-mapped (``::ffff:a.b.c.d``),
    NAT64 (``64:ff9b::a.b.c.d``) or 6to4 (``2002:AABB:CCDD::``); ``None`` otherwise."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip in _MAPPED:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _SIXTOFOUR:
        return ip.sixtofour
    return None


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be reached without an allow-list entry, or ``None`` for a public
    address. Reasons: ``metadata``, ``loopback``, ``private``, ``link-local``, ``cgnat``,
    ``multicast``, ``unspecified``, ``reserved``, ``unique-local``, ``site-local``, each
    prefixed with ``ipv4-mapped ``/``nat64 ``/``6to4 `` when found in an embedded IPv4."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        reason = blocked_reason(inner)
        if reason is None:
            return None
        kind = "ipv4-mapped" if ip in _MAPPED else "nat64" if ip in _NAT64 else "6to4"
        return f"{kind} {reason}"
    ip = _without_zone(ip)
    if ip in METADATA_ADDRESSES:
        return "metadata"
    for net, reason in _V4_BLOCKED if ip.version == 4 else _V6_BLOCKED:
        if ip in net:
            return reason
    # Whatever the standard library knows to be non-global that the tables above missed.
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return "reserved"
    return None


# ---------------------------------------------------------------------------- allow-list

_HOSTNAME = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*\.?$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_ENTRY_FORMS = "host, *.suffix, IP or CIDR, each optionally with :port (IPv6 in brackets: [fd00::1]:8080)"

#: Reasons an allowed *name* does not override: a name is data anyone controlling its DNS (or a
#: typo'd wildcard) can point anywhere, so these addresses need an entry naming the address.
_ADDRESS_ENTRY_ONLY = frozenset({"metadata", "link-local"})


def needs_address_entry(reason: str) -> bool:
    """Whether addresses refused for ``reason`` (a :func:`blocked_reason`) stay refused for an
    allow-listed name: metadata and link-local, in any spelling (``ipv4-mapped link-local``)."""
    return reason.rsplit(" ", 1)[-1] in _ADDRESS_ENTRY_ONLY


@dataclass(frozen=True, slots=True, kw_only=True)
class AllowEntry:
    """One ``FLEET_HTTP_ALLOW`` entry: exactly one of ``network``, ``name`` (exact, normalised)
    or ``suffix`` (``".svc.local"``), and ``port`` (``None``: every port)."""

    text: str
    network: IPNetwork | None = None
    name: str | None = None
    suffix: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, raw: str) -> AllowEntry:
        """Parse one entry (:class:`AllowList`); anything else fails with ConfigError."""
        text = raw.strip()
        entry = text.lower()

        def bad(why: str) -> ConfigError:
            return ConfigError(f"FLEET_HTTP_ALLOW entry {text!r}: {why}; entries are {_ENTRY_FORMS}")

        def port_of(spec: str) -> int:
            if not _PORT.match(spec) or not 0 < int(spec) < 65536:
                raise bad(f"port {spec!r} is not a number from 1 to 65535")
            return int(spec)

        if entry.startswith("["):
            inside, bracket, rest = entry[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise bad("a bracketed IPv6 address is written [address] or [address]:port")
            try:
                network = ipaddress.ip_network(inside, strict=False)
            except ValueError:
                raise bad("brackets hold an IPv6 address or CIDR") from None
            if network.version != 6:
                raise bad("brackets hold an IPv6 address or CIDR")
            return cls(text=text, network=network, port=port_of(rest[1:]) if rest else None)
        if entry.count(":") > 1:
            # Unbracketed IPv6 has no port: "fd00::1:80" is an address, not fd00::1 port 80.
            try:
                return cls(text=text, network=ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise bad("not an IPv6 address or CIDR (with a port, write [address]:port)") from None
        host, colon, port_text = entry.partition(":")
        port = port_of(port_text) if colon else None
        try:
            return cls(text=text, network=ipaddress.ip_network(host, strict=False), port=port)
        except ValueError:
            pass
        name = host.removeprefix("*.").rstrip(".")
        if not _HOSTNAME.match(name) or _NUMERIC_LABEL.match(name.split(".")[-1]):
            raise bad("not a hostname, IP or CIDR")
        if host.startswith("*."):
            return cls(text=text, suffix="." + name, port=port)
        return cls(text=text, name=name, port=port)

    def admits_port(self, port: int) -> bool:
        return self.port is None or self.port == port

    def names(self, host: str) -> bool:
        """Whether this is a name entry covering ``host`` (normalised), on any port."""
        return host == self.name or (self.suffix is not None and host.endswith(self.suffix))

    def contains(self, ip: IPAddress) -> bool:
        """Whether this is an address entry covering ``ip`` (or the IPv4 it embeds), on any
        port. A metadata address, in any spelling (``::ffff:169.254.169.254`` too), is covered
        only by an entry naming exactly that address, never by a range around it."""
        if self.network is None:
            return False
        ip = _without_zone(ip)
        candidates = [ip]
        inner = embedded_ipv4(ip)
        if inner is not None:
            candidates.append(inner)
        exact_only = any(c in METADATA_ADDRESSES for c in candidates)
        return any(
            c in self.network and (not exact_only or self.network.num_addresses == 1) for c in candidates
        )


@dataclass(frozen=True, slots=True)
class AllowList:
    """Destinations admitted despite :func:`blocked_reason` (``FLEET_HTTP_ALLOW``; prose and the
    reasons behind the rules in ``docs/http.md``).

    Comma-separated entries, each ``host``, ``*.suffix``, ``ip`` or ``cidr``, optionally with
    ``:port`` (IPv6 in brackets: ``[fd00::1]:8080``, ``[fd00::/8]:443``). An entry with a port
    admits that port only; without one, every port. On the admitted ports:

    * an IP or CIDR (``127.0.0.1``, ``10.20.0.0/16``, ``fd00::/8``) admits the addresses inside
      it (and IPv6 addresses embedding an IPv4 inside it); a metadata address only by an entry
      naming exactly that address;
    * a hostname (``api.internal``) admits that exact name, ``*.svc.local`` every name below
      ``svc.local`` (not ``svc.local`` itself): the addresses the name resolves to are still
      checked, and may be internal (loopback, private, …) but not metadata or link-local
      (:func:`needs_address_entry`) unless an address entry admits them.
    """

    entries: tuple[AllowEntry, ...] = ()

    @classmethod
    def parse(cls, text: str | Iterable[str]) -> AllowList:
        """Parse the comma-separated entries (blank ones are skipped); a malformed entry fails
        with a ConfigError naming it."""
        raw_entries = text.split(",") if isinstance(text, str) else list(text)
        return cls(tuple(AllowEntry.parse(raw) for raw in raw_entries if raw.strip()))

    def admits_host(self, host: str, port: int) -> bool:
        """Whether a name entry admits ``host`` on ``port`` (the addresses it resolves to are
        still checked: :func:`vet_url`)."""
        name = host.lower().rstrip(".")
        return any(e.names(name) and e.admits_port(port) for e in self.entries)

    def admits_address(self, ip: IPAddress, port: int) -> bool:
        """Whether an address entry admits ``ip`` on ``port``."""
        return any(e.contains(ip) and e.admits_port(port) for e in self.entries)

    def ports_for(self, ip: IPAddress | None = None, host: str | None = None) -> tuple[int, ...] | None:
        """The ports on which the entries covering ``ip`` (or the name ``host``) admit it —
        ``None`` when none covers it or one admits every port (for error messages)."""
        name = host.lower().rstrip(".") if host is not None else None
        covering = [
            e
            for e in self.entries
            if (ip is not None and e.contains(ip)) or (name is not None and e.names(name))
        ]
        if not covering or any(e.port is None for e in covering):
            return None
        return tuple(sorted({e.port for e in covering if e.port is not None}))

    def __bool__(self) -> bool:
        return bool(self.entries)


# ------------------------------------------------------------------------------ settings


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpPolicy:
    """What the client enforces: the allow-list and the limits (``FLEET_HTTP_ALLOW``,
    ``FLEET_HTTP_MAX_RESPONSE_BYTES``, ``FLEET_HTTP_MAX_REDIRECTS``; defaults as in
    :class:`~shared.settings.Settings`).

    Each worker has its own, built from its settings by
    :class:`~workers.http.extension.HttpExtension` and reached by handlers as
    ``ctx.resources.get(HttpPolicy)``; nothing here is process-wide."""

    allow: AllowList = field(default_factory=AllowList)
    max_response_bytes: int = 10_485_760
    max_redirects: int = 5
    #: told the reason of every refused destination (the worker's metrics; set by the extension).
    on_refusal: Callable[[str], None] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpPolicy:
        """The policy of ``settings`` (an unparsable allow-list raises ConfigError)."""
        return cls(
            allow=AllowList.parse(settings.http_allow),
            max_response_bytes=settings.http_max_response_bytes,
            max_redirects=settings.http_max_redirects,
        )


# ------------------------------------------------------------------------ hosts and DNS


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Decode the inet_aton spellings (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``) the
    way resolvers and browsers do; ``None`` when ``host`` is not such a number."""
    parts = host.split(".")
    if len(parts) > 4:
        return None
    numbers: list[int] = []
    for part in parts:
        if not _NUMERIC_LABEL.match(part):
            return None
        try:
            if part.startswith("0x"):
                numbers.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                numbers.append(int(part, 8))
            else:
                numbers.append(int(part, 10))
        except ValueError:  # e.g. "09": not octal
            return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def parse_host(host: str) -> IPAddress | str:
    """An IP literal as an address, a hostname as its normalised (lower-case, IDNA) text.

    Raises :class:`InvalidUrl` for what is neither. Legacy IPv4 spellings come back as the
    address they mean (callers refuse them after the range check, see :func:`vet_url`).
    """
    text = host.strip("[]").lower()
    if not text:
        raise InvalidUrl("the URL has no host")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    name = text.rstrip(".")
    labels = name.split(".")
    if labels and _NUMERIC_LABEL.match(labels[-1]):
        # WHATWG URL rule: a host whose last label is a number is an IPv4 address, or invalid.
        legacy = _legacy_ipv4(name)
        if legacy is None:
            raise InvalidUrl(f"host {host!r} is neither an IPv4 address nor a hostname")
        return legacy
    if not _HOSTNAME.match(text):
        raise InvalidUrl(f"host {host!r} is not a valid hostname")
    return text


async def resolve_host(host: str, port: int) -> list[str]:
    """Resolve ``host`` with the system resolver: its distinct addresses, in order.

    The one DNS lookup of a hop (tests replace this function). Raises :class:`OSError`
    (``socket.gaierror``) when the name does not resolve.
    """
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    seen: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in seen:
            seen.append(address)
    return seen


@dataclass(frozen=True, slots=True)
class VettedTarget:
    """A URL that passed :func:`vet_url` and the addresses it may be connected to.

    ``host`` is the URL's raw host as aiohttp will hand it to the resolver; ``addresses`` is
    empty for an IP-literal host (aiohttp connects to the literal without resolving)."""

    url: URL
    host: str
    port: int
    addresses: tuple[str, ...]


async def vet_url(url: URL, policy: HttpPolicy) -> VettedTarget:
    """Check ``url`` against the policy and resolve its host once (module docstring).

    Raises :class:`DestinationBlocked` (policy), :class:`InvalidUrl` (not a usable URL) or
    :class:`OSError` (the name does not resolve).
    """
    if url.scheme not in ("http", "https"):
        raise DestinationBlocked(
            f"scheme {url.scheme or '(none)'!r} is not allowed; use http or https",
            host=url.raw_host or "",
            reason="scheme",
        )
    host = url.raw_host
    if not host:
        raise InvalidUrl("the URL has no host")
    if url.raw_user is not None or url.raw_password is not None:
        raise DestinationBlocked(
            "credentials in the URL (user:password@) are not allowed; send them in a header",
            host=host,
            reason="userinfo",
        )
    try:
        port = url.port
    except ValueError as exc:
        raise InvalidUrl(f"bad port: {exc}") from None
    if port is None or not 0 < port < 65536:
        raise InvalidUrl(f"bad port {port!r}")
    parsed = parse_host(host)
    if isinstance(parsed, str):
        addresses = await resolve_host(host, port)
        if not addresses:
            raise OSError(f"{host} resolved to no address")
        name_admitted = policy.allow.admits_host(parsed, port)
        for address in addresses:
            _check_address(ipaddress.ip_address(address), host, port, policy, name_admitted=name_admitted)
        return VettedTarget(url=url, host=host, port=port, addresses=tuple(addresses))
    _check_address(parsed, host, port, policy)
    if parsed.version == 4 and str(parsed) != host:
        # 2130706433, 0x7f.1, 127.1: the address itself is admissible, the spelling is not —
        # different parsers disagree on it, which is how guards get bypassed.
        raise DestinationBlocked(
            f"host {host!r} is a non-canonical IPv4 address; write it as {parsed}",
            host=host,
            reason="non-canonical-ip",
            address=str(parsed),
        )
    return VettedTarget(url=url, host=host, port=port, addresses=())


def _check_address(
    ip: IPAddress, host: str, port: int, policy: HttpPolicy, *, name_admitted: bool = False
) -> None:
    """Refuse ``ip`` (an address of ``host``) unless it is public, an address entry admits it
    on ``port``, or the name was admitted and ``ip`` is not metadata or link-local."""
    reason = blocked_reason(ip)
    if reason is None or policy.allow.admits_address(ip, port):
        return
    if name_admitted and not needs_address_entry(reason):
        return
    if name_admitted:
        hint = f"an allowed name does not admit {reason} addresses, only an entry naming the address does"
    elif (ports := policy.allow.ports_for(ip, host)) is not None:
        hint = f"FLEET_HTTP_ALLOW admits it on port {', '.join(map(str, ports))} only"
    else:
        hint = "FLEET_HTTP_ALLOW can admit it"
    raise DestinationBlocked(
        f"destination {host} port {port} ({ip}) is not allowed: {reason} address ({hint})",
        host=host,
        reason=reason,
        address=str(ip),
    )


# ------------------------------------------------------------------------------- pinning


class PinnedResolver(AbstractResolver):
    """The aiohttp resolver of one request: answers only with addresses :func:`vet_url` vetted.

    :meth:`pin` records a hop's addresses before the hop's request; :meth:`resolve` returns
    exactly those for the same host and refuses any other host (fail closed), so the
    connector never performs a DNS lookup of its own.
    """

    def __init__(self) -> None:
        self._pins: dict[str, tuple[str, ...]] = {}
        self.calls: list[str] = []

    def pin(self, target: VettedTarget) -> None:
        if target.addresses:
            self._pins[_pin_key(target.host)] = target.addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        self.calls.append(host)
        addresses = self._pins.get(_pin_key(host))
        if not addresses:
            raise DestinationBlocked(
                f"connection to unvetted host {host} refused", host=host, reason="not-vetted"
            )
        results: list[ResolveResult] = []
        for address in addresses:
            is_v6 = ":" in address
            wanted = socket.AF_INET6 if is_v6 else socket.AF_INET
            if family not in (socket.AF_UNSPEC, wanted):
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=address.split("%", 1)[0],
                    port=port,
                    family=wanted,
                    proto=socket.IPPROTO_TCP,
                    flags=socket.AI_NUMERICHOST,
                )
            )
        if not results:
            raise DestinationBlocked(
                f"no vetted address of {host} in the connector's address family",
                host=host,
                reason="not-vetted",
            )
        return results

    async def close(self) -> None:
        self._pins.clear()


def _pin_key(host: str) -> str:
    # aiohttp collapses repeated trailing dots before resolving; compare names without them.
    return host.lower().rstrip(".")
