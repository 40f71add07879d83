"""JSON Schema (draft 2020-12) validation of a function's input and output, from the
registry's ``input_schema`` / ``output_schema``.

Validators are compiled once per (function, version) and reused; a new version (a schema
change) compiles anew. Failures list every violation as ``{path, message}`` with the path in
JSON-pointer form, like the pydantic validation of built-ins.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from shared.contract import ErrorCode
from shared.errors import ExecutionFailed, InvalidInput
from shared.functions import FunctionSpec
from shared.runtime.middleware import Call, CallNext

__all__ = ["SchemaValidationMiddleware", "ValidatorCache", "schema_violations"]

_CacheKey = tuple[str, int, str]
#: the schema of a built-in without an input model (shared.registry.sync.PERMISSIVE_SCHEMA).
_ANY_OBJECT = {"type": "object"}


def _pointer(parts: Any) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def schema_violations(validator: Draft202012Validator, instance: Any) -> list[dict[str, str]]:
    """Every violation of ``instance``, ordered by path, as ``{path, message}``."""
    errors = sorted(
        validator.iter_errors(instance), key=lambda e: (list(map(str, e.absolute_path)), e.message)
    )
    return [{"path": _pointer(e.absolute_path), "message": e.message} for e in errors]


def _input_checked_elsewhere(spec: FunctionSpec) -> bool:
    """A built-in's input_schema is generated from its input model (the code owns it, see
    shared.registry.sync), and that model validates the input next with the same
    {path, message} violations; without a model the schema only says "an object", which every
    request's input is. Checking both would spend the time twice."""
    return spec.execution_type == "builtin" and (
        spec.input_model is not None or spec.input_schema == _ANY_OBJECT
    )


class ValidatorCache:
    """Compiled validators keyed by (function id or slug, version, which schema)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._validators: dict[_CacheKey, Draft202012Validator] = {}
        self._max = max_entries
        #: validators compiled so far (tests check the reuse).
        self.compiled = 0

    def get(self, spec: FunctionSpec, which: str) -> Draft202012Validator | None:
        schema = spec.input_schema if which == "input" else spec.output_schema
        if schema is None:
            return None
        key = (spec.function_id or spec.slug, spec.version, which)
        validator = self._validators.get(key)
        if validator is None:
            if len(self._validators) >= self._max:
                self._validators.clear()
            validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
            self._validators[key] = validator
            self.compiled += 1
        return validator


class SchemaValidationMiddleware:
    """``invalid_input`` when the (template-resolved) input violates ``input_schema``;
    ``invalid_output`` when the function's output violates ``output_schema``."""

    def __init__(self, cache: ValidatorCache | None = None) -> None:
        self.cache = cache or ValidatorCache()

    @staticmethod
    def applies(spec: FunctionSpec) -> bool:
        return spec.output_schema is not None or not _input_checked_elsewhere(spec)

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        spec = call.spec
        validator = None if _input_checked_elsewhere(spec) else self.cache.get(spec, "input")
        if validator is not None:
            found = schema_violations(validator, call.input)
            if found:
                raise InvalidInput(f"input does not match {call.spec.slug}'s input_schema", details=found)
        output = await call_next(call)
        validator = self.cache.get(call.spec, "output")
        if validator is not None:
            found = schema_violations(validator, output)
            if found:
                raise ExecutionFailed(
                    f"output of {call.spec.slug} does not match its output_schema",
                    code=ErrorCode.INVALID_OUTPUT,
                    details=found,
                )
        return output
