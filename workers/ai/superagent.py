"""Superagent guardrails: classify text (guard) and redact sensitive entities."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from shared.functions import ExecutionContext, builtin
from workers.providers import (
    CatalogInput,
    CommaList,
    bearer,
    call_json,
    provider_failure,
    unexpected_response,
)

__all__ = ["guard", "redact"]

PROVIDER = "superagent"
KEY = "SUPERAGENT_API_KEY"
DOMAIN = "ai"


def _message(body: Any) -> dict[str, Any]:
    try:
        message = body["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        message = None
    if not isinstance(message, dict):
        raise unexpected_response(PROVIDER, None, "no choices[0].message")
    return message


class GuardInput(CatalogInput):
    text: str = Field(title="Text", description="Text to check (e.g. a prompt or a model's answer).")


class GuardOutput(BaseModel):
    classification: str = Field(description="`allow`/`pass` or `block`.")
    violationTypes: list[str]
    cweCodes: list[str]
    reasoning: str | None = None


@builtin(
    "superagent/guard",
    domain=DOMAIN,
    name="Guard",
    description="Classifies text as safe or blocked (prompt injection, data exfiltration, ...).",
    input_model=GuardInput,
    output_model=GuardOutput,
    credentials=(KEY,),
    timeout_seconds=60,
)
async def guard(data: GuardInput, ctx: ExecutionContext) -> GuardOutput:
    key = ctx.credentials[KEY]
    body = await call_json(
        ctx, PROVIDER, "POST", "/api/guard", headers=bearer(key), json={"text": data.text}, secrets=[key]
    )
    message = _message(body)
    content = message.get("content")
    if isinstance(content, str):
        try:
            content = json.loads(content)
        except ValueError:
            content = None
    if not isinstance(content, dict) or not isinstance(content.get("classification"), str):
        raise provider_failure(
            PROVIDER, 200, "", retryable=False, message="unexpected response: no classification"
        )
    reasoning = message.get("reasoning") or content.get("reasoning")
    return GuardOutput(
        classification=content["classification"],
        violationTypes=[str(v) for v in content.get("violation_types") or []],
        cweCodes=[str(v) for v in content.get("cwe_codes") or []],
        reasoning=str(reasoning) if reasoning else None,
    )


class RedactInput(CatalogInput):
    text: str = Field(title="Text")
    entities: CommaList | None = Field(
        default=None, title="Entities", description="Comma-separated, e.g. `SSN, EMAIL, PHONE`."
    )


class RedactOutput(BaseModel):
    redactedText: str
    reasoning: str | None = None


@builtin(
    "superagent/redact",
    domain=DOMAIN,
    name="Redact",
    description="Redacts sensitive entities (PII, secrets) from text.",
    input_model=RedactInput,
    output_model=RedactOutput,
    credentials=(KEY,),
    timeout_seconds=60,
)
async def redact(data: RedactInput, ctx: ExecutionContext) -> RedactOutput:
    key = ctx.credentials[KEY]
    payload: dict[str, Any] = {"text": data.text}
    if data.entities:
        payload["entities"] = data.entities
    message = _message(
        await call_json(
            ctx, PROVIDER, "POST", "/api/redact", headers=bearer(key), json=payload, secrets=[key]
        )
    )
    content = message.get("content")
    reasoning = message.get("reasoning")
    return RedactOutput(
        redactedText=content if isinstance(content, str) and content else data.text,
        reasoning=str(reasoning) if reasoning else None,
    )
