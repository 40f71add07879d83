"""The executor of registered functions with ``execution_type = "http"`` (webhooks).

The registry owns the function's definition; this module only runs it::

    result = await run_webhook(
        url=spec.webhook_url, method=spec.webhook_method, headers=spec.webhook_headers,
        timeout_seconds=spec.timeout_seconds, input=call.input, ctx=call.ctx,
    )

The request (policy prose: ``docs/http.md``):

* ``method`` (default ``POST``) to ``url`` through the SSRF-guarded client — same allow-list,
  redirect, size and timeout rules as ``system/http-request``;
* body: the execution's input as JSON (``Content-Type: application/json``); for ``GET`` and
  ``HEAD`` the input's top-level fields become query parameters instead (scalars as text,
  other values as JSON text);
* headers: ``X-Fleet-Execution-Id``, ``X-Fleet-Function``, ``X-Fleet-Attempt`` (and
  ``X-Fleet-Workflow-Execution-Id`` / ``X-Fleet-Node-Id`` when known), then the function's own
  ``headers``, which win on a clash;
* credentials: a header *value* may contain ``{{credentials.KEY}}`` placeholders, replaced by
  the value of ``KEY`` from ``ctx.credentials`` — e.g. ``{"Authorization": "Bearer
  {{credentials.ACME_TOKEN}}"}`` or ``{"X-Api-Key": "{{credentials.ACME_KEY}}"}``. The keys must
  be among the function's declared credentials (:func:`webhook_credential_keys` lists them for
  the registry; the credentials middleware resolves them before the call); a key that is not in
  ``ctx.credentials`` fails ``credentials_missing``. Placeholders are resolved nowhere else (not
  in the URL, not in the body), so a secret never lands in a URL or a log of one. Headers that
  carried a credential are dropped if a redirect leaves the webhook's origin.

Result: a 2xx response gives ``{status, headers, body}`` (body decoded as in
``system/http-request``); any other status fails ``function_failed`` with details
``{status, body}`` (body excerpt, secrets masked before the cut), retryable for 408, 425, 429
and 5xx.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel

from shared.contract import ErrorCode
from shared.credentials import call_secrets, how_to_provide, scrub_then_truncate
from shared.errors import ExecutionFailed
from shared.functions import ExecutionContext
from shared.registry.models import FunctionRecord
from shared.runtime.spans import Tracing
from workers.http import client
from workers.http.ssrf import HttpPolicy

__all__ = [
    "DEFAULT_WEBHOOK_TIMEOUT",
    "WebhookExecutor",
    "render_headers",
    "run_webhook",
    "webhook_credential_keys",
]

DEFAULT_WEBHOOK_TIMEOUT = 30.0
_CREDENTIAL = re.compile(r"\{\{\s*credentials\.([A-Za-z0-9_.:\-]+)\s*\}\}")
_ANY_TEMPLATE = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_RETRYABLE_STATUSES = frozenset({408, 425, 429})
_EXCERPT_LIMIT = 2048


def webhook_credential_keys(headers: Mapping[str, str] | None) -> tuple[str, ...]:
    """The credential keys named by ``{{credentials.KEY}}`` in header values, in order of first
    use, without repeats — what the registry declares as the function's ``credentials``."""
    keys: list[str] = []
    for value in (headers or {}).values():
        for key in _CREDENTIAL.findall(value):
            if key not in keys:
                keys.append(key)
    return tuple(keys)


def render_headers(
    headers: Mapping[str, str] | None, credentials: Mapping[str, str]
) -> tuple[dict[str, str], set[str]]:
    """Replace the credential placeholders in header values.

    Returns the rendered headers and the names of those that carried a credential. A key
    missing from ``credentials`` fails ``credentials_missing`` (naming every missing key, never
    a value); any other ``{{…}}`` left in a value fails ``function_failed`` rather than being
    sent literally.
    """
    missing = [k for k in webhook_credential_keys(headers) if k not in credentials]
    if missing:
        raise ExecutionFailed(
            f"missing credentials for the webhook headers: {', '.join(missing)}; "
            + how_to_provide(missing, store=True),
            code=ErrorCode.CREDENTIALS_MISSING,
            details={"missing": missing},
        )
    rendered: dict[str, str] = {}
    carrying: set[str] = set()
    for name, value in (headers or {}).items():
        text = _CREDENTIAL.sub(lambda m: credentials[m.group(1)], value)
        if text != value:
            carrying.add(name)
        if _ANY_TEMPLATE.search(_CREDENTIAL.sub("", value)):
            raise ExecutionFailed(
                f"webhook header {name!r} has a placeholder other than {{{{credentials.KEY}}}}",
                code=ErrorCode.FUNCTION_FAILED,
                details={"header": name},
            )
        rendered[name] = text
    return rendered, carrying


def _query_from(input: Any) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    if isinstance(input, Mapping):
        for name, value in input.items():
            if value is None:
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str | int | float):
                text = str(value)
            else:
                text = orjson.dumps(value).decode()
            pairs.append((str(name), text))
    return pairs


def _excerpt(response: client.HttpResponse, ctx: ExecutionContext) -> Any:
    """The error body for ``details``: decoded whole up to :data:`_EXCERPT_LIMIT` bytes (the
    result encoder scrubs it), else its text cut to that many characters after masking the
    call's credentials and every secret its worker resolved (:func:`call_secrets`), so a
    credential the server echoes across the cut leaves no prefix behind."""
    if len(response.body) <= _EXCERPT_LIMIT:
        return response.decoded()
    text = response.body.decode("utf-8", errors="replace")
    return scrub_then_truncate(text, _EXCERPT_LIMIT, known=call_secrets(ctx), ellipsis="…")


async def run_webhook(
    *,
    url: str,
    method: str = "POST",
    headers: Mapping[str, str] | None = None,
    timeout_seconds: float | None = None,
    input: Any,
    ctx: ExecutionContext,
    policy: HttpPolicy,
    ssl_context: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """Call the webhook of a registered function (module docstring) and return
    ``{status, headers, body}`` of its 2xx answer.

    ``url``, ``method``, ``headers`` and ``timeout_seconds`` come from the registry
    (``timeout_seconds`` ``None`` = :data:`DEFAULT_WEBHOOK_TIMEOUT`); ``input`` is the
    execution's (validated) input; ``ctx.credentials`` holds the resolved credential values.
    ``policy`` is the worker's (``FLEET_HTTP_*``); ``ssl_context`` is for tests.
    """
    verb = method.strip().upper()
    if verb not in client.METHODS:
        raise ExecutionFailed(f"webhook method {method!r} is not supported", code=ErrorCode.FUNCTION_FAILED)
    if "{{" in url:
        raise ExecutionFailed(
            "webhook URL contains a placeholder; credentials go in header values only",
            code=ErrorCode.FUNCTION_FAILED,
        )
    rendered, carrying = render_headers(headers, ctx.credentials)
    own = client.check_headers(rendered, what="webhook header")
    sent: dict[str, str] = {
        "X-Fleet-Execution-Id": ctx.execution_id,
        "X-Fleet-Function": ctx.function,
        "X-Fleet-Attempt": str(ctx.attempt),
    }
    if ctx.workflow_execution_id:
        sent["X-Fleet-Workflow-Execution-Id"] = ctx.workflow_execution_id
    if ctx.node_id:
        sent["X-Fleet-Node-Id"] = ctx.node_id
    own_names = {k.lower() for k in own}
    sent = {k: v for k, v in sent.items() if k.lower() not in own_names}
    payload = input.model_dump(mode="json") if isinstance(input, BaseModel) else input
    body: bytes | None = None
    query: list[tuple[str, str]] = []
    if verb in ("GET", "HEAD"):
        query = _query_from(payload)
    else:
        body = orjson.dumps(payload)
        if "content-type" not in own_names:
            sent["Content-Type"] = "application/json"
    sent.update(own)
    response = await client.send(
        verb,
        url,
        headers=sent,
        query=query,
        body=body,
        timeout=timeout_seconds or DEFAULT_WEBHOOK_TIMEOUT,
        policy=policy,
        sensitive_headers=carrying,
        ssl_context=ssl_context,
        tracing=ctx.resources.find(Tracing),
    )
    if not 200 <= response.status < 300:
        raise ExecutionFailed(
            f"webhook answered {response.status}",
            code=ErrorCode.FUNCTION_FAILED,
            retryable=response.status >= 500 or response.status in _RETRYABLE_STATUSES,
            details={"status": response.status, "body": _excerpt(response, ctx)},
        )
    return response.as_result()


class WebhookExecutor:
    """Runs the registry's ``http`` rows (``shared.registry.executors.Executor``) with
    :func:`run_webhook`: ``webhook_url``, ``webhook_method`` (default ``POST``),
    ``webhook_headers``, and ``webhook_timeout_seconds`` (else the function's
    ``timeout_seconds``, else :data:`DEFAULT_WEBHOOK_TIMEOUT`) for the HTTP exchange.

    The policy is the calling worker's, read from ``ctx.resources.get(HttpPolicy)`` on each
    call; ``ssl_context`` is for tests (``None``: the default verifying TLS context).
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context

    async def execute(self, function: FunctionRecord, data: Any, ctx: ExecutionContext) -> dict[str, Any]:
        if not function.webhook_url:
            raise ExecutionFailed(
                f"{function.slug} is an http function without a webhook_url", code=ErrorCode.FUNCTION_FAILED
            )
        return await run_webhook(
            url=function.webhook_url,
            method=function.webhook_method or "POST",
            headers=function.webhook_headers,
            timeout_seconds=function.webhook_timeout_seconds or function.timeout_seconds,
            input=data,
            ctx=ctx,
            policy=ctx.resources.get(HttpPolicy),
            ssl_context=self.ssl_context,
        )
