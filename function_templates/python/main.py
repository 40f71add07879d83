"""word-count: an OCI function for Function Fleet (the Python template).

Protocol (docs/oci.md): the input is the JSON object in the INPUT environment variable; the
result is one JSON object printed as the LAST line of stdout. Logs go to stderr. To fail, print
{"error": {"message": ..., "retryable": false}} as the last line and exit non-zero.
No dependencies: the input is checked against INPUT_SCHEMA by the small validator below
(the same schema as input_schema in function.yaml).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from typing import Any

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "maxLength": 100000},
        "top": {"type": "integer", "minimum": 1, "maximum": 100},
    },
    "required": ["text"],
    "additionalProperties": False,
}
_TYPES = {"object": dict, "string": str, "integer": int, "array": list, "boolean": bool}


def check(value: Any, schema: dict[str, Any], path: str = "input") -> list[str]:
    """Violations of ``value`` against the subset of JSON Schema this template uses."""
    expected = schema.get("type")
    if expected and (
        not isinstance(value, _TYPES[expected]) or (expected == "integer" and isinstance(value, bool))
    ):
        return [f"{path}: must be of type {expected}"]
    errors: list[str] = []
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}.{key}: is required")
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                errors += check(item, properties[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}.{key}: is not allowed")
    if isinstance(value, str) and len(value) > schema.get("maxLength", len(value)):
        errors.append(f"{path}: longer than {schema['maxLength']} characters")
    if isinstance(value, int) and not schema.get("minimum", value) <= value <= schema.get("maximum", value):
        errors.append(f"{path}: must be between {schema.get('minimum')} and {schema.get('maximum')}")
    return errors


def word_count(text: str, top: int) -> dict[str, Any]:
    words = re.findall(r"[^\W]+(?:'[^\W]+)*", text.lower())
    counts = Counter(words)
    ranked = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))[:top]
    lines = 0 if not text else text.count("\n") + (0 if text.endswith("\n") else 1)
    return {
        "words": len(words),
        "lines": lines,
        "characters": len(text),
        "top": [{"word": word, "count": count} for word, count in ranked],
    }


def fail(message: str, code: int = 2) -> None:
    print(json.dumps({"error": {"message": message, "retryable": False}}), flush=True)
    sys.exit(code)


def main() -> None:
    try:
        data = json.loads(os.environ.get("INPUT") or "{}")
    except json.JSONDecodeError as exc:
        fail(f"INPUT is not JSON: {exc}")
    errors = check(data, INPUT_SCHEMA)
    if errors:
        fail("invalid input: " + "; ".join(errors))
    print(f"counting {len(data['text'])} characters", file=sys.stderr, flush=True)
    print(json.dumps(word_count(data["text"], data.get("top", 3))), flush=True)


if __name__ == "__main__":
    main()
