"""The Dapr app channel's bounds: body size, read timeouts, and a shutdown that a slow client
cannot hold (issue 12). Real sockets on loopback; the sidecar is the fake daprd."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from shared.settings import Settings
from shared.transports import dapr_http
from shared.transports.base import Outcome, Settlement
from shared.transports.dapr_http import DaprTransport
from tests.contract.conftest import DOMAIN
from tests.fakes.daprd import FakeDaprd

TOKEN = "app-token"
#: Generous bound on anything these tests wait for; a bounded step finishes far sooner.
PATIENCE = 10.0


@pytest.fixture
async def sidecar(redis_url: str) -> AsyncIterator[FakeDaprd]:
    async with FakeDaprd(redis_url, app_id="fleet-ai", outbound_ready=True) as fake:
        yield fake


@pytest.fixture
def transport_settings(make_settings: Callable[..., Settings], sidecar: FakeDaprd) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        options: dict[str, Any] = {
            "app_port": 0,
            "dapr_http_port": sidecar.http_port,
            "app_api_token": TOKEN,
            "block_ms": 50,
        }
        options.update(overrides)
        return make_settings(**options)

    return factory


@contextlib.asynccontextmanager
async def open_transport(settings: Settings) -> AsyncIterator[DaprTransport]:
    transport = DaprTransport(topic=settings.topic_for(DOMAIN), domain=DOMAIN, settings=settings)
    await transport.open()
    try:
        yield transport
    finally:
        await transport.close()


def request_head(content_length: int | None = None, *, chunked: bool = False) -> bytes:
    lines = ["POST /events HTTP/1.1", "Host: 127.0.0.1", f"dapr-api-token: {TOKEN}"]
    lines.append("Content-Type: application/json")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (fails if it never does)."""
    return await asyncio.wait_for(reader.read(), PATIENCE)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def bulk_body(entries: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(
        {
            "entries": entries,
            "id": os.urandom(16).hex(),
            "metadata": {"pubsubName": "fleet-pubsub"},
            "pubsubname": "fleet-pubsub",
            "topic": "functions.ai",
            "type": dapr_http.BULK_EVENT_TYPE,
        }
    )


def largest_entries(settings: Settings) -> list[dict[str, Any]]:
    """``batch_size`` entries each as large as a bulk delivery legitimately carries them: an
    event of ``max_payload_bytes`` raw bytes, base64-encoded as daprd does for raw payloads."""
    return [
        {
            "entryId": f"entry-{n}",
            "event": base64.b64encode(os.urandom(settings.max_payload_bytes)).decode(),
            "metadata": {"traceparent": f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"},
            "contentType": "application/octet-stream",
        }
        for n in range(settings.batch_size)
    ]


def test_the_body_limit_follows_the_bulk_subscription_and_the_payload_limit() -> None:
    """Documented formula (docs/deploy.md): bulk N x (ceil(4P/3) + 16 KiB) + 64 KiB; single
    2P + 64 KiB. The defaults (100 x 1 MiB) give about 135 MiB, not the 206 MiB of before."""
    mib = 1024 * 1024
    bulk = Settings(batch_size=100, max_payload_bytes=mib, dapr_bulk_subscribe=True)
    assert dapr_http.max_body_bytes(bulk) == 100 * (1_398_102 + 16_384) + 65_536
    single = bulk.model_copy(update={"dapr_bulk_subscribe": False})
    assert dapr_http.max_body_bytes(single) == 2 * mib + 65_536
    small_batch = bulk.model_copy(update={"batch_size": 1})
    assert dapr_http.max_body_bytes(small_batch) == 2 * mib + 65_536  # a single event fits too


async def test_a_stalled_body_does_not_hold_shutdown(transport_settings: Callable[..., Settings]) -> None:
    """Headers and one body byte, then silence: close() (SIGTERM) ends the read at once and
    answers 503, instead of waiting for the body (aiohttp's default: about a minute)."""
    settings = transport_settings(shutdown_timeout=1.0, app_read_timeout=300.0)
    transport = DaprTransport(topic=settings.topic_for(DOMAIN), domain=DOMAIN, settings=settings)
    await transport.open()
    reader, writer = await asyncio.open_connection("127.0.0.1", transport.port)
    try:
        writer.write(request_head(1000) + b"{")
        await writer.drain()
        await asyncio.sleep(0.2)  # let the handler start reading the body

        await asyncio.wait_for(transport.close(), PATIENCE)

        response = await read_until_closed(reader)
        assert status_of(response) == 503
    finally:
        writer.close()
        await transport.close()


async def test_a_stalled_body_is_answered_408_and_runs_nothing(
    transport_settings: Callable[..., Settings],
) -> None:
    settings = transport_settings(app_read_timeout=0.5)
    async with open_transport(settings) as transport:
        reader, writer = await asyncio.open_connection("127.0.0.1", transport.port)
        try:
            writer.write(request_head(1000) + b"{")
            await writer.drain()
            response = await read_until_closed(reader)
        finally:
            writer.close()
        assert status_of(response) == 408
        assert b"connection: close" in response.lower()
        assert await transport.receive(10) == []


async def test_headers_that_never_finish_are_cut_off(
    transport_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dapr_http, "HEADER_TIMEOUT_S", 0.5)
    async with open_transport(transport_settings()) as transport:
        reader, writer = await asyncio.open_connection("127.0.0.1", transport.port)
        try:
            writer.write(b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            await writer.drain()
            assert await read_until_closed(reader) == b""
        finally:
            writer.close()
        assert await transport.receive(10) == []


async def test_a_body_over_the_limit_is_refused_413_from_its_content_length(
    transport_settings: Callable[..., Settings],
) -> None:
    settings = transport_settings(batch_size=3, max_payload_bytes=1024)
    limit = dapr_http.max_body_bytes(settings)
    async with open_transport(settings) as transport:
        reader, writer = await asyncio.open_connection("127.0.0.1", transport.port)
        try:
            # Only the head and a little body: the answer must not wait for the rest.
            writer.write(request_head(limit + 1) + b'{"entries": [')
            await writer.drain()
            response = await read_until_closed(reader)
        finally:
            writer.close()
        assert status_of(response) == 413
        assert await transport.receive(10) == []


async def test_a_chunked_body_over_the_limit_is_refused_413_and_runs_nothing(
    transport_settings: Callable[..., Settings],
) -> None:
    settings = transport_settings(batch_size=3, max_payload_bytes=1024)
    limit = dapr_http.max_body_bytes(settings)
    body = bulk_body(largest_entries(settings))
    body += b" " * (limit + 1 - len(body))  # valid JSON, one byte too many
    async with open_transport(settings) as transport:
        reader, writer = await asyncio.open_connection("127.0.0.1", transport.port)
        try:
            writer.write(request_head(chunked=True))
            for start in range(0, len(body), 16_384):
                chunk = body[start : start + 16_384]
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            writer.write(b"0\r\n\r\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            response = await read_until_closed(reader)
        finally:
            writer.close()
        assert status_of(response) == 413
        assert await transport.receive(10) == []


async def test_a_bulk_delivery_at_the_legitimate_maximum_is_served(
    transport_settings: Callable[..., Settings],
) -> None:
    """batch_size entries of the largest legitimate size fit, and so does a body of exactly
    the limit: each entry is delivered and answered."""
    settings = transport_settings(batch_size=3, max_payload_bytes=4096)
    limit = dapr_http.max_body_bytes(settings)
    entries = largest_entries(settings)
    body = bulk_body(entries)
    assert len(body) <= limit
    body += b" " * (limit - len(body))
    async with open_transport(settings) as transport:
        reader, writer = await asyncio.open_connection("127.0.0.1", transport.port)
        try:
            writer.write(request_head(len(body)) + body)
            await writer.drain()
            deliveries = []
            while len(deliveries) < len(entries):
                deliveries += await asyncio.wait_for(transport.receive(10), PATIENCE)
            assert [d.body for d in deliveries] == [e["event"].encode() for e in entries]
            await transport.settle([Settlement(d, Outcome.ACK) for d in deliveries])
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE)
            length = int(
                next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))[15:]
            )
            answer = orjson.loads(await reader.readexactly(length))
        finally:
            writer.close()
    assert status_of(head) == 200
    assert answer == {"statuses": [{"entryId": e["entryId"], "status": "SUCCESS"} for e in entries]}
