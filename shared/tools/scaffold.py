"""`fleet new`: a new OCI function from a template in ``function_templates/``.

A template is a working function (``word-count``) with a ``function.yaml`` in the registry's
format (the ``functions`` columns; ``fleet functions register`` reads it). Scaffolding copies it
to ``<dir>/<action>``, renames slug, name, image and package names, and writes
``function.local.yaml``: the same definition for the local backend (`fleet up`), whose
``working_dir`` is the new directory and whose ``command`` runs the source with the machine's
toolchain. It never overwrites: an existing target directory is refused.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ConfigError

__all__ = ["LANGUAGES", "TEMPLATES_DIR", "Scaffold", "scaffold"]

#: ``function_templates/`` of the source tree (not part of the wheel).
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "function_templates"

#: language → (template directory, command the local backend runs in the new directory).
LANGUAGES: dict[str, tuple[str, list[str]]] = {
    "python": ("python", ["python3", "main.py"]),
    "typescript": ("typescript", ["node", "dist/main.js"]),
    # `go run` would turn every non-zero exit into 1: build, then exec the binary.
    "go": ("go", ["sh", "-c", "go build -o .fleet/function . && exec .fleet/function"]),
}
_PART = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_IGNORE = shutil.ignore_patterns("node_modules", "__pycache__", ".gocache", ".fleet", "function.local.yaml")


@dataclass(frozen=True, slots=True)
class Scaffold:
    """What :func:`scaffold` made."""

    directory: Path
    slug: str
    name: str
    language: str


def _yaml_line(text: str, key: str, value: str) -> str:
    pattern = re.compile(rf"^{key}:.*$", re.M)
    if not pattern.search(text):
        raise ConfigError(f"template function.yaml has no {key!r} line")
    return pattern.sub(lambda _: f"{key}: {value}", text, count=1)


def _json_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def scaffold(language: str, name: str, directory: Path, *, templates: Path = TEMPLATES_DIR) -> Scaffold:
    """Create ``directory/<action>`` from the ``language`` template.

    ``name`` is ``<action>`` (slug ``custom/<action>``) or ``<plugin>/<action>``; both parts lower
    case ``[a-z0-9][a-z0-9_.-]*``.

    Raises:
        ConfigError: unknown language, bad name, missing template, or the target exists.
    """
    if language not in LANGUAGES:
        raise ConfigError(f"unknown language {language!r}; choose one of {', '.join(LANGUAGES)}")
    plugin, _, action = name.rpartition("/")
    plugin = plugin or "custom"
    if not (_PART.match(plugin) and _PART.match(action)):
        raise ConfigError(f"name {name!r} must be '<action>' or '<plugin>/<action>' in lower case")
    template_name, local_command = LANGUAGES[language]
    source = templates / template_name
    if not (source / "function.yaml").is_file():
        raise ConfigError(f"template {source} not found (function_templates/ ships with the source tree)")
    target = directory / action
    if target.exists():
        raise ConfigError(f"{target} already exists; not overwriting it")
    slug = f"{plugin}/{action}"
    title = action.replace("-", " ").replace("_", " ").title()
    shutil.copytree(source, target, ignore=_IGNORE)

    definition = target / "function.yaml"
    text = definition.read_text()
    text = _yaml_line(text, "slug", slug)
    text = _yaml_line(text, "name", title)
    text = _yaml_line(text, "image_ref", f"registry.example.com/{plugin}/{action}:0.1.0")
    definition.write_text(text)

    local = _yaml_line(text, "command", _json_list(local_command))
    local = _yaml_line(local, "working_dir", json.dumps(str(target.resolve())))
    if language == "go":
        # The first build compiles: a build cache in the directory, and time for it.
        env = {"GOCACHE": str(target.resolve() / ".gocache"), "GOFLAGS": "-mod=mod"}
        local = _yaml_line(local, "timeout_seconds", "120")
        local = local.replace("\ntimeout_seconds:", f"\ncontainer_env: {json.dumps(env)}\ntimeout_seconds:")
    header = (
        "# For the local backend (`fleet up`, FLEET_OCI_BACKEND=local): runs the source in this directory.\n"
        "# A cluster uses function.yaml (the image). Register one or the other, not both, per registry.\n"
    )
    (target / "function.local.yaml").write_text(header + re.sub(r"^#.*\n", "", local, flags=re.M))

    package = target / "package.json"
    if package.exists():
        package.write_text(re.sub(r'"name": "[^"]*"', f'"name": "{action}"', package.read_text(), count=1))
    module = target / "go.mod"
    if module.exists():
        module.write_text(
            re.sub(r"^module .*$", f"module example.com/{action}", module.read_text(), flags=re.M)
        )
    return Scaffold(directory=target, slug=slug, name=title, language=language)
