"""``is_outage``: which database errors mean "retry later" (history rows are held) and which
mean "this statement is wrong" (the row is rejected). Errors are produced by the real server
wherever the test can provoke them; the rest are built the way asyncpg builds them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from shared.registry.database import is_outage
from tests.registry.conftest import with_database


async def raised(coro: Any) -> BaseException:
    """The exception ``coro`` raises (the test fails if it raises none)."""
    try:
        await coro
    except Exception as exc:
        return exc
    raise AssertionError("expected an error")


@pytest.fixture
async def admin(database_server: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_server)
    yield connection
    await connection.close()


@pytest.fixture
async def scratch(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    await connection.execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL, u uuid)")
    await connection.execute("INSERT INTO t VALUES (1, 0), (2, 0)")
    yield connection
    await connection.close()


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def with_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    netloc = f"{user}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# ---------------------------------------------------------------- outages (retry later)


async def test_a_database_not_accepting_connections_is_an_outage(
    admin: asyncpg.Connection, database_url: str
) -> None:
    name = database_name(database_url)
    await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        exc = await raised(asyncpg.connect(database_url))
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    assert isinstance(exc, asyncpg.PostgresError)
    assert exc.sqlstate == "55000"  # object_not_in_prerequisite_state, at connect (FATAL)
    assert is_outage(exc)


async def test_a_missing_database_is_an_outage(database_server: str) -> None:
    exc = await raised(asyncpg.connect(with_database(database_server, f"missing_{uuid.uuid4().hex[:12]}")))
    assert isinstance(exc, asyncpg.InvalidCatalogNameError)
    assert is_outage(exc)


async def test_an_authorization_failure_is_an_outage(admin: asyncpg.Connection, database_server: str) -> None:
    # A role that does not exist (yet): a credentials problem, not the row's.
    exc = await raised(asyncpg.connect(with_user(database_server, f"nobody_{uuid.uuid4().hex[:12]}")))
    assert isinstance(exc, asyncpg.PostgresError)
    assert exc.sqlstate.startswith("28")
    assert is_outage(exc)


async def test_too_many_connections_is_an_outage(admin: asyncpg.Connection, database_server: str) -> None:
    role = f"limited_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    try:
        exc = await raised(asyncpg.connect(with_user(database_server, role)))
    finally:
        await admin.execute(f'DROP ROLE "{role}"')
    assert isinstance(exc, asyncpg.TooManyConnectionsError)
    assert is_outage(exc)


async def test_an_unreachable_server_is_an_outage() -> None:
    exc = await raised(asyncpg.connect("postgresql://postgres@127.0.0.1:1/postgres", timeout=5))
    assert isinstance(exc, OSError)
    assert is_outage(exc)


async def test_a_terminated_backend_is_an_outage(
    admin: asyncpg.Connection, scratch: asyncpg.Connection
) -> None:
    pid = scratch.get_server_pid()
    await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    # Depending on when the termination notice is read: "closed in the middle of operation",
    # asyncpg's protocol state error, or "connection is closed"; all the connection's failure.
    assert is_outage(await raised(scratch.fetchval("SELECT 1")))
    await asyncio.sleep(0.2)
    assert is_outage(await raised(scratch.fetchval("SELECT 1")))


async def test_a_cancelled_statement_is_an_outage(scratch: asyncpg.Connection) -> None:
    await scratch.execute("SET statement_timeout = 50")
    exc = await raised(scratch.execute("SELECT pg_sleep(2)"))
    assert isinstance(exc, asyncpg.QueryCanceledError)
    assert is_outage(exc)


async def test_a_write_on_a_read_only_server_is_an_outage(scratch: asyncpg.Connection) -> None:
    # What a worker sees connected to a standby during a failover.
    await scratch.execute("SET default_transaction_read_only = on")
    exc = await raised(scratch.execute("UPDATE t SET v = 1"))
    assert isinstance(exc, asyncpg.ReadOnlySQLTransactionError)
    assert is_outage(exc)


async def test_a_serialization_failure_is_transient(scratch: asyncpg.Connection, database_url: str) -> None:
    other = await asyncpg.connect(database_url)
    try:
        first = scratch.transaction(isolation="repeatable_read")
        await first.start()
        await scratch.fetchval("SELECT v FROM t WHERE id = 1")
        await other.execute("UPDATE t SET v = v + 1 WHERE id = 1")
        exc = await raised(scratch.execute("UPDATE t SET v = v + 1 WHERE id = 1"))
        await first.rollback()
    finally:
        await other.close()
    assert isinstance(exc, asyncpg.SerializationError)
    assert is_outage(exc)


async def test_a_deadlock_is_transient(scratch: asyncpg.Connection, database_url: str) -> None:
    other = await asyncpg.connect(database_url)
    try:
        for connection in (scratch, other):
            await connection.execute("SET deadlock_timeout = '50ms'")
            await connection.execute("BEGIN")
        await scratch.execute("UPDATE t SET v = 1 WHERE id = 1")
        await other.execute("UPDATE t SET v = 1 WHERE id = 2")
        outcomes = await asyncio.gather(
            scratch.execute("UPDATE t SET v = 1 WHERE id = 2"),
            other.execute("UPDATE t SET v = 1 WHERE id = 1"),
            return_exceptions=True,
        )
        for connection in (scratch, other):
            await connection.execute("ROLLBACK")
    finally:
        await other.close()
    deadlocks = [e for e in outcomes if isinstance(e, asyncpg.DeadlockDetectedError)]
    assert len(deadlocks) == 1
    assert is_outage(deadlocks[0])


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.DatabaseDroppedError("database dropped"),
        asyncpg.exceptions.DiskFullError("could not extend file"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.InvalidPasswordError("password authentication failed"),
        # A query racing the termination of its backend (seen in the 55000 reproduction).
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 11; another operation (2) is in progress"
        ),
        TimeoutError(),
        ConnectionResetError(),
        # Any error that ended the session, whatever its SQLSTATE, as asyncpg builds it.
        asyncpg.PostgresError.new({"C": "XX000", "M": "lost", "S": "FATAL", "V": "FATAL"}),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_that_cannot_be_provoked_here_are_classified_by_their_class(exc: BaseException) -> None:
    assert is_outage(exc)


# ---------------------------------------------------------------- the statement's fault


async def test_statement_faults_are_not_outages(scratch: asyncpg.Connection) -> None:
    faults = [
        await raised(scratch.execute("INSERT INTO t VALUES (1, 0)")),  # 23505 unique violation
        await raised(scratch.execute("INSERT INTO t VALUES (3, NULL)")),  # 23502 not null
        await raised(scratch.execute("SELECT 'not-a-uuid'::uuid")),  # 22P02 data exception
        await raised(scratch.execute("SELECT '{'::jsonb")),  # 22P02 invalid JSON
        await raised(scratch.execute("SELEC 1")),  # 42601 syntax error
        await raised(scratch.execute("SELECT * FROM missing")),  # 42P01 undefined table
    ]
    assert [getattr(e, "sqlstate", None) for e in faults] == [
        "23505",
        "23502",
        "22P02",
        "22P02",
        "42601",
        "42P01",
    ]
    assert not [e for e in faults if is_outage(e)]


async def test_object_not_in_prerequisite_state_in_a_statement_is_not_an_outage(
    scratch: asyncpg.Connection,
) -> None:
    # The same SQLSTATE as a database refusing connections, but an ERROR of this statement.
    await scratch.execute("CREATE TEMPORARY SEQUENCE s")
    exc = await raised(scratch.fetchval("SELECT currval('s')"))
    assert isinstance(exc, asyncpg.PostgresError)
    assert exc.sqlstate == "55000"
    assert not is_outage(exc)


async def test_an_argument_asyncpg_cannot_encode_is_not_an_outage(scratch: asyncpg.Connection) -> None:
    exc = await raised(scratch.execute("UPDATE t SET v = $1 WHERE id = 1", 2**40))
    assert isinstance(exc, asyncpg.DataError)
    assert not is_outage(exc)


async def test_a_bad_database_url_is_not_an_outage(database_server: str) -> None:
    # An InterfaceError, once counted as an outage: a worker retried a typo forever at start.
    separator = "&" if "?" in database_server else "?"
    exc = await raised(asyncpg.connect(f"{database_server}{separator}sslmode=bogus"))
    assert isinstance(exc, asyncpg.InterfaceError)
    assert not is_outage(exc)


def test_unrelated_errors_are_not_outages() -> None:
    assert not is_outage(ValueError("bad"))
    assert not is_outage(KeyError("x"))
