"""The fleet's secret store: credential values in PostgreSQL (``fleet_secrets``, migration
0006), encrypted with the keys of ``shared/registry/secret_keys.py``.

* :class:`SecretStore` — put (set or replace), delete, list (names, times, the functions
  declaring each: never a value), read one, rotate. What `fleet secrets` and the console use.
* :class:`DatabaseSecretSource` — a worker's last source of credentials (``shared/credentials.py``
  says the order), wired by ``shared/assemble.py`` onto the registry's pool. It keeps what it read
  (a value or its absence) for ``FLEET_SECRETS_CACHE_TTL`` seconds, so a batch of executions costs
  one query per key; the database is not on the hot path of functions whose credentials come
  from the environment, which is asked first.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.contract import ErrorCode
from shared.errors import ConfigError, ExecutionFailed, InfrastructureError
from shared.registry.database import is_outage
from shared.registry.secret_keys import NoSecretsKey, SecretCipher, UnreadableSecret
from shared.settings import Settings

__all__ = ["DatabaseSecretSource", "InvalidSecret", "SecretInfo", "SecretStore", "check_name", "check_value"]

#: The credential keys a function may declare (``shared/registry/models.py``), at most 200 long.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")
#: Shorter values are not masked in logs and results (``shared.credentials.MIN_SCRUB_LENGTH``).
MIN_VALUE_LENGTH = 4
MAX_VALUE_LENGTH = 65_536


class InvalidSecret(ConfigError):
    """A name or value the store does not take; the message says why (never the value)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidSecret(
            "a secret name is a credential key: a letter or _, then letters, digits, _ . : - "
            "(at most 200 characters)",
            "name",
        )
    return name


def check_value(value: str) -> str:
    if len(value) < MIN_VALUE_LENGTH:
        raise InvalidSecret(
            f"a secret value needs at least {MIN_VALUE_LENGTH} characters (shorter ones could not be "
            "masked in logs and results)",
            "value",
        )
    if len(value) > MAX_VALUE_LENGTH:
        raise InvalidSecret(f"a secret value is at most {MAX_VALUE_LENGTH} characters", "value")
    return value


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What may be shown about a secret: never its value."""

    name: str
    created_at: datetime
    updated_at: datetime
    updated_by: str | None
    used_by: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "updated_by": self.updated_by,
            "used_by": list(self.used_by),
        }


@contextlib.asynccontextmanager
async def _transaction(db: Any) -> AsyncIterator[Any]:
    if hasattr(db, "acquire"):  # a pool
        async with db.acquire() as connection, connection.transaction():
            yield connection
    else:
        async with db.transaction():
            yield db


_INFO = """SELECT s.name, s.created_at, s.updated_at, s.updated_by,
       coalesce(array(SELECT f.slug FROM functions f WHERE s.name = ANY (f.credentials) ORDER BY f.slug),
                '{}') AS used_by
FROM fleet_secrets s"""


class SecretStore:
    """The ``fleet_secrets`` table through ``db`` (an asyncpg connection or pool). ``cipher``
    ``None`` (no key configured): names can be listed and deleted; writes and reads raise
    :class:`~shared.registry.secret_keys.NoSecretsKey`."""

    def __init__(self, db: Any, cipher: SecretCipher | None, settings: Settings) -> None:
        self._db = db
        self._cipher = cipher
        self._settings = settings

    @classmethod
    def from_settings(cls, db: Any, settings: Settings) -> SecretStore:
        return cls(db, SecretCipher.from_settings(settings), settings)

    @property
    def has_key(self) -> bool:
        return self._cipher is not None

    def _need_cipher(self) -> SecretCipher:
        if self._cipher is None:
            raise NoSecretsKey(self._settings)
        return self._cipher

    async def put(self, name: str, value: str, *, by: str | None = None) -> tuple[SecretInfo, bool]:
        """Store ``value`` under ``name`` (replacing it); returns the secret's info and whether
        it was created (False: replaced)."""
        check_name(name)
        check_value(value)
        token = self._need_cipher().encrypt(name, value)
        row = await self._db.fetchrow(
            """INSERT INTO fleet_secrets AS s (name, token, updated_by) VALUES ($1, $2, $3)
               ON CONFLICT (name) DO UPDATE SET token = EXCLUDED.token, updated_at = now(),
                   updated_by = EXCLUDED.updated_by
               RETURNING (xmax = 0) AS created""",
            name,
            token,
            by,
        )
        info = await self.info(name)
        assert info is not None
        return info, bool(row["created"])

    async def delete(self, name: str) -> bool:
        """Remove ``name``; False when there was no such secret."""
        status: str = await self._db.execute("DELETE FROM fleet_secrets WHERE name = $1", name)
        return status.endswith(" 1")

    async def info(self, name: str) -> SecretInfo | None:
        row = await self._db.fetchrow(f"{_INFO} WHERE s.name = $1", name)
        return _info(row) if row is not None else None

    async def listing(self) -> list[SecretInfo]:
        return [_info(row) for row in await self._db.fetch(f"{_INFO} ORDER BY s.name")]

    async def stored(self, names: list[str]) -> set[str]:
        """Which of ``names`` are stored."""
        rows = await self._db.fetch("SELECT name FROM fleet_secrets WHERE name = ANY ($1::text[])", names)
        return {row["name"] for row in rows}

    async def get(self, name: str) -> str | None:
        """The value of ``name`` (``None``: not stored). Raises ``NoSecretsKey`` /
        ``UnreadableSecret`` when it is stored but cannot be decrypted here."""
        token = await self._db.fetchval("SELECT token FROM fleet_secrets WHERE name = $1", name)
        if token is None:
            return None
        return self._need_cipher().decrypt(name, token)

    async def rotate(self) -> int:
        """Re-encrypt every value with the first key, all or nothing (one transaction; a token no
        key decrypts stops it with :class:`UnreadableSecret` naming the secret). Returns how many."""
        cipher = self._need_cipher()
        async with _transaction(self._db) as connection:
            rows = await connection.fetch("SELECT name, token FROM fleet_secrets ORDER BY name FOR UPDATE")
            updates = [(row["name"], cipher.rotate(row["name"], row["token"])) for row in rows]
            if updates:
                await connection.executemany(
                    "UPDATE fleet_secrets SET token = $2 WHERE name = $1",
                    updates,
                )
        return len(updates)


def _info(row: Any) -> SecretInfo:
    return SecretInfo(
        name=row["name"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
        used_by=tuple(row["used_by"] or ()),
    )


class DatabaseSecretSource:
    """The secret store as a worker's source of credentials (``SecretSource``).

    ``pool`` returns the registry's pool (``None`` until it opened: an InfrastructureError, the
    delivery is retried). A stored value this worker cannot decrypt fails the execution
    ``credentials_missing`` saying why; a database outage is an InfrastructureError (redelivered).
    """

    name = "database"

    def __init__(
        self, settings: Settings, pool: Callable[[], Any], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._ttl = settings.secrets_cache_ttl
        self._clock = clock
        self._cipher: SecretCipher | None = None
        self._cipher_loaded = False
        self._cache: dict[str, tuple[float, str | None]] = {}

    def _store(self, pool: Any) -> SecretStore:
        if not self._cipher_loaded:
            # Read once per worker: a key file written later is picked up by a restart.
            self._cipher = SecretCipher.from_settings(self._settings)
            self._cipher_loaded = True
        return SecretStore(pool, self._cipher, self._settings)

    async def get(self, key: str) -> str | None:
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        pool = self._pool()
        if pool is None:
            raise InfrastructureError("the secret store's database is not connected yet")
        try:
            value = await self._store(pool).get(key)
        except (NoSecretsKey, UnreadableSecret) as exc:
            reason = (
                "this worker has no FLEET_SECRETS_KEY to decrypt it"
                if isinstance(exc, NoSecretsKey)
                else "none of this worker's FLEET_SECRETS_KEY keys decrypts it"
            )
            raise ExecutionFailed(
                f"credential {key} is in the fleet's secret store but {reason}: give the workers the key "
                f"it was stored with, or set it again with `fleet secrets set {key}`",
                code=ErrorCode.CREDENTIALS_MISSING,
                details={"missing": [key]},
            ) from None
        except Exception as exc:
            if is_outage(exc):
                raise InfrastructureError(f"secret store unreachable: {type(exc).__name__}") from exc
            raise
        if self._ttl > 0:
            self._cache[key] = (now + self._ttl, value)
        return value
