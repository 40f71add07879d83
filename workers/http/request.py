"""``system/http-request``: one HTTP request through the SSRF-guarded client.

Input (every field also accepted in the shapes the workflow builder's orchestrator sends:
blank strings count as absent, ``timeout_seconds`` as text, ``headers``/``query`` as JSON text)::

    {"url": "https://api.example.com/items", "method": "POST",
     "headers": {"Authorization": "Bearer …"}, "query": {"page": 2, "tag": ["a", "b"]},
     "body": {"name": "x"}, "timeout_seconds": "30"}

Output: ``{status, headers, body}`` — ``headers`` with lower-case names, ``body`` decoded from
JSON when the response's content type is JSON, text otherwise. A non-2xx status is a completed
execution (the status is in the output); failures are the client's codes
(:mod:`workers.http.client`). The SSRF policy is the worker's own: ``ctx.resources.get(HttpPolicy)``,
provided by :class:`~workers.http.extension.HttpExtension`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from shared.functions import ExecutionContext, builtin
from shared.runtime.spans import Tracing
from workers.http import client
from workers.http.ssrf import HttpPolicy

__all__ = [
    "MAX_TIMEOUT_SECONDS",
    "HttpRequestInput",
    "HttpRequestOutput",
    "encode_body",
    "http_request",
    "query_pairs",
]

MAX_TIMEOUT_SECONDS = 600.0
Scalar = str | int | float | bool


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _json_text(value: Any) -> Any:
    """An object given as its JSON text (``'{"a": "b"}'``) is read as the object."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError("must be an object or its JSON text") from None
    return value


def _scalar_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _header_values(value: Any) -> Any:
    value = _json_text(value)
    if isinstance(value, dict):
        return {k: _scalar_text(v) for k, v in value.items() if v is not None}
    return value


def _number_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise ValueError('must be a number of seconds, e.g. 30 or "30"') from None
    return value


Headers = Annotated[
    dict[str, str],
    BeforeValidator(_header_values),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
                {"type": "string"},
            ]
        }
    ),
]
Query = Annotated[
    dict[str, Scalar | list[Scalar]],
    BeforeValidator(_json_text),
    WithJsonSchema({"anyOf": [{"type": "object"}, {"type": "string"}]}),
]
Seconds = Annotated[
    float,
    BeforeValidator(_number_text),
    Field(gt=0, le=MAX_TIMEOUT_SECONDS),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_SECONDS},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*$"},
            ]
        }
    ),
]


class HttpRequestInput(BaseModel):
    """Input of ``system/http-request`` (module docstring). Unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    url: str = Field(min_length=1, max_length=8192, title="URL", description="http or https URL.")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = Field(
        default="GET", title="Method"
    )
    headers: Headers = Field(default_factory=dict, title="Headers")
    query: Query = Field(default_factory=dict, title="Query parameters", description="Appended to the URL.")
    body: Any = Field(
        default=None,
        title="Body",
        description="A string is sent as is (text/plain unless Content-Type is given); any other "
        "JSON value is sent as JSON (application/json unless Content-Type is given).",
    )
    timeout_seconds: Seconds = Field(default=30.0, title="Timeout (seconds)")

    @model_validator(mode="before")
    @classmethod
    def _lax(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if not _blank(v)}
            if isinstance(data.get("url"), str):
                data["url"] = data["url"].strip()
            if isinstance(data.get("method"), str):
                data["method"] = data["method"].strip().upper()
        return data


class HttpRequestOutput(BaseModel):
    """Output of ``system/http-request``."""

    status: int
    headers: dict[str, str]
    body: Any = Field(description="Decoded JSON for JSON content types, text otherwise.")


def query_pairs(query: dict[str, Scalar | list[Scalar]]) -> list[tuple[str, str]]:
    """Query parameters as ``(name, text)`` pairs; a list repeats the name; booleans are
    ``true``/``false``."""
    pairs: list[tuple[str, str]] = []
    for name, value in query.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((name, str(_scalar_text(item))))
    return pairs


def encode_body(body: Any) -> tuple[bytes | None, str | None]:
    """``(bytes, default content type)`` for a request body (see ``HttpRequestInput.body``)."""
    if body is None:
        return None, None
    if isinstance(body, str):
        return body.encode(), "text/plain; charset=utf-8"
    return orjson.dumps(body), "application/json"


@builtin(
    "system/http-request",
    domain="http",
    name="HTTP Request",
    description="Sends an HTTP request (SSRF-guarded) and returns {status, headers, body}.",
    input_model=HttpRequestInput,
    output_model=HttpRequestOutput,
    # Above the input's own maximum, so the request's timeout_seconds is what ends a slow call.
    timeout_seconds=MAX_TIMEOUT_SECONDS + 10,
)
async def http_request(data: HttpRequestInput, ctx: ExecutionContext) -> dict[str, Any]:
    headers = client.check_headers(data.headers)
    body, content_type = encode_body(data.body)
    if content_type is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = content_type
    response = await client.send(
        data.method,
        data.url,
        headers=headers,
        query=query_pairs(data.query),
        body=body,
        timeout=data.timeout_seconds,
        policy=ctx.resources.get(HttpPolicy),
        tracing=ctx.resources.find(Tracing),
    )
    return response.as_result()
