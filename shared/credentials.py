"""Credentials: where a function's secret keys come from, and how their values stay secret.

Resolution order for each key a function declares (``FunctionSpec.credentials``):

1. the Dapr secret store through the sidecar, ``GET /v1.0/secrets/<store>/<key>``
   (dapr-wire.md §4), when ``DAPR_HTTP_PORT`` is set (or ``FLEET_DAPR_SECRETS=on``);
2. the local secrets file ``FLEET_SECRETS_FILE`` (JSON or YAML; nested maps flattened with
   ``:`` like Dapr's ``secretstores.local.file``);
3. the environment, ``FLEET_SECRET_<KEY>``.

A key found nowhere fails the execution with ``credentials_missing`` naming the key (never a
value). Every value resolved is remembered by :data:`SECRETS`, whose :meth:`~SecretRegistry.scrub`
the log renderers (``shared/logging.py``, on the finished line) and the result encoder apply,
so a value that leaks into a log line, an error message or an output is replaced by ``***``.
Excerpts of third-party answers are cut with :func:`scrub_then_truncate`: scrubbed whole first,
so a secret straddling the cut cannot leave its first characters behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from shared.contract import ErrorCode
from shared.errors import ExecutionFailed, InfrastructureError
from shared.functions import FunctionSpec
from shared.runtime.middleware import Call, CallNext
from shared.settings import Settings

if TYPE_CHECKING:  # aiohttp is only needed with a Dapr sidecar: imported when first used
    import aiohttp

__all__ = [
    "SECRETS",
    "CredentialResolver",
    "CredentialsMiddleware",
    "DaprSecretSource",
    "EnvSecretSource",
    "FileSecretSource",
    "SecretRegistry",
    "SecretSource",
    "scrub_log_event",
    "scrub_then_truncate",
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
    """The set of secret values this process has handed to functions."""

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


#: The process-wide registry (one worker process = one set of secrets).
SECRETS = SecretRegistry()


def scrub_log_event(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: mask known secret values anywhere in the event."""
    if not SECRETS:
        return event_dict
    return {k: SECRETS.scrub_value(v) for k, v in event_dict.items()}


def scrub_then_truncate(text: str, limit: int, *, secrets: Iterable[str] = (), ellipsis: str = "") -> str:
    """``text`` with every secret of :data:`SECRETS` and of ``secrets`` masked, then cut to its
    first ``limit`` characters (``ellipsis`` appended when something was cut).

    The order is the point: cutting first can leave the head of a secret that straddles the cut,
    which no scrub afterwards recognises.
    """
    extra = tuple(s for s in secrets if s)
    registry = SECRETS.including(extra) if extra else SECRETS
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
        return self._environ.get(f"FLEET_SECRET_{key.upper()}")


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
    """Resolves keys through ``sources`` in order; remembers values for scrubbing."""

    def __init__(self, sources: Sequence[SecretSource], registry: SecretRegistry = SECRETS) -> None:
        self.sources = list(sources)
        self._registry = registry

    @classmethod
    def from_settings(cls, settings: Settings) -> CredentialResolver:
        sources: list[SecretSource] = []
        if settings.dapr_secrets == "on" or (
            settings.dapr_secrets == "auto" and "dapr_http_port" in settings.model_fields_set
        ):
            sources.append(DaprSecretSource(settings))
        if settings.secrets_file is not None:
            sources.append(FileSecretSource(settings.secrets_file))
        sources.append(EnvSecretSource())
        return cls(sources)

    async def resolve(self, keys: Sequence[str]) -> tuple[dict[str, str], list[str]]:
        """``(found, missing)`` for ``keys``."""
        found: dict[str, str] = {}
        for key in keys:
            for source in self.sources:
                value = await source.get(key)
                if value:
                    found[key] = value
                    self._registry.add(value)
                    break
        return found, [k for k in keys if k not in found]


class CredentialsMiddleware:
    """Fills ``ctx.credentials`` with the function's declared keys before it runs; a missing
    key fails ``credentials_missing`` (naming the key) without calling the function."""

    def __init__(self, resolver: CredentialResolver) -> None:
        self._resolver = resolver

    @staticmethod
    def applies(spec: FunctionSpec) -> bool:
        return bool(spec.credentials or spec.optional_credentials)

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        keys = call.spec.credentials
        optional = call.spec.optional_credentials
        if keys or optional:
            found, missing = await self._resolver.resolve((*keys, *optional))
            missing = [key for key in missing if key not in optional]
            if missing:
                raise ExecutionFailed(
                    f"missing credentials for {call.spec.slug}: {', '.join(missing)}",
                    code=ErrorCode.CREDENTIALS_MISSING,
                    details={"missing": missing},
                )
            call.ctx = dataclasses.replace(call.ctx, credentials=found)
        return await call_next(call)
