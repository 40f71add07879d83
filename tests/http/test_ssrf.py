"""The SSRF guard on its own: address ranges, host parsing, the allow-list, settings, pinning."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from shared.contract import ErrorCode
from shared.errors import ConfigError
from shared.settings import Settings
from tests.http.conftest import allowing, fake_dns
from workers.http import ssrf
from workers.http.ssrf import (
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


def test_allow_list_parsing() -> None:
    allow = AllowList.parse(" 127.0.0.1, 10.20.0.0/16 ,fd00::/8, API.internal., *.svc.local,,")
    assert allow.admits_address(ipaddress.ip_address("127.0.0.1"))
    assert not allow.admits_address(ipaddress.ip_address("127.0.0.2"))
    assert allow.admits_address(ipaddress.ip_address("10.20.3.4"))
    assert not allow.admits_address(ipaddress.ip_address("10.21.0.1"))
    assert allow.admits_address(ipaddress.ip_address("fd12::1"))
    assert allow.admits_address(ipaddress.ip_address("::ffff:127.0.0.1"))  # the IPv4 it embeds
    assert allow.admits_host("api.internal")
    assert allow.admits_host("API.INTERNAL.")
    assert not allow.admits_host("x.api.internal")
    assert allow.admits_host("db.svc.local")
    assert allow.admits_host("a.b.svc.local")
    assert not allow.admits_host("svc.local")
    assert not allow.admits_host("evilsvc.local")
    assert not AllowList.parse("")


@pytest.mark.parametrize("entry", ["127.1", "not a host", "http://x", "10.0.0.0/33"])
def test_bad_allow_entries_are_config_errors(entry: str) -> None:
    with pytest.raises(ConfigError):
        AllowList.parse(entry)


def test_metadata_needs_an_exact_allow_entry() -> None:
    metadata = ipaddress.ip_address("169.254.169.254")
    assert not AllowList.parse("169.254.0.0/16").admits_address(metadata)
    assert AllowList.parse("169.254.0.0/16").admits_address(ipaddress.ip_address("169.254.1.1"))
    assert AllowList.parse("169.254.169.254").admits_address(metadata)
    assert AllowList.parse("169.254.169.254/32").admits_address(metadata)
    assert not AllowList.parse("fd00::/8").admits_address(ipaddress.ip_address("fd00:ec2::254"))
    mapped = ipaddress.ip_address("::ffff:169.254.169.254")
    assert not AllowList.parse("::ffff:0:0/96").admits_address(mapped)
    assert not AllowList.parse("169.254.0.0/16").admits_address(mapped)
    assert AllowList.parse("169.254.169.254").admits_address(mapped)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_HTTP_ALLOW", "127.0.0.1,api.internal")
    monkeypatch.setenv("FLEET_HTTP_MAX_RESPONSE_BYTES", "1234")
    monkeypatch.setenv("FLEET_HTTP_MAX_REDIRECTS", "2")
    policy = ssrf.current_policy()
    assert policy.max_response_bytes == 1234
    assert policy.max_redirects == 2
    assert policy.allow.admits_host("api.internal")
    assert policy.allow.admits_address(ipaddress.ip_address("127.0.0.1"))
    assert ssrf.current_policy() is policy  # read once


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALLOW", "MAX_RESPONSE_BYTES", "MAX_REDIRECTS"):
        monkeypatch.delenv(f"FLEET_HTTP_{name}", raising=False)
    settings = Settings()
    assert (settings.http_allow, settings.http_max_response_bytes, settings.http_max_redirects) == (
        "",
        10_485_760,
        5,
    )
    policy = ssrf.current_policy()
    assert (policy.allow, policy.max_response_bytes, policy.max_redirects) == (AllowList(), 10_485_760, 5)


def test_configure_from_a_workers_settings() -> None:
    ssrf.configure(Settings(http_allow="10.0.0.0/8", http_max_redirects=1))
    policy = ssrf.current_policy()
    assert policy.allow.admits_address(ipaddress.ip_address("10.1.1.1"))
    assert policy.max_redirects == 1
    with pytest.raises(ConfigError):
        ssrf.configure(Settings(http_allow="127.1"))


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


async def test_an_allowed_name_may_resolve_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, ["10.0.0.1"])
    target = await vet_url(URL("http://api.internal:8080/x"), allowing("api.internal"))
    assert (target.host, target.port, target.addresses) == ("api.internal", 8080, ("10.0.0.1",))


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
