"""The SSRF guard on its own: address ranges, host parsing, the allow-list, settings, pinning."""

from __future__ import annotations

import ipaddress
import re
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from shared.contract import ErrorCode
from shared.errors import ConfigError
from shared.settings import Settings
from tests.http.conftest import allowing, fake_dns
from workers.http.extension import HttpExtension
from workers.http.ssrf import (
    AllowEntry,
    AllowList,
    DestinationBlocked,
    HttpPolicy,
    InvalidUrl,
    PinnedResolver,
    blocked_reason,
    parse_host,
    vet_url,
)

BLOCKED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.1.1", "link-local"),
    ("100.64.0.1", "cgnat"),
    ("100.127.255.255", "cgnat"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.10", "reserved"),
    ("198.18.0.1", "reserved"),
    ("169.254.169.254", "metadata"),
    ("100.100.100.200", "metadata"),
    ("168.63.129.16", "metadata"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("febf:ffff::1", "link-local"),
    ("fc00::1", "unique-local"),
    ("fdff:1234::1", "unique-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "reserved"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "reserved"),  # Teredo
    ("fd00:ec2::254", "metadata"),
    ("::ffff:127.0.0.1", "ipv4-mapped loopback"),
    ("::ffff:10.1.2.3", "ipv4-mapped private"),
    ("::ffff:169.254.169.254", "ipv4-mapped metadata"),
    ("::127.0.0.1", "reserved"),  # IPv4-compatible
    ("2002:7f00:1::", "6to4 loopback"),
    ("2002:a9fe:a9fe::1", "6to4 metadata"),
    ("2002:c0a8:101::", "6to4 private"),
    ("64:ff9b::7f00:1", "nat64 loopback"),
    ("64:ff9b::a00:1", "nat64 private"),
    ("64:ff9b:1::a00:1", "private"),
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "2002:808:808::1",
    "64:ff9b::808:808",
    "172.32.0.1",
    "100.128.0.1",
    "192.169.0.1",
]


@pytest.mark.parametrize(("address", "reason"), BLOCKED)
def test_blocked_ranges(address: str, reason: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("127.0.0.1.", "127.0.0.1"),
    ],
)
def test_legacy_ipv4_spellings_are_read_as_the_address_they_mean(host: str, address: str) -> None:
    assert parse_host(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize(
    "host", ["1.2.3.4.5", "09.1", "4294967296", "256.1.1.1", "%31.1", "a b", "ex ample.com"]
)
def test_unusable_hosts(host: str) -> None:
    with pytest.raises(InvalidUrl):
        parse_host(host)


def test_hostnames_are_normalised() -> None:
    assert parse_host("API.Example.COM") == "api.example.com"
    assert parse_host("xn--bcher-kva.de.") == "xn--bcher-kva.de."


async def test_legacy_spelling_of_an_allowed_address_is_still_refused() -> None:
    with pytest.raises(DestinationBlocked) as caught:
        await vet_url(URL("http://2130706433/"), allowing("127.0.0.1"))
    assert caught.value.details == {
        "host": "2130706433",
        "reason": "non-canonical-ip",
        "address": "127.0.0.1",
    }


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_allow_list_parsing() -> None:
    allow = AllowList.parse(" 127.0.0.1, 10.20.0.0/16 ,fd00::/8, API.internal., *.svc.local,,")
    assert allow.admits_address(ip("127.0.0.1"), 80)
    assert allow.admits_address(ip("127.0.0.1"), 6379)  # no port in the entry: every port
    assert not allow.admits_address(ip("127.0.0.2"), 80)
    assert allow.admits_address(ip("10.20.3.4"), 8080)
    assert not allow.admits_address(ip("10.21.0.1"), 8080)
    assert allow.admits_address(ip("fd12::1"), 443)
    assert allow.admits_address(ip("::ffff:127.0.0.1"), 443)  # the IPv4 it embeds
    assert allow.admits_host("api.internal", 80)
    assert allow.admits_host("API.INTERNAL.", 8443)
    assert not allow.admits_host("x.api.internal", 80)
    assert allow.admits_host("db.svc.local", 5000)
    assert allow.admits_host("a.b.svc.local", 80)
    assert not allow.admits_host("svc.local", 80)
    assert not allow.admits_host("evilsvc.local", 80)
    assert not AllowList.parse("")


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("127.0.0.1", AllowEntry(text="127.0.0.1", network=ipaddress.ip_network("127.0.0.1/32"))),
        (
            "127.0.0.1:8080",
            AllowEntry(text="127.0.0.1:8080", network=ipaddress.ip_network("127.0.0.1/32"), port=8080),
        ),
        (
            "10.1.2.3/16:443",
            AllowEntry(text="10.1.2.3/16:443", network=ipaddress.ip_network("10.1.0.0/16"), port=443),
        ),
        ("fd00::1", AllowEntry(text="fd00::1", network=ipaddress.ip_network("fd00::1/128"))),
        ("fd00::1:80", AllowEntry(text="fd00::1:80", network=ipaddress.ip_network("fd00::1:80/128"))),
        ("[fd00::1]", AllowEntry(text="[fd00::1]", network=ipaddress.ip_network("fd00::1/128"))),
        (
            "[FD00::1]:8080",
            AllowEntry(text="[FD00::1]:8080", network=ipaddress.ip_network("fd00::1/128"), port=8080),
        ),
        (
            "[fd00::/8]:443",
            AllowEntry(text="[fd00::/8]:443", network=ipaddress.ip_network("fd00::/8"), port=443),
        ),
        ("Api.Internal.", AllowEntry(text="Api.Internal.", name="api.internal")),
        ("api.internal:8443", AllowEntry(text="api.internal:8443", name="api.internal", port=8443)),
        ("localhost:1", AllowEntry(text="localhost:1", name="localhost", port=1)),
        ("*.svc.cluster.local", AllowEntry(text="*.svc.cluster.local", suffix=".svc.cluster.local")),
        (" *.svc.local:65535 ", AllowEntry(text="*.svc.local:65535", suffix=".svc.local", port=65535)),
    ],
)
def test_every_entry_form_parses(entry: str, parsed: AllowEntry) -> None:
    assert AllowList.parse(entry).entries == (parsed,)


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("127.1", "not a hostname, IP or CIDR"),
        ("not a host", "not a hostname, IP or CIDR"),
        ("10.0.0.0/33", "not a hostname, IP or CIDR"),
        ("*", "not a hostname, IP or CIDR"),
        ("*.10.0.0.1", "not a hostname, IP or CIDR"),
        ("http://x", "port '//x' is not a number from 1 to 65535"),
        ("127.0.0.1:", "port '' is not a number"),
        ("127.0.0.1:0", "port '0' is not a number"),
        ("127.0.0.1:65536", "port '65536' is not a number"),
        ("api.internal:http", "port 'http' is not a number"),
        ("api.internal:+80", "port '+80' is not a number"),
        ("*.svc.local:-1", "port '-1' is not a number"),
        ("[fd00::1", "a bracketed IPv6 address is written [address] or [address]:port"),
        ("[fd00::1]80", "a bracketed IPv6 address is written"),
        ("[fd00::1]:0", "port '0' is not a number"),
        ("[127.0.0.1]:80", "brackets hold an IPv6 address or CIDR"),
        ("[api.internal]", "brackets hold an IPv6 address or CIDR"),
        ("fd00::1/129", "not an IPv6 address or CIDR (with a port, write [address]:port)"),
        ("fd00::g", "not an IPv6 address or CIDR"),
    ],
)
def test_bad_allow_entries_are_config_errors_naming_the_entry(entry: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AllowList.parse(f"127.0.0.1,{entry}")
    message = str(caught.value)
    assert message.startswith(f"FLEET_HTTP_ALLOW entry {entry.strip()!r}: {why}")
    assert "optionally with :port" in message


def test_a_bad_port_fails_building_the_extension() -> None:
    # The http worker's extension parses the policy when the worker is built: a bad entry stops it.
    with pytest.raises(ConfigError, match=re.escape("entry '127.0.0.1:0': port '0'")):
        HttpExtension(Settings(http_allow="api.internal,127.0.0.1:0"))


def test_metadata_needs_an_exact_allow_entry() -> None:
    metadata = ip("169.254.169.254")
    assert not AllowList.parse("169.254.0.0/16").admits_address(metadata, 80)
    assert AllowList.parse("169.254.0.0/16").admits_address(ip("169.254.1.1"), 80)
    assert AllowList.parse("169.254.169.254").admits_address(metadata, 80)
    assert AllowList.parse("169.254.169.254/32").admits_address(metadata, 80)
    assert not AllowList.parse("fd00::/8").admits_address(ip("fd00:ec2::254"), 80)
    assert AllowList.parse("[fd00:ec2::254]:80").admits_address(ip("fd00:ec2::254"), 80)
    mapped = ip("::ffff:169.254.169.254")
    assert not AllowList.parse("::ffff:0:0/96").admits_address(mapped, 80)
    assert not AllowList.parse("169.254.0.0/16").admits_address(mapped, 80)
    assert AllowList.parse("169.254.169.254").admits_address(mapped, 80)


def test_an_entry_with_a_port_admits_that_port_only() -> None:
    allow = AllowList.parse("127.0.0.1:8080,10.0.0.0/8:443,[fd00::/8]:8443,api.internal:8443,*.svc.local:80")
    assert allow.admits_address(ip("127.0.0.1"), 8080)
    assert not allow.admits_address(ip("127.0.0.1"), 6379)
    assert allow.admits_address(ip("10.9.8.7"), 443)
    assert not allow.admits_address(ip("10.9.8.7"), 80)
    assert allow.admits_address(ip("fd12::1"), 8443)
    assert not allow.admits_address(ip("fd12::1"), 443)
    assert allow.admits_host("api.internal", 8443)
    assert not allow.admits_host("api.internal", 443)
    assert allow.admits_host("db.svc.local", 80)
    assert not allow.admits_host("db.svc.local", 6379)
    # Two entries for one address: each admits its own port.
    both = AllowList.parse("127.0.0.1:8080,127.0.0.1:9090")
    assert [both.admits_address(ip("127.0.0.1"), p) for p in (8080, 9090, 80)] == [True, True, False]


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_HTTP_ALLOW", "127.0.0.1,api.internal")
    monkeypatch.setenv("FLEET_HTTP_MAX_RESPONSE_BYTES", "1234")
    monkeypatch.setenv("FLEET_HTTP_MAX_REDIRECTS", "2")
    policy = HttpPolicy.from_settings(Settings())
    assert policy.max_response_bytes == 1234
    assert policy.max_redirects == 2
    assert policy.allow.admits_host("api.internal", 80)
    assert policy.allow.admits_address(ipaddress.ip_address("127.0.0.1"), 80)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALLOW", "MAX_RESPONSE_BYTES", "MAX_REDIRECTS"):
        monkeypatch.delenv(f"FLEET_HTTP_{name}", raising=False)
    settings = Settings()
    assert (settings.http_allow, settings.http_max_response_bytes, settings.http_max_redirects) == (
        "",
        10_485_760,
        5,
    )
    policy = HttpPolicy.from_settings(settings)
    assert (policy.allow, policy.max_response_bytes, policy.max_redirects) == (AllowList(), 10_485_760, 5)


def test_the_extension_takes_the_policy_of_its_workers_settings() -> None:
    policy = HttpExtension(Settings(http_allow="10.0.0.0/8", http_max_redirects=1)).policy
    assert policy.allow.admits_address(ipaddress.ip_address("10.1.1.1"), 80)
    assert not policy.allow.admits_address(ipaddress.ip_address("192.168.1.1"), 80)
    assert policy.max_redirects == 1
    with pytest.raises(ConfigError):
        HttpExtension(Settings(http_allow="127.1"))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://example.com/", "scheme"),
        ("http://user:secret@example.com/", "userinfo"),
        ("http://user@example.com/", "userinfo"),
    ],
)
async def test_scheme_and_userinfo_refused_without_lookup(
    url: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = fake_dns(monkeypatch, ["93.184.215.14"])
    with pytest.raises(DestinationBlocked) as caught:
        await vet_url(URL(url), HttpPolicy())
    assert caught.value.code == ErrorCode.DESTINATION_BLOCKED
    assert caught.value.reason == reason
    assert lookups == []


async def test_a_name_is_refused_if_any_of_its_addresses_is(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, ["93.184.215.14", "10.0.0.1"])
    with pytest.raises(DestinationBlocked) as caught:
        await vet_url(URL("https://mixed.example/"), HttpPolicy())
    assert caught.value.details == {"host": "mixed.example", "reason": "private", "address": "10.0.0.1"}


@pytest.mark.parametrize(
    "addresses",
    [["10.0.0.1"], ["127.0.0.1", "::1"], ["100.64.0.7"], ["fd12::7"], ["::ffff:10.0.0.1"], ["8.8.8.8"]],
)
async def test_an_allowed_name_may_resolve_to_internal_addresses(
    addresses: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, addresses)
    target = await vet_url(URL("http://api.internal:8080/x"), allowing("api.internal"))
    assert (target.host, target.port, target.addresses) == ("api.internal", 8080, tuple(addresses))


@pytest.mark.parametrize(
    ("url", "entry", "addresses", "reason"),
    [
        ("http://api.internal/", "api.internal", ["169.254.169.254"], "metadata"),
        ("http://api.internal/", "api.internal", ["10.0.0.1", "169.254.169.254"], "metadata"),
        ("http://metadata.google.internal/", "metadata.google.internal", ["169.254.169.254"], "metadata"),
        ("http://api.internal/", "api.internal", ["fd00:ec2::254"], "metadata"),
        ("http://api.internal/", "api.internal", ["100.100.100.200"], "metadata"),
        ("http://api.internal/", "api.internal", ["::ffff:169.254.169.254"], "ipv4-mapped metadata"),
        ("http://api.internal/", "api.internal", ["169.254.10.1"], "link-local"),
        ("http://db.ns.svc.cluster.local/", "*.svc.cluster.local", ["169.254.10.1"], "link-local"),
        ("http://db.ns.svc.cluster.local/", "*.svc.cluster.local", ["fe80::1%eth0"], "link-local"),
        ("http://db.ns.svc.cluster.local/", "*.svc.cluster.local", ["64:ff9b::a9fe:a01"], "nat64 link-local"),
        ("http://db.ns.svc.cluster.local/", "*.svc.cluster.local", ["169.254.169.254"], "metadata"),
    ],
)
async def test_an_allowed_name_never_admits_metadata_or_link_local(
    url: str, entry: str, addresses: list[str], reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, addresses)
    with pytest.raises(DestinationBlocked) as caught:
        await vet_url(URL(url), allowing(entry))
    assert caught.value.reason == reason
    assert caught.value.address == str(ipaddress.ip_address(addresses[-1]))
    assert "an allowed name does not admit" in str(caught.value)


@pytest.mark.parametrize(
    ("entries", "addresses"),
    [
        (("api.internal", "169.254.169.254"), ["169.254.169.254"]),
        (("api.internal", "169.254.169.254:80"), ["169.254.169.254"]),
        (("*.svc.cluster.local", "169.254.0.0/16"), ["169.254.10.1"]),
        (("169.254.0.0/16",), ["169.254.10.1"]),  # the address entry alone admits it
        (("*.svc.cluster.local", "[fe80::/10]:80"), ["fe80::1"]),
    ],
)
async def test_an_address_entry_admits_metadata_and_link_local_behind_a_name(
    entries: tuple[str, ...], addresses: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, addresses)
    target = await vet_url(URL("http://db.ns.svc.cluster.local/"), allowing(*entries))
    assert target.addresses == tuple(addresses)


async def test_a_range_does_not_admit_metadata_behind_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, ["169.254.169.254"])
    with pytest.raises(DestinationBlocked) as caught:
        await vet_url(URL("http://api.internal/"), allowing("api.internal", "169.254.0.0/16"))
    assert caught.value.reason == "metadata"


async def test_a_port_in_the_entry_binds_every_url_form(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, ["10.0.0.1"])
    policy = allowing("api.internal:8443", "127.0.0.1:8080", "[::1]:8080")
    assert (await vet_url(URL("https://api.internal:8443/"), policy)).addresses == ("10.0.0.1",)
    assert (await vet_url(URL("http://127.0.0.1:8080/"), policy)).addresses == ()
    assert (await vet_url(URL("http://[::1]:8080/"), policy)).addresses == ()
    for url, address in [
        ("https://api.internal/", "10.0.0.1"),  # the scheme's default port: 443
        ("http://api.internal:8080/", "10.0.0.1"),
        ("http://127.0.0.1:6379/", "127.0.0.1"),
        ("http://127.0.0.1/", "127.0.0.1"),
        ("http://[::1]:6379/", "::1"),
    ]:
        with pytest.raises(DestinationBlocked) as caught:
            await vet_url(URL(url), policy)
        assert caught.value.address == address, url
        assert "admits it on port" in str(caught.value), url


async def test_a_public_address_has_no_port_restriction(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, ["93.184.215.14"])
    target = await vet_url(URL("http://example.com:6379/"), allowing("127.0.0.1:8080"))
    assert target.addresses == ("93.184.215.14",)


async def test_public_name_is_vetted_with_its_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    lookups = fake_dns(monkeypatch, ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
    target = await vet_url(URL("https://example.com/"), HttpPolicy())
    assert target.addresses == ("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    assert lookups == ["example.com"]


async def test_pinned_resolver_answers_only_vetted_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
    resolver = PinnedResolver()
    resolver.pin(await vet_url(URL("https://example.com/"), HttpPolicy()))
    answers = await resolver.resolve("example.com", 443, socket.AF_UNSPEC)
    assert [(a["hostname"], a["host"], a["port"]) for a in answers] == [
        ("example.com", "93.184.215.14", 443),
        ("example.com", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", 443),
    ]
    v4 = await resolver.resolve("example.com", 443, socket.AF_INET)
    assert [a["host"] for a in v4] == ["93.184.215.14"]
    with pytest.raises(DestinationBlocked):
        await resolver.resolve("other.example", 443)
    await resolver.close()


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(0, 2**32).map(str),
            st.integers(0, 2**32).map(lambda n: f"0{n:o}"),
            st.integers(0, 2**32).map(lambda n: f"0x{n:x}"),
            st.text("0123456789abcdefx", min_size=1, max_size=6),
        ),
        min_size=1,
        max_size=5,
    ).map(".".join)
)
def test_numeric_hosts_mean_what_the_system_resolver_thinks(host: str) -> None:
    # Whatever libc's inet_aton (the resolver's literal parser) turns into an address, the guard
    # reads as the same address — so no spelling reaches an address the guard did not check.
    # The guard may read more spellings as addresses than libc ("0x", as browsers do); those are
    # non-canonical and refused by vet_url whatever they mean.
    try:
        system: ipaddress.IPv4Address | None = ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        system = None
    try:
        ours = parse_host(host)
    except InvalidUrl:
        ours = None
    if system is not None:
        assert ours == system
    elif isinstance(ours, ipaddress.IPv4Address):
        assert str(ours) != host, f"{host!r} is canonical but the system resolver refuses it"
