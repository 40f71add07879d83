"""Anthropic Messages API: ``anthropic/generate-text`` (not in the origin; mirrors the openai
field keys so workflows can swap providers). Object mode forces a single tool call whose input
schema is built from ``aiSchema``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from shared.functions import ExecutionContext, builtin
from workers.ai.structured import GenerateTextOutput, StructuredInput, object_schema
from workers.providers import LaxFloat, LaxInt, call_json, provider_failure, unexpected_response

__all__ = ["generate_text"]

PROVIDER = "anthropic"
KEY = "ANTHROPIC_API_KEY"
DOMAIN = "ai"
API_VERSION = "2023-06-01"
TOOL_NAME = "result"


class GenerateTextInput(StructuredInput):
    aiModel: Literal[
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "claude-opus-4-1",
        "claude-sonnet-4-0",
        "claude-3-5-haiku-latest",
    ] = Field(default="claude-sonnet-4-5", title="Model")
    system: str | None = Field(default=None, title="System prompt")
    maxTokens: LaxInt = Field(default=1024, ge=1, le=64_000, title="Max tokens")
    temperature: LaxFloat | None = Field(default=None, ge=0, le=1, title="Temperature")


@builtin(
    "anthropic/generate-text",
    domain=DOMAIN,
    name="Generate Text",
    description="Generates text (or a JSON object shaped by aiSchema) with a Claude model.",
    input_model=GenerateTextInput,
    output_model=GenerateTextOutput,
    credentials=(KEY,),
    timeout_seconds=300,
)
async def generate_text(data: GenerateTextInput, ctx: ExecutionContext) -> dict[str, Any]:
    key = ctx.credentials[KEY]
    fields = data.schema_fields()
    payload: dict[str, Any] = {
        "model": data.aiModel,
        "max_tokens": data.maxTokens,
        "messages": [{"role": "user", "content": data.aiPrompt}],
    }
    if data.system:
        payload["system"] = data.system
    if data.temperature is not None:
        payload["temperature"] = data.temperature
    if fields:
        payload["tools"] = [
            {"name": TOOL_NAME, "description": "Return the result.", "input_schema": object_schema(fields)}
        ]
        payload["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
    body = await call_json(
        ctx,
        PROVIDER,
        "POST",
        "/v1/messages",
        headers={"x-api-key": key, "anthropic-version": API_VERSION},
        json=payload,
        secrets=[key],
    )
    blocks = body.get("content") if isinstance(body, dict) else None
    if not isinstance(blocks, list):
        raise unexpected_response(PROVIDER, None, "no content blocks")
    if fields:
        for block in blocks:
            if (
                isinstance(block, dict)
                and block.get("type") == "tool_use"
                and isinstance(block.get("input"), dict)
            ):
                return {"success": True, "object": block["input"]}
        raise provider_failure(PROVIDER, 200, "", retryable=False, message="model did not return the object")
    text = "".join(
        str(block.get("text", ""))
        for block in blocks
        if isinstance(block, dict) and block.get("type") == "text"
    )
    return {"success": True, "text": text}
