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


#: SQLSTATE classes (first two characters) that say nothing about the statement: the
#: connection, the server or the credentials failed. 08 connection exception, 28 invalid
#: authorization (a rotated password, a role not created yet), 53 insufficient resources (too
#: many connections, disk full, out of memory), 57 operator intervention (admin or crash
#: shutdown, starting up / recovering 57P03, database dropped 57P04, statement cancelled).
_OUTAGE_CLASSES = frozenset(("08", "28", "53", "57"))

#: Single SQLSTATEs retrying later can fix: 3D000 the database does not exist (yet); 25006 a
#: write on a read-only server (connected to a standby during a failover); 40001 / 40P01 /
#: 40003 serialization failure, deadlock, completion unknown (transient by definition).
_OUTAGE_STATES = frozenset(("3D000", "25006", "40001", "40P01", "40003"))

#: asyncpg client-side errors that no retry fixes: a bad URL (``ClientConfigurationError``, a
#: ``ValueError`` like asyncpg's interface ``DataError``), a feature the client or server lacks.
#: (An argument asyncpg cannot encode is a ``PostgresError`` of class 22, handled above them.)
_CLIENT_FAULTS: tuple[type[BaseException], ...] = (
    ValueError,
    asyncpg.exceptions.UnsupportedClientFeatureError,
    asyncpg.exceptions.UnsupportedServerFeatureError,
)

#: Failures below the SQL layer: the socket, a timeout, or asyncpg's connection state (a query
#: on a connection whose backend was just terminated raises ``InternalClientError`` "cannot
#: switch to state …" before the next one says "connection is closed").
_TRANSPORT_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


def is_outage(exc: BaseException) -> bool:
    """True when retrying the same statement later can succeed: the database is unreachable,
    refusing connections, out of resources, or the failure is transient (retry later, keep
    serving). False when the statement itself failed (bad data, a bug) and would fail again.

    Classified by what the error means for a retry, not by its Python type: a PostgreSQL
    error counts as an outage when its severity is FATAL or PANIC (the server ended the
    session, e.g. 55000 "database is not currently accepting connections" at connect, which
    as an ERROR — "currval … not yet defined" — is a statement fault), when its SQLSTATE class
    is in :data:`_OUTAGE_CLASSES`, or its SQLSTATE in :data:`_OUTAGE_STATES`. Statement
    faults (22 data exception, 23 integrity violation, 42 syntax or undefined object, …)
    and anything unrecognised are not outages: holding a write that can never succeed would
    stall the writer behind it. Called on errors only, never on the hot path.
    """
    if isinstance(exc, asyncpg.PostgresError):
        severity = getattr(exc, "severity_en", None) or getattr(exc, "severity", None)
        if severity in ("FATAL", "PANIC"):
            return True
        sqlstate = getattr(exc, "sqlstate", None) or ""
        return sqlstate[:2] in _OUTAGE_CLASSES or sqlstate in _OUTAGE_STATES
    if isinstance(exc, _CLIENT_FAULTS):
        return False
    return isinstance(exc, _TRANSPORT_FAILURES)


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
