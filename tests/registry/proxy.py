"""A TCP proxy on loopback in front of PostgreSQL, to cut and restore the database for a
worker without touching the server other tests share."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit, urlunsplit


class PgProxy:
    """Forwards 127.0.0.1:<port> to the server of ``url`` (TCP or unix socket).

    :meth:`cut` closes every proxied connection and refuses new ones; :meth:`restore` listens
    again on the same port. :attr:`url` is ``url`` routed through the proxy.
    """

    def __init__(self, url: str) -> None:
        self._target = urlsplit(url)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        t = self._target
        user = t.username or "postgres"
        query = "&".join(f"{k}={v[0]}" for k, v in parse_qs(t.query).items() if k != "host")
        return urlunsplit((t.scheme, f"{user}@127.0.0.1:{self.port}", t.path, query, ""))

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        t = self._target
        host = parse_qs(t.query).get("host", [None])[0]
        if host and host.startswith("/"):
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{t.port or 5432}")
        return await asyncio.open_connection(t.hostname or "127.0.0.1", t.port or 5432)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self._open_upstream()
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        self._tasks.difference_update(pumps)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for _ in range(100):
            if not self._tasks:
                break
            await asyncio.sleep(0.01)

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()
