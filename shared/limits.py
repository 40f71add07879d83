"""A function's limits across the fleet: how many of its executions may run at once, and how
many may start per period (docs/contract.md, "Limits"; enforced by ``shared/limiter``).

Declared with a built-in (``@builtin(..., max_concurrency=1, concurrency_key="{{input.channel}}",
rate_limit=RateLimit(limit=20, period_seconds=60))``) or stored with a registered function
(``max_concurrency``, ``concurrency_key``, ``rate_limit`` in its definition, validated at
registration). A provider's limit (:data:`PROVIDER_RATE_LIMITS`, ``FLEET_PROVIDER_RATE_LIMITS``)
is shared by every function of that provider (the plugin of the slug,
``shared.limiter.extension.provider_of``).

``concurrency_key`` is a template over the call's input, in the request templates' path syntax
(``shared/templates.py``) with one root, ``input``: ``"{{input.channel}}"``,
``"{{input.team}}/{{input.channel}}"``, ``"{{input.items[0].id}}"``. The limit then holds per
value of the rendered key (strings as they are, other values as compact JSON); a call whose
input lacks the field is counted under one shared key (its path renders as empty).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import ConfigError
from shared.settings import Settings

__all__ = [
    "PROVIDER_RATE_LIMITS",
    "RateLimit",
    "check_concurrency_key",
    "provider_rate_limits",
    "render_concurrency_key",
]

#: ``{{ path }}`` inside a key template (the request templates' token, without escapes).
_TEMPLATE = re.compile(r"\{\{(?!\{)(.*?)\}\}", re.DOTALL)


class RateLimit(BaseModel):
    """At most ``limit`` executions start per ``period_seconds``, evenly spaced: one every
    ``period_seconds / limit`` (GCRA), so no window of ``period_seconds`` ever holds more than
    ``limit`` starts. ``burst`` lets that many start back to back after a quiet spell; a window
    may then hold up to ``limit + burst - 1``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(ge=1, le=1_000_000)
    period_seconds: float = Field(gt=0, le=86_400 * 31)
    burst: int = Field(default=1, ge=1, le=1_000_000)

    @property
    def interval(self) -> float:
        """Seconds between two starts at the steady rate."""
        return self.period_seconds / self.limit

    def as_document(self) -> dict[str, Any]:
        """As stored in the registry (``burst`` only when set)."""
        return self.model_dump(mode="json", exclude_defaults=True)

    def describe(self) -> str:
        text = f"{self.limit} per {self.period_seconds:g}s"
        return f"{text} (burst {self.burst})" if self.burst > 1 else text


#: Default limits of the catalog's providers, only where the provider publishes one that holds
#: for every account (sources in docs/contract.md, "Limits"). Tiered or per-account limits
#: (OpenAI, Anthropic, ...) are not guessed: set them with ``FLEET_PROVIDER_RATE_LIMITS``.
PROVIDER_RATE_LIMITS: dict[str, RateLimit] = {
    # Resend: "2 requests per second" per team by default (resend.com/docs/api-reference/introduction).
    "resend": RateLimit(limit=2, period_seconds=1),
    # GitHub REST: 5,000 requests per hour for an authenticated user (docs.github.com, rate limits).
    "github": RateLimit(limit=5000, period_seconds=3600, burst=100),
    # Stripe: 100 read/write operations per second in live mode (docs.stripe.com/rate-limits).
    "stripe": RateLimit(limit=100, period_seconds=1, burst=25),
}


def provider_rate_limits(settings: Settings) -> dict[str, RateLimit]:
    """The documented defaults with ``FLEET_PROVIDER_RATE_LIMITS`` on top (a provider mapped to
    ``null`` has no limit). Raises :class:`ConfigError` for a limit that is not one."""
    limits = dict(PROVIDER_RATE_LIMITS)
    for provider, value in (settings.provider_rate_limits or {}).items():
        if value is None:
            limits.pop(provider, None)
            continue
        try:
            limits[provider] = RateLimit.model_validate(value)
        except ValueError as exc:
            raise ConfigError(
                f"FLEET_PROVIDER_RATE_LIMITS[{provider!r}] is not a rate limit: {exc}"
            ) from None
    return limits


def check_concurrency_key(template: str) -> str:
    """``template`` when it is a valid key template (module docstring); ``ValueError`` otherwise."""
    from shared.templates import resolve_path

    paths = _TEMPLATE.findall(template)
    if not paths:
        raise ValueError("a concurrency key needs at least one {{input.<field>}} template")
    for path in paths:
        text = path.strip()
        if not (text == "input" or text.startswith(("input.", "input["))):
            raise ValueError(
                f"{{{{{text}}}}}: a concurrency key reads the input only ({{{{input.<field>}}}})"
            )
        try:
            resolve_path({}, text)
        except KeyError:
            pass  # a valid path (nothing to resolve it from here)
        except ValueError as exc:
            raise ValueError(f"{{{{{text}}}}} is not a template path: {exc}") from None
    return template


def render_concurrency_key(template: str, data: Any) -> str:
    """The key of one call: ``template`` with its paths resolved from ``{"input": data}``."""
    import orjson

    from shared.templates import resolve_path

    context = {"input": data}

    def value(match: re.Match[str]) -> str:
        try:
            found = resolve_path(context, match.group(1))
        except (KeyError, ValueError):
            return ""
        return found if isinstance(found, str) else orjson.dumps(found).decode()

    return _TEMPLATE.sub(value, template)
