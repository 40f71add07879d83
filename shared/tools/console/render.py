"""Jinja filters of the console's templates. Values are returned as plain text: the
environment autoescapes everything, so no filter here ever marks anything safe."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import jinja2

__all__ = ["install", "schema_rows"]


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, default=str, ensure_ascii=False)


def ms(value: Any) -> str:
    if value is None:
        return "\u2013"
    value = float(value)
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def percent(value: Any) -> str:
    return "\u2013" if value is None else f"{float(value) * 100:.1f} %"


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = " | ".join(map(str, kind))
    if kind is None:
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list):
                kind = " | ".join(_type_of(s) for s in schema[key] if isinstance(s, dict))
        if kind is None and "$ref" in schema:
            kind = str(schema["$ref"]).rsplit("/", 1)[-1]
    if kind == "array" and isinstance(schema.get("items"), dict):
        kind = f"array of {_type_of(schema['items'])}"
    return str(kind or "any")


def schema_rows(schema: Any, prefix: str = "", depth: int = 0) -> list[dict[str, Any]]:
    """The properties of a JSON Schema as rows (path, type, required, description, default,
    enum), nested objects flattened with dotted paths (three levels at most)."""
    if not isinstance(schema, dict):
        return []
    rows: list[dict[str, Any]] = []
    required = set(schema.get("required") or ())
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return rows
    for name, sub in properties.items():
        if not isinstance(sub, dict):
            continue
        path = f"{prefix}{name}"
        rows.append(
            {
                "path": path,
                "type": _type_of(sub),
                "required": name in required,
                "description": str(sub.get("description") or sub.get("title") or ""),
                "default": json.dumps(sub["default"]) if "default" in sub else "",
                "enum": ", ".join(json.dumps(v) for v in sub.get("enum", [])),
            }
        )
        if depth < 2 and isinstance(sub.get("properties"), dict):
            rows.extend(schema_rows(sub, f"{path}.", depth + 1))
    return rows


def query(values: dict[str, Any], **changes: Any) -> str:
    merged = {**values, **changes}
    return urlencode({k: v for k, v in merged.items() if v not in (None, "")})


def short(value: Any, length: int = 80) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= length else text[: length - 1] + "…"


def install(env: jinja2.Environment) -> None:
    env.filters.update(
        pretty=pretty, ms=ms, percent=percent, schema_rows=schema_rows, short=short, urlpath=quote
    )
    env.globals.update(query=query)
