"""What the SaaS built-ins share: one pooled HTTP client per provider, retries, error mapping,
and the input types that accept what the workflow builder's orchestrator sends.

Calling a provider::

    body = await call_json("slack", "POST", "/chat.postMessage", headers=bearer(key), json={...},
                           secrets=ctx.credentials.values())

* one :class:`httpx.AsyncClient` per provider, created lazily and closed by
  :func:`close_providers` (call it at worker shutdown; safe to call any number of times);
* connect/read timeouts from :class:`ProviderSettings`;
* 429 and 5xx are retried (at most ``FLEET_PROVIDER_MAX_ATTEMPTS`` attempts in all) after the
  ``Retry-After`` the provider asked for (seconds or an HTTP date) or an exponential backoff;
  connection failures (the request never reached the provider) are retried the same way;
* a final non-2xx fails the execution with ``provider_error`` and details
  ``{provider, status, body}`` (body excerpt scrubbed of every known secret; request headers are
  never echoed), retryable for 429/5xx; a read timeout fails with ``timeout`` (retryable).

Every base URL is overridable with ``FLEET_<PROVIDER>_BASE_URL`` (tests point them at fakes).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import structlog
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.contract import ErrorCode
from shared.credentials import scrub_then_truncate
from shared.errors import ExecutionFailed
from shared.functions import on_shutdown

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
    "ProviderSettings",
    "bearer",
    "call",
    "call_json",
    "close_providers",
    "get_client",
    "numeric_options_schema",
    "parse_json_text",
    "parse_retry_after",
    "provider_failure",
    "provider_settings",
    "unexpected_response",
]

#: Provider name → default base URL (paths passed to :func:`call` are appended to it).
PROVIDERS: dict[str, str] = {
    "openai": "https://api.openai.com",
    "anthropic": "https://api.anthropic.com",
    "perplexity": "https://api.perplexity.ai",
    "fal": "https://queue.fal.run",
    "firecrawl": "https://api.firecrawl.dev",
    "superagent": "https://app.superagent.sh",
    "v0": "https://api.v0.dev",
    "slack": "https://slack.com/api",
    "resend": "https://api.resend.com",
    "github": "https://api.github.com",
    "linear": "https://api.linear.app",
    "webflow": "https://api.webflow.com",
    "clerk": "https://api.clerk.com",
    "stripe": "https://api.stripe.com",
    "blob": "https://blob.vercel-storage.com",
}

log = structlog.get_logger("fleet.providers")

BODY_EXCERPT_CHARS = 500
_MESSAGE_CHARS = 300


def _url(provider: str) -> Any:
    return Field(default=PROVIDERS[provider], description=f"Base URL of the {provider} API.")


class ProviderSettings(BaseSettings):
    """Settings of the provider clients (``FLEET_*``). Frozen; read once per process (see
    :func:`provider_settings`)."""

    model_config = SettingsConfigDict(env_prefix="FLEET_", frozen=True, extra="ignore")

    openai_base_url: str = _url("openai")
    anthropic_base_url: str = _url("anthropic")
    perplexity_base_url: str = _url("perplexity")
    fal_base_url: str = _url("fal")
    firecrawl_base_url: str = _url("firecrawl")
    superagent_base_url: str = _url("superagent")
    v0_base_url: str = _url("v0")
    slack_base_url: str = _url("slack")
    resend_base_url: str = _url("resend")
    github_base_url: str = _url("github")
    linear_base_url: str = _url("linear")
    webflow_base_url: str = _url("webflow")
    clerk_base_url: str = _url("clerk")
    stripe_base_url: str = _url("stripe")
    blob_base_url: str = _url("blob")

    provider_connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to connect to a provider API."
    )
    provider_read_timeout: float = Field(
        default=300.0, gt=0, description="Seconds to wait for a provider API's answer (LLMs are slow)."
    )
    provider_max_attempts: int = Field(
        default=3, ge=1, le=10, description="Attempts per provider call (429/5xx/connect errors retried)."
    )
    provider_backoff: float = Field(
        default=0.5, ge=0, description="First backoff in seconds between attempts (doubles, with jitter)."
    )
    provider_max_retry_after: float = Field(
        default=30.0,
        ge=0,
        description="Longest Retry-After honoured in-process; longer ones fail retryable at once.",
    )
    provider_max_connections: int = Field(
        default=100, ge=1, description="Pooled connections per provider client."
    )
    fal_poll_interval: float | None = Field(
        default=None,
        ge=0,
        description="Seconds between fal queue polls (default: 1 s for images, 2 s for video).",
    )

    def base_url(self, provider: str) -> str:
        value = getattr(self, f"{provider}_base_url", None)
        if not isinstance(value, str):
            raise KeyError(f"unknown provider {provider!r}")
        return value.rstrip("/")


_settings: ProviderSettings | None = None
_clients: dict[str, httpx.AsyncClient] = {}
_client_loops: dict[str, asyncio.AbstractEventLoop | None] = {}


def provider_settings() -> ProviderSettings:
    """The process's :class:`ProviderSettings` (built from the environment on first use)."""
    global _settings
    if _settings is None:
        _settings = ProviderSettings()
    return _settings


def get_client(provider: str) -> httpx.AsyncClient:
    """The pooled client of ``provider`` (created on first use, and anew under another event
    loop: pooled connections belong to the loop that opened them)."""
    import httpx

    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    client = _clients.get(provider)
    if client is None or client.is_closed or _client_loops.get(provider) is not loop:
        settings = provider_settings()
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
        _clients[provider] = client
        _client_loops[provider] = loop
    return client


@on_shutdown
async def close_providers() -> None:
    """Close every provider client and forget the settings (re-read from the environment on the
    next call). Idempotent; for worker shutdown and tests."""
    global _settings
    clients = list(_clients.values())
    _clients.clear()
    _client_loops.clear()
    _settings = None
    for client in clients:
        await client.aclose()


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
    retryable: bool | None = None,
    message: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> ExecutionFailed:
    """A ``provider_error`` failure for an answer of ``provider`` (``text`` = its body)."""
    secrets = list(secrets)
    if message is None:
        try:
            message = _message_from(json.loads(text)) if text else None
        except ValueError:
            message = None
    summary = f"{provider} answered {status}" if status is not None else f"{provider} request failed"
    if message:
        summary = f"{summary}: {scrub_then_truncate(message, _MESSAGE_CHARS, secrets=secrets)}"
    details: dict[str, Any] = {
        "provider": provider,
        "status": status,
        "body": scrub_then_truncate(text, BODY_EXCERPT_CHARS, secrets=secrets),
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


def _backoff(settings: ProviderSettings, attempt: int) -> float:
    base = settings.provider_backoff * (2 ** (attempt - 1))
    return float(base * (0.5 + random.random() / 2))


# ---------------------------------------------------------------------------------- calls
def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(
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

    settings = provider_settings()
    client = get_client(provider)
    target = url or f"{settings.base_url(provider)}{path}"
    secrets = list(secrets)
    attempts = settings.provider_max_attempts
    clean_params = _clean_params(params)
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
            # The request never reached the provider: safe to try again.
            if attempt < attempts:
                delay = _backoff(settings, attempt)
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
                retryable=True,
                message=f"unreachable ({type(exc).__name__})",
            ) from None
        except httpx.TimeoutException:
            raise _timeout(provider, "read", settings) from None
        except httpx.TransportError as exc:
            raise provider_failure(
                provider,
                None,
                "",
                secrets=secrets,
                retryable=True,
                message=f"connection failed ({type(exc).__name__})",
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            return response
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if attempt < attempts:
                delay = retry_after if retry_after is not None else _backoff(settings, attempt)
                if delay <= settings.provider_max_retry_after:
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
            raise provider_failure(provider, status, response.text, secrets=secrets, extra=extra)
        raise provider_failure(provider, status, response.text, secrets=secrets)
    raise AssertionError("unreachable")  # pragma: no cover


def _timeout(provider: str, phase: str, settings: ProviderSettings) -> ExecutionFailed:
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


async def call_json(provider: str, method: str, path: str, **kwargs: Any) -> Any:
    """:func:`call`, then the response body as JSON (``None`` for an empty body)."""
    response = await call(provider, method, path, **kwargs)
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise unexpected_response(provider, response, "body is not JSON") from None


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
