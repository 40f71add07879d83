"""The `ai` domain worker's functions. Importing this package registers its built-ins;
its `extensions` give each worker its own provider clients."""

from __future__ import annotations

from shared.runtime.extension import Extension
from shared.settings import Settings
from workers.ai import anthropic, fal, firecrawl, openai, perplexity, superagent, v0
from workers.providers import ProvidersExtension

__all__ = ["anthropic", "extensions", "fal", "firecrawl", "openai", "perplexity", "superagent", "v0"]


def extensions(settings: Settings) -> list[Extension]:
    """This worker's provider clients (its own pool, closed when it stops)."""
    return [ProvidersExtension(settings)]
