"""Validation of rendered Kubernetes objects against the upstream JSON schemas
(``tests/schemas/kubernetes``, Kubernetes v1.34, see its SOURCES.md).

The schemas are "standalone" (``$ref``s inlined) but not strict: unknown fields pass. A misspelt
field is exactly the mistake worth catching, so :func:`validate` makes every object schema that
lists ``properties`` refuse others (``additionalProperties: false``), and resolves any ``$ref``
that might remain against the file itself.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas" / "kubernetes"


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@cache
def _validator(name: str) -> Draft7Validator:
    path = SCHEMAS / name
    schema = json.loads(path.read_text())
    strict = _strict(copy.deepcopy(schema))
    resource = Resource.from_contents(strict, default_specification=DRAFT7)
    registry: Registry = Registry().with_resource(path.as_uri(), resource)
    return Draft7Validator(strict, registry=registry)


def validate(obj: dict[str, Any], name: str) -> None:
    """Raise ``AssertionError`` listing every violation of ``obj`` against schema file ``name``."""
    errors = sorted(_validator(name).iter_errors(obj), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
