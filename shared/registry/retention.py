"""History retention: rows older than ``FLEET_HISTORY_RETENTION_DAYS`` are deleted, in
chunks (short locks), by `fleet executions prune` and periodically by workers (one at a time,
through an advisory lock). A pruned execution is no longer deduplicated: the retention is
also the idempotency window."""

from __future__ import annotations

from typing import Any

__all__ = ["PRUNE_LOCK", "prune"]

PRUNE_LOCK = int.from_bytes(b"fleetprn", "big") & 0x7FFF_FFFF_FFFF_FFFF

_DELETE = """
DELETE FROM function_executions WHERE id IN (
    SELECT id FROM function_executions
    WHERE created_at < now() - make_interval(secs => $1)
      AND (status IN ('completed', 'failed') OR lease_expires_at IS NULL OR lease_expires_at < now())
    LIMIT $2)
"""


async def prune(
    pool: Any, older_than_days: float, *, chunk: int = 5000, exclusive: bool = False
) -> int | None:
    """Delete history older than ``older_than_days``; returns rows deleted. With
    ``exclusive``, returns ``None`` without deleting when another process is pruning."""
    seconds = older_than_days * 86400.0
    total = 0
    async with pool.acquire() as connection:
        if exclusive and not await connection.fetchval("SELECT pg_try_advisory_lock($1)", PRUNE_LOCK):
            return None
        try:
            while True:
                status = await connection.execute(_DELETE, seconds, chunk)
                deleted = int(status.split()[-1])
                total += deleted
                if deleted < chunk:
                    return total
        finally:
            if exclusive:
                await connection.execute("SELECT pg_advisory_unlock($1)", PRUNE_LOCK)
