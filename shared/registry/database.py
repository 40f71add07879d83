"""Connecting to PostgreSQL: the pool every registry/history component shares, and the one
rule for telling an outage (retry later, keep serving) from a bad statement (a bug or bad data).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncpg
import orjson

__all__ = ["connect", "create_pool", "is_outage", "json_text", "jsonb_safe", "server_settings"]

#: application_name shown in pg_stat_activity.
APPLICATION_NAME = "function-fleet"


def server_settings() -> dict[str, str]:
    # Custom plans always. After five executions PostgreSQL may switch a prepared statement to
    # a generic plan and keep it for the connection's life; made while the history table is
    # young, that plan scans it, and throughput fell round after round on a fresh database.
    return {"application_name": APPLICATION_NAME, "plan_cache_mode": "force_custom_plan"}


async def _init_connection(connection: asyncpg.Connection) -> None:
    # jsonb in and out as Python values, through orjson (the hot path stores results).
    await connection.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def create_pool(url: str, *, timeout: float = 10.0, max_size: int = 4) -> asyncpg.Pool:
    """A small pool on ``url``; jsonb columns read and write Python values.

    Raises ``OSError`` / ``asyncpg`` errors when the server is unreachable (see :func:`is_outage`).
    """
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=max_size,
        timeout=timeout,
        command_timeout=timeout,
        init=_init_connection,
        server_settings=server_settings(),
    )
    return pool


async def connect(url: str, *, timeout: float = 10.0) -> asyncpg.Connection:
    """One connection (LISTEN, migrations, CLI) with the same codecs as the pool."""
    connection: asyncpg.Connection = await asyncpg.connect(
        url, timeout=timeout, command_timeout=timeout, server_settings=server_settings()
    )
    await _init_connection(connection)
    return connection


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` means "the database is not reachable right now" (retry later), False
    when the statement itself failed (bad data, a bug) and retrying it would fail again."""
    outage_types: tuple[type[BaseException], ...] = (
        OSError,
        TimeoutError,
        asyncio.TimeoutError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.PostgresConnectionError,
        asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown
        asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
        asyncpg.exceptions.CannotConnectNowError,
    )
    return isinstance(exc, outage_types)


#: ``\\u0000`` as an escape in JSON text: preceded by an even number of backslashes (an odd
#: number means the backslash itself is escaped and the text only looks like the escape).
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def jsonb_safe(text: str) -> str:
    """JSON text with every NUL character (``\\u0000``, which jsonb refuses) replaced by U+FFFD,
    so one such value does not fail a whole batch of history writes."""
    return _NUL_ESCAPE.sub(r"\1\\ufffd", text) if "\\u0000" in text else text


def json_text(value: Any) -> str:
    """``value`` as JSON text PostgreSQL's jsonb accepts (see :func:`jsonb_safe`)."""
    return jsonb_safe(orjson.dumps(value).decode())
