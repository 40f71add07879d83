"""The guarded client against loopback fakes: refusals (without any DNS lookup or connection),
DNS pinning, redirects, the response cap, timeouts, connection failures, TLS, body decoding."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from yarl import URL

from shared.contract import ErrorCode
from shared.errors import ExecutionFailed
from shared.settings import Settings
from tests.http.conftest import Certs, Fake, Listener, Spies, allowing, fake_dns
from workers.http import client, ssrf
from workers.http.client import decode_body, read_capped, send
from workers.http.ssrf import HttpPolicy, VettedTarget

StartFake = Callable[..., Awaitable[Fake]]


def redirect(location: str, status: int = 302) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": location})

    return handler


async def failure(awaitable: Awaitable[object]) -> ExecutionFailed:
    with pytest.raises(ExecutionFailed) as caught:
        await awaitable
    return caught.value


# ------------------------------------------------------------------------------ allow-list
async def test_loopback_target_reachable_through_the_allow_list_setting(fake: Fake, spies: Spies) -> None:
    policy = HttpPolicy.from_settings(Settings(http_allow="127.0.0.1"))
    response = await send(
        "GET", fake.url("/hello"), headers={"X-Test": "1"}, query=[("a", "1")], timeout=10, policy=policy
    )
    assert response.as_result() == {
        "status": 200,
        "headers": response.headers,
        "body": {"ok": True},
    }
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    [seen] = fake.requests
    assert (seen.method, seen.path, seen.query) == ("GET", "/hello", {"a": ["1"]})
    assert seen.headers["X-Test"] == "1"
    assert seen.headers["Host"] == f"127.0.0.1:{fake.port}"
    assert seen.headers["User-Agent"] == client.USER_AGENT
    assert spies.lookups == []  # an IP literal is never looked up
    assert len(spies.connects) == 1


async def test_allow_list_by_cidr(fake: Fake) -> None:
    response = await send("GET", fake.url(), timeout=10, policy=allowing("127.0.0.0/8"))
    assert response.status == 200


async def test_loopback_refused_without_allow_list(fake: Fake, spies: Spies) -> None:
    error = await failure(send("GET", fake.url(), timeout=10, policy=HttpPolicy()))
    assert error.code == ErrorCode.DESTINATION_BLOCKED
    assert error.retryable is False
    assert error.details == {"host": "127.0.0.1", "reason": "loopback", "address": "127.0.0.1"}
    assert fake.requests == []
    assert spies.connects == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.1/", "private"),
        ("http://172.16.5.4:8080/", "private"),
        ("http://192.168.0.1/", "private"),
        ("http://169.254.10.1/", "link-local"),
        ("http://100.64.0.1/", "cgnat"),
        ("http://224.0.0.251/", "multicast"),
        ("http://0.0.0.0:8080/", "unspecified"),
        ("http://240.0.0.1/", "reserved"),
        ("http://[::]/", "unspecified"),
        ("http://[::1]/", "loopback"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fc00::1]/", "unique-local"),
        ("http://[fd12:3456::1]/", "unique-local"),
        ("http://[ff02::1]/", "multicast"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
        ("http://[::ffff:127.0.0.1]/", "ipv4-mapped loopback"),
        ("http://[::ffff:a9fe:a9fe]/", "ipv4-mapped metadata"),
        ("http://[::ffff:192.168.1.1]/", "ipv4-mapped private"),
        ("http://[2002:7f00:1::]/", "6to4 loopback"),
        ("http://[64:ff9b::a9fe:a9fe]/", "nat64 metadata"),
        ("http://2130706433/", "loopback"),
        ("http://0x7f.1/", "loopback"),
        ("http://0x7f000001/", "loopback"),
        ("http://017700000001/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://2852039166/", "metadata"),
        ("https://0xa9fea9fe/", "metadata"),
    ],
)
async def test_blocked_literals_are_refused_before_any_lookup_or_connect(
    url: str, reason: str, spies: Spies
) -> None:
    error = await failure(send("GET", url, timeout=10, policy=HttpPolicy()))
    assert error.code == ErrorCode.DESTINATION_BLOCKED
    assert error.details["reason"] == reason
    assert spies.lookups == []
    assert spies.connects == []


async def test_blocked_even_when_a_different_loopback_address_is_allowed(
    listener: Listener, spies: Spies
) -> None:
    error = await failure(
        send("GET", f"http://127.0.0.2:{listener.port}/", timeout=10, policy=allowing("127.0.0.1"))
    )
    assert error.code == ErrorCode.DESTINATION_BLOCKED
    assert listener.accepted == 0
    assert spies.connects == []


async def test_metadata_stays_blocked_under_a_range_allow_entry(spies: Spies) -> None:
    error = await failure(
        send("GET", "http://169.254.169.254/", timeout=10, policy=allowing("169.254.0.0/16"))
    )
    assert error.details["reason"] == "metadata"
    assert spies.connects == []


async def test_hostname_resolving_to_a_private_address(monkeypatch: pytest.MonkeyPatch, spies: Spies) -> None:
    lookups = fake_dns(monkeypatch, ["192.168.10.20"])
    error = await failure(send("GET", "https://intranet.example.com/", timeout=10, policy=HttpPolicy()))
    assert error.code == ErrorCode.DESTINATION_BLOCKED
    assert error.details == {"host": "intranet.example.com", "reason": "private", "address": "192.168.10.20"}
    assert lookups == ["intranet.example.com"]
    assert spies.connects == []


async def test_localhost_is_refused(fake: Fake, spies: Spies) -> None:
    error = await failure(send("GET", fake.url(host="localhost"), timeout=10, policy=HttpPolicy()))
    assert error.code == ErrorCode.DESTINATION_BLOCKED
    assert error.details["reason"] == "loopback"
    assert spies.lookups == ["localhost"]
    assert spies.connects == []
    assert fake.requests == []


async def test_localhost_allowed_by_name(fake: Fake) -> None:
    response = await send("GET", fake.url(host="localhost"), timeout=10, policy=allowing("localhost"))
    assert response.status == 200
    assert fake.requests[0].headers["Host"] == f"localhost:{fake.port}"


@pytest.mark.parametrize(
    ("url", "reason"),
    [("ftp://127.0.0.1/", "scheme"), ("http://user:pass@127.0.0.1/", "userinfo")],
)
async def test_scheme_and_userinfo(url: str, reason: str, spies: Spies) -> None:
    error = await failure(send("GET", url, timeout=10, policy=allowing("127.0.0.1")))
    assert (error.code, error.details["reason"]) == (ErrorCode.DESTINATION_BLOCKED, reason)
    assert spies.connects == []


@pytest.mark.parametrize("url", ["http:///nohost", "http://exa mple.com/", "http://1.2.3.4.5/", "not a url"])
async def test_unusable_urls_are_invalid_input(url: str) -> None:
    error = await failure(send("GET", url, timeout=10, policy=HttpPolicy()))
    assert error.code in (ErrorCode.INVALID_INPUT, ErrorCode.DESTINATION_BLOCKED)
    if url != "not a url":  # no scheme: refused as a scheme
        assert error.code == ErrorCode.INVALID_INPUT


# ------------------------------------------------------------------------------ DNS pinning
async def test_connection_goes_to_the_vetted_address_and_dns_is_asked_once_per_hop(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, spies: Spies
) -> None:
    # "rebind.test" exists nowhere: the only way to reach the fake is the pinned 127.0.0.1.
    # The first hop resolves to the allowed 127.0.0.1; the name then "rebinds" to 10.0.0.1.
    lookups = fake_dns(monkeypatch, ["127.0.0.1"], ["10.0.0.1"])
    fake.routes["/first"] = redirect("/second")
    error = await failure(
        send("GET", fake.url("/first", host="rebind.test"), timeout=10, policy=allowing("127.0.0.1/32"))
    )
    assert error.code == ErrorCode.DESTINATION_BLOCKED
    assert error.details == {"host": "rebind.test", "reason": "private", "address": "10.0.0.1"}
    assert lookups == ["rebind.test", "rebind.test"]  # one lookup per hop, none by the connector
    assert [r.path for r in fake.requests] == ["/first"]
    assert fake.requests[0].headers["Host"] == f"rebind.test:{fake.port}"
    assert len(spies.connects) == 1


async def test_pinned_name_succeeds_with_a_single_lookup(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    lookups = fake_dns(monkeypatch, ["127.0.0.1"], ["10.0.0.1"])
    response = await send("GET", fake.url("/x", host="pinned.test"), timeout=10, policy=allowing("127.0.0.1"))
    assert response.status == 200
    assert lookups == ["pinned.test"]
    assert fake.requests[0].headers["Host"] == f"pinned.test:{fake.port}"


async def test_connector_refuses_a_name_that_was_not_vetted(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, spies: Spies
) -> None:
    # Fail closed: should a hop ever reach the connector without pinned addresses, the pinned
    # resolver refuses instead of falling back to a DNS lookup of its own.
    async def unpinned(url: URL, policy: HttpPolicy) -> VettedTarget:
        return VettedTarget(url=url, host=url.raw_host or "", port=url.port or 80, addresses=())

    monkeypatch.setattr(ssrf, "vet_url", unpinned)
    error = await failure(send("GET", fake.url(host="unvetted.test"), timeout=10, policy=HttpPolicy()))
    assert error.code == ErrorCode.DESTINATION_BLOCKED
    assert error.details == {"host": "unvetted.test", "reason": "not-vetted"}
    assert len(spies.connects) == 1
    assert spies.lookups == []
    assert fake.requests == []


async def test_tls_sni_and_verification_use_the_hostname_not_the_pinned_address(
    start_fake: StartFake, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = await start_fake(ssl_context=certs.server_context())
    fake_dns(monkeypatch, ["127.0.0.1"])
    response = await send(
        "GET",
        fake.url("/tls", host="pinned.test"),
        timeout=10,
        policy=allowing("127.0.0.1"),
        ssl_context=certs.client_context(),
    )
    assert response.status == 200
    assert fake.requests[0].headers["Host"] == f"pinned.test:{fake.port}"


@pytest.mark.parametrize("host", ["other.test", "127.0.0.1"])
async def test_tls_certificate_for_another_name_is_rejected(
    host: str, start_fake: StartFake, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = await start_fake(ssl_context=certs.server_context())
    fake_dns(monkeypatch, ["127.0.0.1"])
    error = await failure(
        send(
            "GET",
            fake.url("/tls", host=host),
            timeout=10,
            policy=allowing("127.0.0.1"),
            ssl_context=certs.client_context(),
        )
    )
    assert error.code == ErrorCode.CONNECTION_FAILED
    assert error.retryable is False
    assert error.details == {"host": host, "reason": "tls-certificate"}
    assert fake.requests == []


# ------------------------------------------------------------------------------ redirects
async def test_redirect_to_a_blocked_loopback_address_never_connects(
    fake: Fake, listener: Listener, spies: Spies
) -> None:
    fake.routes["/go"] = redirect(f"http://127.0.0.2:{listener.port}/admin")
    error = await failure(send("GET", fake.url("/go"), timeout=10, policy=allowing("127.0.0.1")))
    assert error.code == ErrorCode.DESTINATION_BLOCKED
    assert error.details == {"host": "127.0.0.2", "reason": "loopback", "address": "127.0.0.2"}
    assert listener.accepted == 0
    assert len(spies.connects) == 1  # the first hop only


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/iam/", "metadata"),
        ("http://10.0.0.1/", "private"),
        ("http://[::ffff:10.0.0.1]/", "ipv4-mapped private"),
        ("http://167772161/", "private"),  # 10.0.0.1
        ("http://2130706433/", "non-canonical-ip"),  # 127.0.0.1 is allowed, the spelling is not
        ("file:///etc/passwd", "scheme"),
        ("http://user:pw@127.0.0.1/", "userinfo"),
    ],
)
async def test_redirect_to_a_blocked_destination(
    location: str, reason: str, fake: Fake, spies: Spies
) -> None:
    fake.routes["/go"] = redirect(location, 307)
    error = await failure(send("GET", fake.url("/go"), timeout=10, policy=allowing("127.0.0.1")))
    assert (error.code, error.details["reason"]) == (ErrorCode.DESTINATION_BLOCKED, reason)
    assert len(spies.connects) == 1
    assert [r.path for r in fake.requests] == ["/go"]


def chain(fake: Fake, hops: int) -> None:
    for i in range(hops):
        fake.routes[f"/r{i}"] = redirect(f"/r{i + 1}" if i % 2 else fake.url(f"/r{i + 1}"))


async def test_five_redirects_are_followed(fake: Fake, spies: Spies) -> None:
    chain(fake, 5)
    response = await send("GET", fake.url("/r0"), timeout=10, policy=allowing("127.0.0.1"))
    assert (response.status, response.redirects, response.url) == (200, 5, fake.url("/r5"))
    assert [r.path for r in fake.requests] == [f"/r{i}" for i in range(6)]
    assert len(spies.connects) == 6  # every hop on a fresh, vetted connection


async def test_a_sixth_redirect_fails(fake: Fake) -> None:
    chain(fake, 6)
    error = await failure(send("GET", fake.url("/r0"), timeout=10, policy=allowing("127.0.0.1")))
    assert error.code == ErrorCode.TOO_MANY_REDIRECTS
    assert error.details == {"limit": 5, "url": fake.url("/r5")}
    assert len(fake.requests) == 6  # /r6 is never asked for


async def test_redirect_limit_is_configurable(fake: Fake) -> None:
    chain(fake, 1)
    error = await failure(
        send(
            "GET",
            fake.url("/r0"),
            query=[("token", "s3cret")],
            timeout=10,
            policy=allowing("127.0.0.1", max_redirects=0),
        )
    )
    assert error.code == ErrorCode.TOO_MANY_REDIRECTS
    assert error.details == {"limit": 0, "url": fake.url("/r0")}  # no query: it may carry tokens
    assert fake.requests[0].query == {"token": ["s3cret"]}


async def test_303_turns_a_post_into_a_get_without_body(fake: Fake) -> None:
    fake.routes["/submit"] = redirect("/done", 303)
    await send(
        "POST",
        fake.url("/submit"),
        headers={"Content-Type": "application/json", "Authorization": "Bearer t0ken"},
        body=b'{"a": 1}',
        timeout=10,
        policy=allowing("127.0.0.1"),
    )
    first, second = fake.requests
    assert (first.method, first.body) == ("POST", b'{"a": 1}')
    assert (second.method, second.body) == ("GET", b"")
    assert "Content-Type" not in second.headers
    assert second.headers["Authorization"] == "Bearer t0ken"  # same origin: kept


async def test_307_repeats_method_and_body(fake: Fake) -> None:
    fake.routes["/submit"] = redirect("/again", 307)
    await send("PUT", fake.url("/submit"), body=b"payload", timeout=10, policy=allowing("127.0.0.1"))
    assert [(r.method, r.path, r.body) for r in fake.requests] == [
        ("PUT", "/submit", b"payload"),
        ("PUT", "/again", b"payload"),
    ]


async def test_cross_origin_redirect_drops_credentials(start_fake: StartFake) -> None:
    first, second = await start_fake(), await start_fake()
    first.routes["/go"] = redirect(second.url("/landing"))
    await send(
        "GET",
        first.url("/go"),
        headers={"Authorization": "Bearer t0ken", "Cookie": "s=1", "X-Api-Key": "k3y", "X-Other": "kept"},
        sensitive_headers={"x-api-key"},
        timeout=10,
        policy=allowing("127.0.0.1"),
    )
    assert first.requests[0].headers["Authorization"] == "Bearer t0ken"
    landed = second.requests[0].headers
    assert "Authorization" not in landed
    assert "Cookie" not in landed
    assert "X-Api-Key" not in landed
    assert landed["X-Other"] == "kept"


async def test_redirect_without_location_is_the_response(fake: Fake) -> None:
    async def no_location(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, text="moved somewhere")

    fake.routes["/x"] = no_location
    response = await send("GET", fake.url("/x"), timeout=10, policy=allowing("127.0.0.1"))
    assert (response.status, response.decoded()) == (302, "moved somewhere")


# ------------------------------------------------------------------------------ size cap
async def test_streamed_body_over_the_cap(fake: Fake) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(20):
            await response.write(b"x" * 16_384)
        await response.write_eof()
        return response

    fake.routes["/big"] = stream
    error = await failure(
        send("GET", fake.url("/big"), timeout=10, policy=allowing("127.0.0.1", max_response_bytes=50_000))
    )
    assert error.code == ErrorCode.RESPONSE_TOO_LARGE
    assert error.details == {"limit_bytes": 50_000}
    assert error.retryable is False


async def test_declared_length_over_the_cap_fails_before_reading(fake: Fake) -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"y" * 2000)

    fake.routes["/big"] = big
    error = await failure(
        send("GET", fake.url("/big"), timeout=10, policy=allowing("127.0.0.1", max_response_bytes=1999))
    )
    assert error.code == ErrorCode.RESPONSE_TOO_LARGE
    assert error.details == {"limit_bytes": 1999, "content_length": 2000}


async def test_head_is_not_judged_by_the_length_it_announces(fake: Fake) -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"y" * 2000)

    fake.routes["/big"] = big
    response = await send(
        "HEAD", fake.url("/big"), timeout=10, policy=allowing("127.0.0.1", max_response_bytes=10)
    )
    assert (response.status, response.headers["content-length"], response.body) == (200, "2000", b"")


async def test_body_exactly_at_the_cap_is_fine(fake: Fake) -> None:
    async def exact(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"z" * 2000, content_type="text/plain")

    fake.routes["/exact"] = exact
    response = await send(
        "GET", fake.url("/exact"), timeout=10, policy=allowing("127.0.0.1", max_response_bytes=2000)
    )
    assert response.decoded() == "z" * 2000


async def test_compressed_body_is_capped_after_decoding(fake: Fake) -> None:
    bomb = gzip.compress(b"\0" * 5_000_000)  # ~5 KB on the wire

    async def compressed(request: web.Request) -> web.StreamResponse:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})

    fake.routes["/bomb"] = compressed
    error = await failure(
        send("GET", fake.url("/bomb"), timeout=10, policy=allowing("127.0.0.1", max_response_bytes=100_000))
    )
    assert error.code == ErrorCode.RESPONSE_TOO_LARGE


async def test_read_capped_holds_at_most_the_cap_plus_one_chunk() -> None:
    pulled = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(1000):
            pulled += 1
            yield b"c" * 1000

    with pytest.raises(ExecutionFailed) as caught:
        await read_capped(chunks(), 10_500)
    assert caught.value.code == ErrorCode.RESPONSE_TOO_LARGE
    assert pulled == 11  # 10 chunks fit (10,000 bytes); the 11th crosses the cap and stops the read


# ------------------------------------------------------------------------ time and failures
async def test_timeout(fake: Fake) -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        await fake.release.wait()
        return web.Response(text="late")

    fake.routes["/slow"] = stall
    error = await failure(send("GET", fake.url("/slow"), timeout=0.2, policy=allowing("127.0.0.1")))
    assert error.code == ErrorCode.TIMEOUT
    assert error.retryable is True
    assert error.details == {"timeout_seconds": 0.2}


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = await failure(send("GET", f"http://127.0.0.1:{port}/", timeout=10, policy=allowing("127.0.0.1")))
    assert error.code == ErrorCode.CONNECTION_FAILED
    assert error.retryable is True
    assert error.details == {"host": "127.0.0.1", "reason": "connect"}


async def test_dns_failure_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_such_name(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr("workers.http.ssrf.resolve_host", no_such_name)
    error = await failure(send("GET", "https://nowhere.invalid/", timeout=10, policy=HttpPolicy()))
    assert error.code == ErrorCode.CONNECTION_FAILED
    assert error.retryable is True
    assert error.details == {"host": "nowhere.invalid", "reason": "dns"}


async def test_server_dropping_the_connection_is_retryable(start_fake: StartFake) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        error = await failure(
            send("GET", f"http://127.0.0.1:{port}/", timeout=10, policy=allowing("127.0.0.1"))
        )
    finally:
        server.close()
        await server.wait_closed()
    assert error.code == ErrorCode.CONNECTION_FAILED
    assert error.retryable is True


async def test_malformed_response_is_an_http_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        error = await failure(
            send("GET", f"http://127.0.0.1:{port}/", timeout=10, policy=allowing("127.0.0.1"))
        )
    finally:
        server.close()
        await server.wait_closed()
    assert error.code == ErrorCode.HTTP_ERROR
    assert error.retryable is False


# ------------------------------------------------------------------------------ decoding
@pytest.mark.parametrize(
    ("body", "content_type", "charset", "expected"),
    [
        (b'{"a": [1, 2]}', "application/json", None, {"a": [1, 2]}),
        (b'{"title": "x"}', "application/problem+json", None, {"title": "x"}),
        (b"[1, 2]", "application/vnd.api+json", None, [1, 2]),
        (b"not json {", "application/json", None, "not json {"),
        (b'{"a": 1}', "text/plain", "utf-8", '{"a": 1}'),
        (b"<p>hi</p>", "text/html", None, "<p>hi</p>"),
        ("caf\u00e9".encode("latin-1"), "text/plain", "iso-8859-1", "caf\u00e9"),
        (b"\xff\xfe", "application/octet-stream", None, "\ufffd\ufffd"),
        (b"abc", "text/plain", "no-such-charset", "abc"),
        (b"", "application/json", None, ""),
    ],
)
def test_decode_body(body: bytes, content_type: str, charset: str | None, expected: object) -> None:
    assert decode_body(body, content_type, charset) == expected


async def test_repeated_response_headers_are_joined(fake: Fake) -> None:
    async def cookies(request: web.Request) -> web.StreamResponse:
        response = web.Response(text="ok")
        response.headers.add("X-Multi", "a")
        response.headers.add("X-Multi", "b")
        return response

    fake.routes["/h"] = cookies
    response = await send("HEAD", fake.url("/h"), timeout=10, policy=allowing("127.0.0.1"))
    assert response.headers["x-multi"] == "a, b"
    assert response.body == b""
