"""The `ai` domain worker's functions. Importing this package registers its built-ins."""

from workers.ai import anthropic, fal, firecrawl, openai, perplexity, superagent, v0

__all__ = ["anthropic", "fal", "firecrawl", "openai", "perplexity", "superagent", "v0"]
