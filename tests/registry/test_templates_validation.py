"""Templates (property-based) and JSON Schema validation, without I/O."""

from __future__ import annotations

import string
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.functions import FunctionSpec
from shared.templates import TemplateError, has_templates, resolve_templates
from shared.validation import ValidatorCache

names = st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4),
    max_leaves=12,
)
plain_text = st.text(max_size=20).filter(lambda t: "{{" not in t and "\\" not in t and "}}" not in t)


@st.composite
def context_and_path(draw: st.DrawFn) -> tuple[dict[str, Any], str, Any]:
    """A context, a path into it (names and list indexes) and the value it leads to."""
    value = draw(json_values)
    path = []
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            index = draw(st.integers(0, 2))
            items = [draw(json_values) for _ in range(index)] + [value]
            value, path = items, [f"[{index}]", *path]
        else:
            key = draw(names)
            value, path = {key: value}, [f".{key}", *path]
    node = draw(names)
    return {node: value}, node + "".join(path), _walk({node: value}, node, path)


def _walk(context: dict[str, Any], node: str, steps: list[str]) -> Any:
    value = context[node]
    for step in steps:
        value = value[int(step[1:-1])] if step.startswith("[") else value[step[1:]]
    return value


@given(json_values)
def test_values_without_templates_are_unchanged(value: Any) -> None:
    if not has_templates(value):
        assert resolve_templates(value, {"x": 1}) == value


@given(context_and_path())
def test_a_whole_template_keeps_the_value_and_its_type(case: tuple[dict[str, Any], str, Any]) -> None:
    context, path, expected = case
    resolved = resolve_templates({"a": "{{" + path + "}}", "b": ["{{ " + path + " }}"]}, context)
    assert resolved["a"] == expected
    assert type(resolved["a"]) is type(expected)
    assert resolved["b"] == [expected]


@given(context_and_path(), plain_text, plain_text)
def test_templates_inside_text_are_stringified(
    case: tuple[dict[str, Any], str, Any], before: str, after: str
) -> None:
    context, path, expected = case
    text = expected if isinstance(expected, str) else orjson.dumps(expected).decode()
    resolved = resolve_templates(f"{before}{{{{{path}}}}}{after}-", context)
    assert resolved == f"{before}{text}{after}-"


@given(context_and_path(), plain_text)
def test_escaped_braces_are_literal(case: tuple[dict[str, Any], str, Any], text: str) -> None:
    context, path, _ = case
    assert resolve_templates("\\{{" + path + "}}" + text, context) == "{{" + path + "}}" + text


@settings(max_examples=300)
@given(st.text(max_size=30), json_values)
def test_arbitrary_text_never_does_more_than_resolve_or_fail(text: str, context: Any) -> None:
    failure: TemplateError | None = None
    try:
        resolve_templates({"x": text}, {"ctx": context})
    except TemplateError as exc:
        failure = exc
    if failure is not None:
        assert failure.code == "template_unresolved"
        assert set(failure.details) == {"path", "at"}


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("{{fetch.missing}}", "fetch.missing"),
        ("{{fetch.items[3].name}}", "fetch.items[3].name"),
        ("{{fetch.items.name}}", "fetch.items.name"),
        ("{{nope}}", "nope"),
        ("{{ __import__('os').system('true') }}", "__import__('os').system('true')"),
        ("{{fetch.n + 1}}", "fetch.n + 1"),
        ("{{}}", ""),
        ("x {{fetch.n}} {{other.thing}}", "other.thing"),
    ],
)
def test_unresolvable_templates_name_the_path(template: str, path: str) -> None:
    context = {"fetch": {"items": [{"name": "a"}], "n": 1}}
    with pytest.raises(TemplateError) as caught:
        resolve_templates({"deep": [{"field": template}]}, context)
    assert caught.value.code == "template_unresolved"
    assert caught.value.details == {"path": path, "at": "/deep/0/field"}


def test_template_edge_cases() -> None:
    context = {"fetch": {"items": [{"name": "a"}, {"name": "b"}], "n": 2, "obj": {"k": [1]}, "s p": True}}
    assert resolve_templates(
        {
            "first": "{{fetch.items[0].name}}",
            "last": "{{fetch.items[-1]}}",
            "n": "{{fetch.n}}",
            "obj": "{{ fetch.obj }}",
            "quoted": "{{fetch['s p']}}",
            "text": "n={{fetch.n}}, obj={{fetch.obj}}, t={{fetch['s p']}}",
            "none": None,
            "number": 5,
            "key {{fetch.n}}": "keys are not templates",
            "lone": "{ {fetch.n} } and }} and {{ unclosed",
        },
        context,
    ) == {
        "first": "a",
        "last": {"name": "b"},
        "n": 2,
        "obj": {"k": [1]},
        "quoted": True,
        "text": 'n=2, obj={"k":[1]}, t=true',
        "none": None,
        "number": 5,
        "key {{fetch.n}}": "keys are not templates",
        "lone": "{ {fetch.n} } and }} and {{ unclosed",
    }
    # Extra braces around a template are text.
    assert resolve_templates("{{{fetch.n}}}", context) == "{2}"
    assert resolve_templates("{{{{fetch.n}}}}", context) == "{{2}}"
    # A substituted value is not resolved again.
    assert resolve_templates("{{a.b}}", {"a": {"b": "{{a.b}}"}}) == "{{a.b}}"
    with pytest.raises(TemplateError):
        resolve_templates("{{fetch.n}}", None)


def spec(version: int, schema: dict[str, Any], output: dict[str, Any] | None = None) -> FunctionSpec:
    async def handler(data: Any, ctx: Any) -> Any:
        return data

    return FunctionSpec(
        slug="acme/x",
        name="X",
        description="",
        domain="ai",
        handler=handler,
        function_id="f-1",
        version=version,
        input_schema=schema,
        output_schema=output,
    )


def test_validators_are_compiled_once_per_function_version() -> None:
    cache = ValidatorCache()
    v1 = spec(1, {"type": "object", "required": ["a"]})
    assert cache.get(v1, "input") is cache.get(v1, "input")
    assert cache.get(v1, "output") is None
    assert cache.compiled == 1
    v2 = spec(2, {"type": "object", "required": ["b"]})
    validator = cache.get(v2, "input")
    assert validator is not None
    assert cache.compiled == 2
    assert not validator.is_valid({"a": 1})


def test_the_validator_knows_the_schema_of_a_built_in_without_a_model() -> None:
    from shared import validation
    from shared.registry.sync import PERMISSIVE_SCHEMA

    assert validation._ANY_OBJECT == PERMISSIVE_SCHEMA
