"""``{{node.field}}`` templates in a request's input, resolved from the request's ``context``
(earlier node outputs). Nothing is ever evaluated: a template is a *path*, nothing else.

Grammar inside ``{{ … }}`` (spaces around the path allowed)::

    path    := name ( "." name | "[" index "]" | "[" quoted "]" )*
    name    := [A-Za-z_][A-Za-z0-9_-]*
    index   := -?[0-9]+                       (negative counts from the end)
    quoted  := '…' | "…"                      (a key with any characters but its quote)

* A string that is exactly one template takes the referenced value with its type (number,
  object, list, null, ...).
* Templates inside other text are replaced by the value as text: strings as they are,
  anything else as compact JSON (``true``, ``3``, ``{"a":1}``).
* ``\\{{`` is a literal ``{{`` (the backslash is removed); nothing else is an escape. Extra
  braces around a template are literal: ``{{{a}}}`` is ``{`` + the value of ``a`` + ``}``.
* A path that does not resolve, or a ``{{ … }}`` that is not a path, fails the execution
  with ``template_unresolved`` naming the path and where in the input it was.
* Templates are resolved in values at any depth (dict values, list items), not in keys, and
  not again inside substituted values.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from shared.contract import ErrorCode
from shared.errors import ExecutionFailed
from shared.runtime.middleware import Call, CallNext

__all__ = ["TemplateError", "TemplateMiddleware", "has_templates", "resolve_path", "resolve_templates"]

# A template, or an escaped opening. A template opens at the last "{" of a run ("{{{a}}" is
# "{" then {{a}}) and closes at the first "}}" after it.
_TOKEN = re.compile(r"\\\{\{|\{\{(?!\{)(.*?)\}\}", re.DOTALL)
_STEP = re.compile(
    r"""\s*(?:
        (?P<name>[A-Za-z_][A-Za-z0-9_-]*)
      | \[\s*(?P<index>-?\d+)\s*\]
      | \[\s*'(?P<sq>[^']*)'\s*\]
      | \[\s*"(?P<dq>[^"]*)"\s*\]
    )""",
    re.VERBOSE,
)
_MISSING = object()


class TemplateError(ExecutionFailed):
    code = ErrorCode.TEMPLATE_UNRESOLVED


def _parse(path: str) -> list[str | int]:
    """The steps of ``path``; raises ValueError when it is not a path."""
    steps: list[str | int] = []
    pos, text = 0, path.strip()
    if not text:
        raise ValueError("empty template")
    while pos < len(text):
        if steps and text[pos] == ".":
            pos += 1
            match = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*").match(text, pos)
            if not match:
                raise ValueError(f"expected a name after '.' at offset {pos}")
            steps.append(match.group(0))
            pos = match.end()
            continue
        match = _STEP.match(text, pos)
        if not match or (
            not steps
            and match.group("name") is None
            and match.group("sq") is None
            and match.group("dq") is None
        ):
            raise ValueError(f"not a path at offset {pos}")
        if steps and match.group("name") is not None:
            raise ValueError(f"expected '.' or '[' at offset {pos}")
        if match.group("index") is not None:
            steps.append(int(match.group("index")))
        else:
            steps.append(
                next(g for g in (match.group("name"), match.group("sq"), match.group("dq")) if g is not None)
            )
        pos = match.end()
    return steps


def resolve_path(context: Any, path: str) -> Any:
    """The value at ``path`` in ``context``; raises KeyError (missing) or ValueError (not a path)."""
    value = context
    for step in _parse(path):
        if isinstance(step, int):
            if not isinstance(value, list) or not -len(value) <= step < len(value):
                raise KeyError(path)
            value = value[step]
        elif isinstance(value, dict) and step in value:
            value = value[step]
        else:
            raise KeyError(path)
    return value


def has_templates(value: Any) -> bool:
    """Whether any string in ``value`` contains ``{{`` (cheap pre-check for the hot path)."""
    if isinstance(value, str):
        return "{{" in value
    if isinstance(value, dict):
        return any(has_templates(v) for v in value.values())
    if isinstance(value, list):
        return any(has_templates(v) for v in value)
    return False


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _resolve_string(text: str, context: Any, where: str) -> Any:
    if "{{" not in text:
        return text
    tokens = list(_TOKEN.finditer(text))
    if len(tokens) == 1 and tokens[0].group(1) is not None and tokens[0].span() == (0, len(text)):
        return _lookup(tokens[0].group(1), context, where)
    out: list[str] = []
    last = 0
    for token in tokens:
        out.append(text[last : token.start()])
        if token.group(1) is None:
            out.append("{{")  # escaped
        else:
            out.append(_as_text(_lookup(token.group(1), context, where)))
        last = token.end()
    out.append(text[last:])
    return "".join(out)


def _lookup(path: str, context: Any, where: str) -> Any:
    try:
        return resolve_path(context if context is not None else {}, path)
    except KeyError:
        raise TemplateError(
            f"template {{{{{path.strip()}}}}} at {where} does not resolve from the request context",
            details={"path": path.strip(), "at": where},
        ) from None
    except ValueError as exc:
        raise TemplateError(
            f"{{{{{path.strip()}}}}} at {where} is not a template path: {exc}",
            details={"path": path.strip(), "at": where},
        ) from None


def _pointer(parts: list[str | int]) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def resolve_templates(value: Any, context: Any, _at: list[str | int] | None = None) -> Any:
    """``value`` with every template resolved from ``context`` (rules in the module docstring).
    Raises :class:`TemplateError` (``template_unresolved``)."""
    at = _at or []
    if isinstance(value, str):
        return _resolve_string(value, context, _pointer(at))
    if isinstance(value, dict):
        return {k: resolve_templates(v, context, [*at, k]) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_templates(v, context, [*at, i]) for i, v in enumerate(value)]
    return value


class TemplateMiddleware:
    """Resolves the input's templates from ``request.context`` before validation."""

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        if call.may_have_templates and has_templates(call.input):
            call.input = resolve_templates(call.input, call.event.data.context)
        return await call_next(call)
