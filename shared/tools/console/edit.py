"""Editing and creating registered (oci/http) functions from a form or a JSON body.

Changes are merged onto the current definition, validated by
:class:`~shared.registry.models.FunctionDefinition` (the rules `fleet functions register`
applies) and saved in one upsert, so a refused edit leaves nothing half-saved. Refusals name the
field they concern (:class:`EditRefused`), which the page shows beside that field.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from shared.registry.models import FunctionDefinition, FunctionRecord

__all__ = ["EDITABLE", "JSON_FIELDS", "EditRefused", "definition_from", "form_changes", "form_values"]

#: Field → kind, in the order the form shows them.
EDITABLE: dict[str, str] = {
    "name": "text",
    "description": "textarea",
    "domain": "text",
    "image_ref": "text",
    "command": "json",
    "working_dir": "text",
    "webhook_url": "text",
    "webhook_method": "text",
    "webhook_timeout_seconds": "number",
    "timeout_seconds": "number",
    "max_concurrency": "integer",
    "concurrency_key": "text",
    "rate_limit": "json",
    "retry_policy": "json",
    "resources": "json",
    "input_schema": "json",
    "output_schema": "json",
    "tags": "list",
    "credentials": "list",
}
JSON_FIELDS = tuple(k for k, v in EDITABLE.items() if v == "json")
#: Kept from the current definition, never edited here (their values may hold secrets).
_KEPT = ("webhook_headers", "container_env", "is_deprecated", "execution_type", "slug")
_GENERAL = "_form"


class EditRefused(ValueError):
    """The edit was refused; ``fields`` maps a field name (or ``_form``) to the reason."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


def form_values(record: dict[str, Any] | None) -> dict[str, str]:
    """The form's text for each editable field of ``record`` (JSON pretty-printed)."""
    out: dict[str, str] = {}
    for name, kind in EDITABLE.items():
        value = (record or {}).get(name)
        if value is None:
            out[name] = ""
        elif kind == "json":
            out[name] = json.dumps(value, indent=2, sort_keys=False)
        elif kind == "list":
            out[name] = ", ".join(value)
        else:
            out[name] = str(value)
    return out


def form_changes(form: Any) -> dict[str, Any]:
    """Typed changes from submitted form text; every field of :data:`EDITABLE` present in the
    form is taken (blank = unset). Raises :class:`EditRefused` for text that does not parse."""
    changes: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, kind in EDITABLE.items():
        if name not in form:
            continue
        raw = str(form.get(name) or "").strip()
        if not raw:
            changes[name] = [] if kind == "list" else "" if name == "description" else None
            continue
        if kind == "json":
            try:
                changes[name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                errors[name] = f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        elif kind == "number":
            try:
                changes[name] = float(raw)
            except ValueError:
                errors[name] = "must be a number"
        elif kind == "integer":
            if raw.isdigit():
                changes[name] = int(raw)
            else:
                errors[name] = "must be a whole number"
        elif kind == "list":
            changes[name] = [part.strip() for part in raw.split(",") if part.strip()]
        else:
            changes[name] = raw
    if errors:
        raise EditRefused(errors)
    return changes


def _field_of(message: str) -> str:
    for name in EDITABLE:
        if name in message:
            return name
    return _GENERAL


def definition_from(current: FunctionRecord | None, changes: dict[str, Any]) -> FunctionDefinition:
    """``changes`` over ``current`` (``None``: a new function, ``changes`` is all of it) as a
    validated definition; :class:`EditRefused` with the reason per field otherwise."""
    if current is not None and current.is_builtin:
        raise EditRefused({_GENERAL: f"{current.slug} is a built-in: it comes from code and is read-only"})
    unknown = [k for k in changes if k not in EDITABLE and (current is not None or k not in _KEPT)]
    if unknown:
        raise EditRefused(dict.fromkeys(unknown, "not a field that can be set here"))
    base: dict[str, Any] = {}
    if current is not None:
        document = current.to_json()
        base = {k: document.get(k) for k in (*EDITABLE, *_KEPT)}
        base = {k: v for k, v in base.items() if v is not None}
        if not base.get("description"):
            base.pop("description", None)
    merged = {**base, **changes}
    merged = {k: v for k, v in merged.items() if v is not None}
    try:
        return FunctionDefinition.model_validate(merged)
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for error in exc.errors():
            loc = error.get("loc") or ()
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            field = str(loc[0]) if loc else _field_of(message)
            if len(loc) > 1:
                message = f"{'.'.join(map(str, loc[1:]))}: {message}"
            errors.setdefault(field, message)
        raise EditRefused(errors) from None
