"""Versioned SQL migrations: ``shared/registry/migrations/NNNN_name.sql``, applied in order,
each in its own transaction, and recorded in ``schema_migrations``.

Safe when several processes start at once: the whole run holds a PostgreSQL advisory lock, so
one process applies and the others wait, then find nothing left to do. An applied migration
whose file changed since is reported (checksum mismatch) rather than silently re-applied.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

from shared.errors import ConfigError
from shared.registry.database import connect

__all__ = ["MIGRATION_LOCK", "Migration", "available_migrations", "migrate"]

log = structlog.get_logger("fleet.migrate")

#: pg_advisory_lock key of the migrator ("fleetmig" as an int64).
MIGRATION_LOCK = int.from_bytes(b"fleetmig", "big") & 0x7FFF_FFFF_FFFF_FFFF
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("shared.registry.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ConfigError(f"duplicate migration versions: {versions}")
    return found


async def migrate(url: str, *, timeout: float = 60.0, log_applied: bool = True) -> list[Migration]:
    """Apply the pending migrations to ``url``; returns those applied by this call (logged
    unless ``log_applied`` is False: the CLI prints them itself, keeping stdout clean)."""
    connection = await connect(url, timeout=timeout)
    try:
        return await _migrate(connection, log_applied=log_applied)
    finally:
        await connection.close()


async def _migrate(connection: asyncpg.Connection, *, log_applied: bool) -> list[Migration]:
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        # Created under the lock: concurrent CREATE TABLE IF NOT EXISTS can still collide.
        await connection.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await connection.fetch("SELECT version, checksum FROM schema_migrations")
        applied = {r["version"]: r["checksum"] for r in rows}
        done: list[Migration] = []
        for migration in available_migrations():
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    log.warning(
                        "applied migration differs from the shipped file",
                        version=migration.version,
                        name=migration.name,
                    )
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            if log_applied:
                log.info("migration applied", version=migration.version, name=migration.name)
            done.append(migration)
        return done
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
