"""Credentials: where a function's secret keys come from, and how their values stay secret.

Resolution order for each key a function declares (``FunctionSpec.credentials``):

1. the Dapr secret store through the sidecar, ``GET /v1.0/secrets/<store>/<key>``
   (dapr-wire.md §4), when ``DAPR_HTTP_PORT`` is set (or ``FLEET_DAPR_SECRETS=on``);
2. the local secrets file ``FLEET_SECRETS_FILE`` (JSON or YAML; nested maps flattened with
   ``:`` like Dapr's ``secretstores.local.file``);
3. the environment, ``FLEET_SECRET_<KEY>``;
4. the fleet's secret store in PostgreSQL (``shared/registry/secrets.py``, `fleet secrets set`),
   for a worker with ``FLEET_DATABASE_URL``: values encrypted with ``FLEET_SECRETS_KEY``.

The store comes last: what a deployment provides (a Dapr store, a mounted file, the
environment) overrides it, so one machine can replace a stored value without touching the
shared database, and a cluster that brings its own store keeps using it.

A key found nowhere fails the execution with ``credentials_missing`` naming the key (never a
value) and what to set (:meth:`CredentialResolver.how_to_provide`). Every value resolved is
remembered by the resolver's :class:`SecretRegistry`: one per worker, owned by its
``CredentialsExtension`` (``shared/runtime/credentials.py``, which also puts the middleware in
the chain) and found in ``ctx.resources``. The result encoder scrubs with its worker's registry;
the log renderers (``shared/logging.py``, on the finished line) with the registry of the worker
whose task is logging (:func:`worker_secrets`, a context variable the worker sets), so a value
that leaks into a log line, an error message or an output is replaced by ``***`` and two workers
in one process never mix their secrets. Excerpts of third-party answers are cut with
:func:`scrub_then_truncate`: scrubbed whole first, so a secret straddling the cut cannot leave
its first characters behind.
"""

from __future__ import annotations

import contextvars
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from shared.errors import InfrastructureError
from shared.settings import Settings

if TYPE_CHECKING:  # aiohttp is only needed with a Dapr sidecar: imported when first used
    import aiohttp

    from shared.functions import ExecutionContext

__all__ = [
    "CredentialResolver",
    "DaprSecretSource",
    "EnvSecretSource",
    "FileSecretSource",
    "SecretRegistry",
    "SecretSource",
    "call_secrets",
    "env_variable",
    "how_to_provide",
    "scrub_log_event",
    "scrub_then_truncate",
    "worker_secrets",
    "working_for",
]

MASK = "***"
#: Values shorter than this are not scrubbed (replacing "1" everywhere would garble logs).
MIN_SCRUB_LENGTH = 4


def _spellings(value: str) -> set[str]:
    """How ``value`` can appear in what this process writes: raw, JSON-escaped (orjson for
    results, the stdlib's ASCII escapes for JSON log lines) and inside a ``repr`` (console log
    values, exception reprs in tracebacks). For a plain token these are all the same string."""
    return {value, orjson.dumps(value).decode()[1:-1], json.dumps(value)[1:-1], repr(value)[1:-1]}


class SecretRegistry:
    """The set of secret values one worker has handed to its functions."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        # Every spelling of every value, longest first, so a secret containing another is masked
        # whole. Replaced (never mutated) by add(): a scrub in progress keeps the list it started.
        self._forms: list[str] = []
        self._needles: list[bytes] = []

    def add(self, value: str) -> None:
        if len(value) < MIN_SCRUB_LENGTH or value in self._values:
            return
        self._values.add(value)
        self._forms = sorted({*self._forms, *_spellings(value)}, key=len, reverse=True)
        self._needles = [form.encode() for form in self._forms]

    def including(self, values: Iterable[str]) -> SecretRegistry:
        """A copy that also knows ``values`` (a call's own credentials, registered or not)."""
        copy = SecretRegistry()
        for value in (*self._values, *values):
            copy.add(value)
        return copy

    def __bool__(self) -> bool:
        return bool(self._values)

    def scrub(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def scrub_bytes(self, data: bytes) -> bytes:
        mask = MASK.encode()
        for needle in self._needles:
            if needle in data:
                data = data.replace(needle, mask)
        return data

    def scrub_value(self, value: Any) -> Any:
        """``value`` with every string inside it scrubbed (dicts and lists walked)."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self.scrub_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub_value(v) for v in value]
        return value


#: The registry of the worker whose task is running: set by ``Worker.run`` (the tasks it creates,
#: deliveries included, inherit it), read where only the running task tells whose line it is (logs).
_WORKER_SECRETS: contextvars.ContextVar[SecretRegistry | None] = contextvars.ContextVar(
    "fleet_worker_secrets", default=None
)


def worker_secrets() -> SecretRegistry | None:
    """The secrets of the worker whose task is running; ``None`` outside any worker."""
    return _WORKER_SECRETS.get()


def working_for(secrets: SecretRegistry) -> contextvars.Token[SecretRegistry | None]:
    """Make ``secrets`` the current task's worker secrets (what :func:`worker_secrets` returns
    here and in every task created from here on); the token undoes it (``.var.reset(token)``)."""
    return _WORKER_SECRETS.set(secrets)


def scrub_log_event(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: mask the running worker's secret values anywhere in the event."""
    secrets = _WORKER_SECRETS.get()
    if not secrets:
        return event_dict
    return {k: secrets.scrub_value(v) for k, v in event_dict.items()}


def call_secrets(ctx: ExecutionContext) -> SecretRegistry:
    """What text from one call is scrubbed with: every secret its worker has handed out
    (the :class:`SecretRegistry` in ``ctx.resources``) and the call's own credential values
    (``ctx.credentials``), whether that registry has them or not."""
    known = ctx.resources.find(SecretRegistry)
    own = [value for value in ctx.credentials.values() if value]
    if not own:
        return known if known is not None else SecretRegistry()
    return (known or SecretRegistry()).including(own)


def scrub_then_truncate(
    text: str,
    limit: int,
    *,
    known: SecretRegistry | None,
    secrets: Iterable[str] = (),
    ellipsis: str = "",
) -> str:
    """``text`` with every secret of ``known`` (the worker's registry, or :func:`call_secrets`)
    and of ``secrets`` masked, then cut to its first ``limit`` characters (``ellipsis``
    appended when something was cut).

    The order is the point: cutting first can leave the head of a secret that straddles the cut,
    which no scrub afterwards recognises.
    """
    extra = tuple(s for s in secrets if s)
    registry = (known or SecretRegistry()).including(extra) if extra else known
    if registry:
        text = registry.scrub(text)
    return text if len(text) <= limit else text[:limit] + ellipsis


class SecretSource(Protocol):
    name: str

    async def get(self, key: str) -> str | None:
        """The value of ``key``, or ``None`` when this source does not have it."""
        ...


class EnvSecretSource:
    """``FLEET_SECRET_<KEY>`` environment variables."""

    name = "env"

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ if environ is not None else os.environ

    async def get(self, key: str) -> str | None:
        return self._environ.get(env_variable(key))


def how_to_provide(keys: Sequence[str], *, store: bool) -> str:
    """A clause naming what to set so that ``keys`` resolve: their ``FLEET_SECRET_<KEY>``
    variables, and with ``store`` the `fleet secrets set` commands. Names only, never values."""
    hint = f"set {', '.join(env_variable(key) for key in keys)} in the workers' environment"
    if store:
        commands = ", ".join(f"`fleet secrets set {key}`" for key in keys)
        hint += f", or store {'it' if len(keys) == 1 else 'them'} with {commands}"
    return hint


def env_variable(key: str) -> str:
    """The environment variable :class:`EnvSecretSource` reads ``key`` from."""
    return f"FLEET_SECRET_{key.upper()}"


def _flatten(value: Any, prefix: str, out: dict[str, str], separator: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}{separator}{k}" if prefix else str(k), out, separator)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}{separator}{i}" if prefix else str(i), out, separator)
    elif value is not None:
        out[prefix] = value if isinstance(value, str) else json.dumps(value)


class FileSecretSource:
    """A JSON or YAML file of secrets, re-read when it changes on disk."""

    name = "file"

    def __init__(self, path: Path, separator: str = ":") -> None:
        self.path = path
        self._separator = separator
        self._mtime: float | None = None
        self._values: dict[str, str] = {}

    def _load(self) -> dict[str, str]:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return {}
        if mtime != self._mtime:
            text = self.path.read_text()
            if self.path.suffix == ".json":
                raw = json.loads(text)
            else:
                import yaml

                raw = yaml.safe_load(text)
            values: dict[str, str] = {}
            _flatten(raw or {}, "", values, self._separator)
            self._values, self._mtime = values, mtime
        return self._values

    async def get(self, key: str) -> str | None:
        return self._load().get(key)


class DaprSecretSource:
    """The Dapr secret store behind the sidecar (``GET /v1.0/secrets/<store>/<key>``).

    200 → the flat string map; the value is ``map[key]`` (or its only value). 204, and 500
    ``ERR_SECRET_GET`` (missing key), mean "not here". Unreachable sidecar → InfrastructureError.
    """

    name = "dapr"

    def __init__(self, settings: Settings) -> None:
        self._base = (
            f"http://{settings.dapr_host}:{settings.dapr_http_port}/v1.0/secrets/{settings.dapr_secret_store}"
        )
        self._headers = {"dapr-api-token": settings.dapr_api_token} if settings.dapr_api_token else {}
        self._session: aiohttp.ClientSession | None = None

    async def get(self, key: str) -> str | None:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            async with self._session.get(f"{self._base}/{key}", headers=self._headers) as response:
                if response.status == 204:
                    return None
                if response.status == 200:
                    values = await response.json(content_type=None)
                    if isinstance(values, dict) and values:
                        value = values.get(key, next(iter(values.values())) if len(values) == 1 else None)
                        return value if isinstance(value, str) else None
                    return None
                if response.status == 500:
                    body = await response.text()
                    if "ERR_SECRET_GET" in body:
                        return None
                raise InfrastructureError(f"dapr secret store answered {response.status} for a key")
        except aiohttp.ClientError as exc:
            raise InfrastructureError(f"dapr secret store unreachable: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class CredentialResolver:
    """Resolves keys through ``sources`` in order; remembers every value found in
    :attr:`registry` (a new one unless given: the worker's, from its ``CredentialsExtension``)."""

    def __init__(self, sources: Sequence[SecretSource], registry: SecretRegistry | None = None) -> None:
        self.sources = list(sources)
        self.registry = registry if registry is not None else SecretRegistry()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        registry: SecretRegistry | None = None,
        *,
        store: SecretSource | None = None,
    ) -> CredentialResolver:
        """The sources of ``settings`` in order, ``store`` (the secret store in the database,
        built by whoever holds its pool) last."""
        sources: list[SecretSource] = []
        if settings.dapr_secrets == "on" or (
            settings.dapr_secrets == "auto" and "dapr_http_port" in settings.model_fields_set
        ):
            sources.append(DaprSecretSource(settings))
        if settings.secrets_file is not None:
            sources.append(FileSecretSource(settings.secrets_file))
        sources.append(EnvSecretSource())
        if store is not None:
            sources.append(store)
        return cls(sources, registry)

    def how_to_provide(self, keys: Sequence[str]) -> str:
        """What to set so that ``keys`` resolve here (:func:`how_to_provide`; `fleet secrets set`
        only when this resolver reads the secret store)."""
        return how_to_provide(keys, store=any(source.name == "database" for source in self.sources))

    async def resolve(self, keys: Sequence[str]) -> tuple[dict[str, str], list[str]]:
        """``(found, missing)`` for ``keys``."""
        found: dict[str, str] = {}
        for key in keys:
            for source in self.sources:
                value = await source.get(key)
                if value:
                    found[key] = value
                    self.registry.add(value)
                    break
        return found, [k for k in keys if k not in found]

    async def close(self) -> None:
        """Close the sources that hold a connection (the Dapr sidecar's session)."""
        for source in self.sources:
            if isinstance(source, DaprSecretSource):
                await source.close()
