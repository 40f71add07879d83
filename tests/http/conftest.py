"""Fixtures for the ``http`` worker: loopback fakes (aiohttp servers on 127.0.0.x, port 0) that
record every request, spies proving that no DNS lookup or connection happened, and a throwaway
CA for TLS tests (made with the ``openssl`` command)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from shared.resources import Resources
from workers.http import ssrf
from workers.http.ssrf import AllowList, HttpPolicy

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    """One request a fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Fake:
    """An aiohttp server on loopback; ``routes`` maps a path to its handler (default: 200 JSON
    ``{"ok": true}``); ``requests`` lists what arrived."""

    host: str = "127.0.0.1"
    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    port: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    def url(self, path: str = "/", host: str | None = None) -> str:
        return f"http{'s' if self._tls else ''}://{host or self.host}:{self.port}{path}"

    _tls: bool = False

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> Fake:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=ssl_context)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]
        self._tls = ssl_context is not None
        return self

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            Seen(
                method=request.method,
                path=request.path,
                query={k: request.query.getall(k) for k in request.query},
                headers=dict(request.headers),
                body=await request.read(),
            )
        )
        handler = self.routes.get(request.path)
        if handler is None:
            return web.json_response({"ok": True})
        return await handler(request)

    async def close(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def start_fake() -> AsyncIterator[Callable[..., Awaitable[Fake]]]:
    """``await start_fake(host="127.0.0.1", ssl_context=None)`` — closed after the test."""
    fakes: list[Fake] = []

    async def start(host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None) -> Fake:
        fake = await Fake(host=host).start(ssl_context)
        fakes.append(fake)
        return fake

    yield start
    for fake in fakes:
        await fake.close()


@pytest.fixture
async def fake(start_fake: Callable[..., Awaitable[Fake]]) -> Fake:
    return await start_fake()


@dataclass
class Listener:
    """A bare TCP listener counting accepted connections (proves no connect was attempted)."""

    host: str
    port: int = 0
    accepted: int = 0
    server: asyncio.Server | None = None

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    """A TCP listener on 127.0.0.2 (loopback, but not the allow-listed 127.0.0.1)."""
    result = Listener(host="127.0.0.2")
    result.server = await asyncio.start_server(result._on_connect, result.host, 0)
    result.port = result.server.sockets[0].getsockname()[1]
    yield result
    result.server.close()
    await result.server.wait_closed()


@dataclass
class Spies:
    """Counts of DNS lookups (``ssrf.resolve_host``) and connector connects."""

    lookups: list[str] = field(default_factory=list)
    connects: list[str] = field(default_factory=list)


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> Spies:
    """Record every real DNS lookup of the guard and every connection the client opens."""
    seen = Spies()
    real_resolve = ssrf.resolve_host
    real_connect = aiohttp.TCPConnector.connect

    async def resolve(host: str, port: int) -> list[str]:
        seen.lookups.append(host)
        return await real_resolve(host, port)

    async def connect(self: aiohttp.TCPConnector, req: Any, *args: Any, **kwargs: Any) -> Any:
        seen.connects.append(str(req.url))
        return await real_connect(self, req, *args, **kwargs)

    monkeypatch.setattr(ssrf, "resolve_host", resolve)
    monkeypatch.setattr(aiohttp.TCPConnector, "connect", connect)
    return seen


def fake_dns(monkeypatch: pytest.MonkeyPatch, *answers: list[str]) -> list[str]:
    """Make ``ssrf.resolve_host`` answer ``answers`` in turn (the last one repeats); returns the
    list of hosts looked up."""
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return list(answers[min(len(calls), len(answers)) - 1])

    monkeypatch.setattr(ssrf, "resolve_host", resolve)
    return calls


def allowing(*entries: str, **limits: Any) -> HttpPolicy:
    return HttpPolicy(allow=AllowList.parse(",".join(entries)), **limits)


def with_policy(policy: HttpPolicy) -> Resources:
    """A worker's resources holding ``policy``, as :class:`~workers.http.HttpExtension` provides
    it (for handlers and executors called directly)."""
    resources = Resources()
    resources.provide(HttpPolicy, policy)
    return resources


# ------------------------------------------------------------------------------------ TLS
@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA and a server certificate for ``pinned.test`` only (no IP SAN)."""
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Fleet Test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    )
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=pinned.test")
    (d / "ext.cnf").write_text("subjectAltName=DNS:pinned.test\nextendedKeyUsage=serverAuth\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )
    return Certs(ca=d / "ca.pem", cert=d / "server.pem", key=d / "server.key")
