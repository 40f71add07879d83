"""OpenAI: generate text (Chat Completions, optionally JSON-schema structured) and images."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.functions import ExecutionContext, builtin
from workers.ai.structured import GenerateTextOutput, StructuredInput, object_schema, parse_object
from workers.providers import CatalogInput, bearer, call_json, unexpected_response

__all__ = ["generate_image", "generate_text"]

PROVIDER = "openai"
KEY = "OPENAI_API_KEY"
DOMAIN = "ai"


class GenerateTextInput(StructuredInput):
    aiModel: Literal["gpt-4o", "gpt-4o-mini", "gpt-4-turbo", "gpt-3.5-turbo", "o1", "o1-mini"] = Field(
        default="gpt-4o", title="Model"
    )


def _message_text(body: Any) -> str:
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        content = None
    if not isinstance(content, str):
        raise unexpected_response(PROVIDER, None, "no choices[0].message.content")
    return content


@builtin(
    "openai/generate-text",
    domain=DOMAIN,
    name="Generate Text",
    description="Generates text (or a JSON object shaped by aiSchema) with an OpenAI model.",
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
        "messages": [{"role": "user", "content": data.aiPrompt}],
    }
    if fields:
        payload["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "result", "strict": True, "schema": object_schema(fields)},
        }
    body = await call_json(
        ctx, PROVIDER, "POST", "/v1/chat/completions", headers=bearer(key), json=payload, secrets=[key]
    )
    text = _message_text(body)
    if fields:
        return {"success": True, "object": parse_object(text, PROVIDER)}
    return {"success": True, "text": text}


class GenerateImageInput(CatalogInput):
    imageModel: Literal["dall-e-3", "dall-e-2"] = Field(default="dall-e-3", title="Model")
    imagePrompt: str = Field(title="Prompt")
    imageSize: Literal["1024x1024", "1792x1024", "1024x1792"] = Field(default="1024x1024", title="Size")


class GenerateImageOutput(BaseModel):
    success: bool = True
    base64: str = Field(description="The PNG, base64-encoded.")


@builtin(
    "openai/generate-image",
    domain=DOMAIN,
    name="Generate Image",
    description="Generates an image with DALL-E; returns it base64-encoded.",
    input_model=GenerateImageInput,
    output_model=GenerateImageOutput,
    credentials=(KEY,),
    timeout_seconds=180,
)
async def generate_image(data: GenerateImageInput, ctx: ExecutionContext) -> GenerateImageOutput:
    key = ctx.credentials[KEY]
    body = await call_json(
        ctx,
        PROVIDER,
        "POST",
        "/v1/images/generations",
        headers=bearer(key),
        json={
            "model": data.imageModel,
            "prompt": data.imagePrompt,
            "n": 1,
            "size": data.imageSize,
            "response_format": "b64_json",
        },
        secrets=[key],
    )
    try:
        image = body["data"][0]["b64_json"]
    except (KeyError, IndexError, TypeError):
        image = None
    if not isinstance(image, str):
        raise unexpected_response(PROVIDER, None, "no data[0].b64_json")
    return GenerateImageOutput(base64=image)
