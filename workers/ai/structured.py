"""What the generate-text functions share: the ``aiFormat``/``aiSchema`` fields (a JSON list of
``{name, type}``) and the JSON Schema built from them for structured output."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema

from shared.contract import ErrorCode
from shared.errors import ExecutionFailed
from workers.providers import CatalogInput, parse_json_text

__all__ = ["GenerateTextOutput", "SchemaField", "StructuredInput", "object_schema", "parse_object"]


class SchemaField(BaseModel):
    name: str = Field(min_length=1)
    type: Literal["string", "number", "boolean"] = "string"


SchemaFields = Annotated[
    list[SchemaField],
    BeforeValidator(parse_json_text),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "description": 'JSON list of {"name", "type"}'},
                {"type": "array", "items": SchemaField.model_json_schema()},
            ]
        }
    ),
]


class StructuredInput(CatalogInput):
    aiFormat: Literal["text", "object"] = Field(
        default="text", title="Output format", description="`object` returns JSON shaped by aiSchema."
    )
    aiPrompt: str = Field(title="Prompt")
    aiSchema: SchemaFields | None = Field(
        default=None,
        title="Schema",
        description='Only for aiFormat=object: [{"name": "summary", "type": "string"}, ...].',
    )

    def schema_fields(self) -> list[SchemaField]:
        if self.aiFormat != "object":
            return []
        if not self.aiSchema:
            raise ExecutionFailed(
                "aiFormat=object needs aiSchema (a list of {name, type})",
                code=ErrorCode.INVALID_INPUT,
                details=[{"path": "/aiSchema", "message": "required when aiFormat is object"}],
            )
        return self.aiSchema


class GenerateTextOutput(BaseModel):
    """``{success, text}`` in text mode, ``{success, object}`` in object mode."""

    success: bool = True
    text: str | None = None
    object: dict[str, Any] | None = None


def object_schema(fields: list[SchemaField]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {f.name: {"type": f.type} for f in fields},
        "required": [f.name for f in fields],
        "additionalProperties": False,
    }


def parse_object(text: str, provider: str) -> dict[str, Any]:
    from workers.providers import provider_failure

    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise provider_failure(
            provider, 200, text, retryable=False, message="model did not return a JSON object"
        )
    return value
