"""The `dev-tools` domain worker's functions. Importing this package registers its built-ins;
its `extensions` give each worker its own provider clients."""

from __future__ import annotations

from shared.runtime.extension import Extension
from shared.settings import Settings
from workers.dev_tools import blob, clerk, github, linear, stripe, webflow
from workers.providers import ProvidersExtension

__all__ = ["blob", "clerk", "extensions", "github", "linear", "stripe", "webflow"]


def extensions(settings: Settings) -> list[Extension]:
    """This worker's provider clients (its own pool, closed when it stops)."""
    return [ProvidersExtension(settings)]
