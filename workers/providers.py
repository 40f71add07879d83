"""What the SaaS built-ins share: pooled HTTP clients per worker, retries, error mapping, and
the input types that accept what the workflow builder's orchestrator sends.

Calling a provider from a handler::

    body = await call_json(ctx, "slack", "POST", "/chat.postMessage", headers=bearer(key),
                           json={...}, secrets=ctx.credentials.values())

* each worker has its own :class:`ProviderClients`, built from the worker's
  :class:`~shared.settings.Settings` by :class:`ProvidersExtension` (the ``ai``, ``comms`` and
  ``dev-tools`` packages declare it) and reached through ``ctx.resources``; it holds one pooled
  :class:`httpx.AsyncClient` per provider, created on first use and closed when the worker stops;
* base URLs (``FLEET_<PROVIDER>_BASE_URL``), connect/read timeouts and attempts are settings
  (``FLEET_PROVIDER_*``, listed by ``fleet config``);
* 429 and 5xx are retried (at most ``FLEET_PROVIDER_MAX_ATTEMPTS`` attempts in all) after the
  call's :class:`~shared.backoff.Backoff` (``FLEET_PROVIDER_BACKOFF`` doubling, jittered), and
  never sooner than the ``Retry-After`` the provider asked for (seconds or an HTTP date): a
  floor; one longer than ``FLEET_PROVIDER_MAX_RETRY_AFTER`` fails at once (retryable).
  Connection failures (the request never reached the provider) are retried on the backoff;
* a final non-2xx fails the execution with ``provider_error`` and details
  ``{provider, status, body}`` (body excerpt scrubbed of the call's ``secrets`` and of every
  secret the worker resolved, its :class:`~shared.credentials.SecretRegistry` from
  ``ctx.resources``; request headers are never echoed), retryable for 429/5xx; a read timeout
  fails with ``timeout`` (retryable).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import structlog
from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema, model_validator

from shared.backoff import Backoff
from shared.contract import ErrorCode
from shared.credentials import SecretRegistry, scrub_then_truncate, worker_secrets
from shared.errors import ConfigError, ExecutionFailed
from shared.functions import ExecutionContext
from shared.resources import Resources
from shared.runtime.extension import BaseExtension, WorkerContext
from shared.runtime.metrics import Metrics
from shared.runtime.spans import Tracing
from shared.settings import PROVIDER_BASE_URLS, Settings

if TYPE_CHECKING:  # imported on the first provider call: an idle worker does not pay for it
    import httpx

__all__ = [
    "BODY_EXCERPT_CHARS",
    "PROVIDERS",
    "CatalogInput",
    "CommaList",
    "JsonList",
    "JsonObject",
    "LaxBool",
    "LaxFloat",
    "LaxInt",
    "ProviderClients",
    "ProvidersExtension",
    "bearer",
    "call",
    "call_json",
    "numeric_options_schema",
    "parse_json_text",
    "parse_retry_after",
    "provider_failure",
    "unexpected_response",
]

#: Provider name → default base URL (paths passed to :func:`call` are appended to it).
PROVIDERS = PROVIDER_BASE_URLS

log = structlog.get_logger("fleet.providers")

BODY_EXCERPT_CHARS = 500
_MESSAGE_CHARS = 300


# ---------------------------------------------------------------------------------- errors
def _message_from(body: Any) -> str | None:
    """The human message inside a provider's error body, if it has a usual shape."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            for key in ("message", "type", "code"):
                if isinstance(error.get(key), str):
                    return str(error[key])
        if isinstance(error, str):
            return error
        for key in ("message", "detail", "error_description"):
            if isinstance(body.get(key), str):
                return str(body[key])
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            message = errors[0].get("message")
            if isinstance(message, str):
                return message
    return None


def provider_failure(
    provider: str,
    status: int | None,
    text: str,
    *,
    secrets: Iterable[str] = (),
    known: SecretRegistry | None = None,
    retryable: bool | None = None,
    message: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> ExecutionFailed:
    """A ``provider_error`` failure for an answer of ``provider`` (``text`` = its body); its
    excerpts are scrubbed of ``secrets`` and of ``known``, the worker's registry (by default
    that of the worker whose task this is: a handler raising this itself need not find it)."""
    secrets = list(secrets)
    if known is None:
        known = worker_secrets()
    if message is None:
        try:
            message = _message_from(json.loads(text)) if text else None
        except ValueError:
            message = None
    summary = f"{provider} answered {status}" if status is not None else f"{provider} request failed"
    if message:
        summary = f"{summary}: {scrub_then_truncate(message, _MESSAGE_CHARS, known=known, secrets=secrets)}"
    details: dict[str, Any] = {
        "provider": provider,
        "status": status,
        "body": scrub_then_truncate(text, BODY_EXCERPT_CHARS, known=known, secrets=secrets),
    }
    details.update(extra or {})
    if retryable is None:
        retryable = status is not None and (status == 429 or status >= 500)
    return ExecutionFailed(summary, code=ErrorCode.PROVIDER_ERROR, retryable=retryable, details=details)


def unexpected_response(provider: str, response: httpx.Response | None, what: str) -> ExecutionFailed:
    """A provider answered 2xx with something that is not what its API documents."""
    text = response.text if response is not None else ""
    return provider_failure(
        provider,
        response.status_code if response is not None else None,
        text,
        retryable=False,
        message=f"unexpected response: {what}",
    )


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait per a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class _Waits:
    """The waits between one provider call's attempts: its :class:`Backoff` from
    ``FLEET_PROVIDER_BACKOFF`` (doubling, jittered, capped at the longest Retry-After honoured
    in-process), none when that is 0; a provider's ``Retry-After`` is a floor."""

    __slots__ = ("_backoff",)

    def __init__(self, settings: Settings) -> None:
        first = settings.provider_backoff
        self._backoff = Backoff(first, max(first, settings.provider_max_retry_after)) if first > 0 else None

    def next(self, retry_after: float | None = None) -> float:
        delay = self._backoff.next() if self._backoff is not None else 0.0
        return delay if retry_after is None else max(retry_after, delay)


def _timeout(provider: str, phase: str, settings: Settings) -> ExecutionFailed:
    limit = settings.provider_connect_timeout if phase == "connect" else settings.provider_read_timeout
    return ExecutionFailed(
        f"{provider} did not answer within {limit:g}s ({phase})",
        code=ErrorCode.TIMEOUT,
        retryable=True,
        details={"provider": provider, "phase": phase, "timeout_seconds": limit},
    )


def _clean_params(
    params: Mapping[str, Any] | list[tuple[str, Any]] | None,
) -> list[tuple[str, str | int | float | bool | None]] | None:
    if params is None:
        return None
    items = params.items() if isinstance(params, Mapping) else params
    return [(k, _param(v)) for k, v in items if v is not None]


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---------------------------------------------------------------------------------- clients
def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class ProviderClients:
    """One worker's provider clients: one pooled :class:`httpx.AsyncClient` per provider, built
    on first use from :attr:`settings`, all closed by :meth:`aclose` (idempotent). A call after
    :meth:`aclose` is a wiring bug (:class:`~shared.errors.ConfigError`). Failures are scrubbed
    of :attr:`secrets`, the worker's registry (set by :class:`ProvidersExtension` at start)."""

    def __init__(self, settings: Settings, secrets: SecretRegistry | None = None) -> None:
        self.settings = settings
        self.secrets = secrets
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._closed = False
        #: counts every exchange by provider and status class (set by :class:`ProvidersExtension`).
        self.metrics: Metrics | None = None
        #: the worker's resources (set by :class:`ProvidersExtension`): when the worker traces
        #: (a :class:`~shared.runtime.spans.Tracing` there), each client is instrumented as it is
        #: built, with the worker's own tracer provider.
        self.resources: Resources | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def client(self, provider: str) -> httpx.AsyncClient:
        """The pooled client of ``provider`` (created on first use)."""
        import httpx

        if self._closed:
            raise ConfigError("the provider clients of this worker are closed")
        client = self._clients.get(provider)
        if client is None:
            settings = self.settings
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(
                    settings.provider_read_timeout,
                    connect=settings.provider_connect_timeout,
                    pool=settings.provider_connect_timeout,
                ),
                limits=httpx.Limits(
                    max_connections=settings.provider_max_connections,
                    max_keepalive_connections=min(20, settings.provider_max_connections),
                ),
                headers={"User-Agent": "function-fleet"},
                follow_redirects=False,
            )
            tracing = self.resources.find(Tracing) if self.resources is not None else None
            if tracing is not None:
                tracing.instrument_httpx(client)
            self._clients[provider] = client
        return client

    def _count(self, provider: str, status: int | None) -> None:
        if self.metrics is not None:
            self.metrics.count_provider_call(provider, status)

    async def aclose(self) -> None:
        """Close every client; later calls fail. Safe to call any number of times."""
        self._closed = True
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            await client.aclose()

    async def call(
        self,
        provider: str,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        content: bytes | str | None = None,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        secrets: Iterable[str] = (),
        url: str | None = None,
    ) -> httpx.Response:
        """Send one request to ``provider`` with retries; the 2xx response, or raise
        :class:`~shared.errors.ExecutionFailed` (``provider_error`` / ``timeout``).

        ``url`` (absolute) replaces base URL + ``path`` (for URLs a provider handed back)."""
        import httpx

        settings = self.settings
        client = self.client(provider)
        target = url or f"{settings.provider_base_url(provider)}{path}"
        secrets = list(secrets)
        attempts = settings.provider_max_attempts
        clean_params = _clean_params(params)
        waits = _Waits(settings)
        for attempt in range(1, attempts + 1):
            try:
                response = await client.request(
                    method,
                    target,
                    headers=dict(headers or {}),
                    json=json,
                    data=data,  # type: ignore[arg-type]
                    content=content,
                    params=clean_params,
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                self._count(provider, None)
                # The request never reached the provider: safe to try again.
                if attempt < attempts:
                    delay = waits.next()
                    log.info(
                        "provider unreachable; retrying",
                        provider=provider,
                        error=type(exc).__name__,
                        attempt=attempt,
                        retry_in=round(delay, 3),
                    )
                    await asyncio.sleep(delay)
                    continue
                if isinstance(exc, httpx.TimeoutException):
                    raise _timeout(provider, "connect", settings) from None
                raise provider_failure(
                    provider,
                    None,
                    "",
                    secrets=secrets,
                    known=self.secrets,
                    retryable=True,
                    message=f"unreachable ({type(exc).__name__})",
                ) from None
            except httpx.TimeoutException:
                self._count(provider, None)
                raise _timeout(provider, "read", settings) from None
            except httpx.TransportError as exc:
                self._count(provider, None)
                raise provider_failure(
                    provider,
                    None,
                    "",
                    secrets=secrets,
                    known=self.secrets,
                    retryable=True,
                    message=f"connection failed ({type(exc).__name__})",
                ) from None
            status = response.status_code
            self._count(provider, status)
            if 200 <= status < 300:
                return response
            if status == 429 or status >= 500:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                honoured = retry_after is None or retry_after <= settings.provider_max_retry_after
                if attempt < attempts and honoured:
                    delay = waits.next(retry_after)
                    log.info(
                        "provider busy; retrying",
                        provider=provider,
                        status=status,
                        attempt=attempt,
                        retry_in=round(delay, 3),
                    )
                    await asyncio.sleep(delay)
                    continue
                extra = {"attempts": attempt}
                if retry_after is not None:
                    extra["retry_after"] = retry_after  # type: ignore[assignment]
                raise provider_failure(
                    provider, status, response.text, secrets=secrets, known=self.secrets, extra=extra
                )
            raise provider_failure(provider, status, response.text, secrets=secrets, known=self.secrets)
        raise AssertionError("unreachable")  # pragma: no cover

    async def call_json(self, provider: str, method: str, path: str, **kwargs: Any) -> Any:
        """:meth:`call`, then the response body as JSON (``None`` for an empty body)."""
        response = await self.call(provider, method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise unexpected_response(provider, response, "body is not JSON") from None


def clients_of(ctx: ExecutionContext) -> ProviderClients:
    """The provider clients of the worker running ``ctx``'s call."""
    return ctx.resources.get(ProviderClients)


async def call(ctx: ExecutionContext, provider: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """:meth:`ProviderClients.call` with the clients of the worker running ``ctx``'s call."""
    return await clients_of(ctx).call(provider, method, path, **kwargs)


async def call_json(ctx: ExecutionContext, provider: str, method: str, path: str, **kwargs: Any) -> Any:
    """:meth:`ProviderClients.call_json` with the clients of the worker running ``ctx``'s call."""
    return await clients_of(ctx).call_json(provider, method, path, **kwargs)


class ProvidersExtension(BaseExtension):
    """Gives a worker its own :class:`ProviderClients` (``ctx.resources``) and closes them when
    the worker stops."""

    name = "providers"

    def __init__(self, settings: Settings) -> None:
        self.clients = ProviderClients(settings)

    async def start(self, ctx: WorkerContext) -> bool:
        self.clients.secrets = ctx.resources.find(SecretRegistry)
        self.clients.metrics = ctx.resources.find(Metrics)
        self.clients.resources = ctx.resources
        ctx.resources.provide(ProviderClients, self.clients)
        return True

    async def stop(self) -> None:
        await self.clients.aclose()


# ---------------------------------------------------------------------------------- inputs
def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _schema_allows_blanks(schema: dict[str, Any]) -> None:
    """JSON Schema side of :class:`CatalogInput`: an optional field also accepts ``""`` (the
    orchestrator's "unset"), so schema validation agrees with the model."""
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        if name in required or not isinstance(prop, dict):
            continue
        if prop.get("type") == "string" and "enum" not in prop and "pattern" not in prop:
            continue  # a plain string accepts "" already
        if any(o == {"type": "string"} for o in prop.get("anyOf", ())):
            continue
        meta = {k: prop.pop(k) for k in ("title", "description", "default") if k in prop}
        options = prop.pop("anyOf", None) or [dict(prop)]
        prop.clear()
        prop.update(meta)
        prop["anyOf"] = [*options, {"type": "string", "maxLength": 0}]


class CatalogInput(BaseModel):
    """Base of the catalog functions' inputs.

    The orchestrator sends every config field, unset ones as ``""``: blank fields count as
    absent (the default applies; a required one is reported missing). Unknown keys
    (``_context``, ``integrationId``, ...) are ignored.
    """

    model_config = ConfigDict(extra="ignore", json_schema_extra=_schema_allows_blanks)

    @model_validator(mode="before")
    @classmethod
    def _drop_blanks(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not _blank(v)}
        return data


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [str(part).strip() for part in value if str(part).strip()]
    return value


def parse_json_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
    return value


def _number_as_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


#: A list of strings that also accepts ``"a, b, c"``.
CommaList = Annotated[
    list[str],
    BeforeValidator(_split_commas),
    WithJsonSchema(
        {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    ),
]
#: An object that also accepts its JSON text.
JsonObject = Annotated[
    dict[str, Any],
    BeforeValidator(parse_json_text),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "object"}]}),
]
#: A list that also accepts its JSON text.
JsonList = Annotated[
    list[Any],
    BeforeValidator(parse_json_text),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array"}]}),
]
#: An integer that also accepts its decimal text (``"30"``).
LaxInt = Annotated[
    int,
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string", "pattern": r"^\s*-?\d+\s*$"}]}),
]
#: A number that also accepts its decimal text (``"0.2"``).
LaxFloat = Annotated[
    float,
    WithJsonSchema(
        {"anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^\s*-?(\d+\.?\d*|\.\d+)\s*$"}]}
    ),
]
#: A boolean that also accepts ``"true"`` / ``"false"``.
LaxBool = Annotated[
    bool,
    WithJsonSchema({"anyOf": [{"type": "boolean"}, {"type": "string", "enum": ["true", "false"]}]}),
]
#: Marks a string enum whose options look like numbers (``"2"``), so ``2`` is accepted too;
#: pair it with :func:`numeric_options_schema`.
NUMBER_AS_TEXT = BeforeValidator(_number_as_text)


def numeric_options_schema(*options: str) -> WithJsonSchema:
    """JSON Schema of a select whose options are numbers written as text: either spelling."""
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "enum": list(options)},
                {"type": "number", "enum": [float(o) if "." in o else int(o) for o in options]},
            ]
        }
    )
