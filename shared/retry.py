"""A function's retry policy: which failures the fleet runs again, how often, and how long it
waits in between (docs/contract.md, "Retry policy").

A policy is declared with a built-in (``@builtin(..., retry_policy=RetryPolicy(max_attempts=3))``)
or stored with a registered function (``retry_policy`` in its definition, validated at
registration). Fields left out take the defaults of the settings (``FLEET_RETRY_*``); with no
policy at all a failure is answered at once, as it always was (``FLEET_RETRY_MAX_ATTEMPTS`` = 1).

The runtime applies it to a failure (:class:`~shared.errors.ExecutionFailed`): when
:meth:`RetryPolicy.retries` says so, the delivery is not answered but redelivered after
:meth:`RetryPolicy.delay` (no sooner than a provider's ``Retry-After``); the last attempt's failure
is published and dead-lettered. ``Retry`` signals from handlers are unchanged (redelivered by the
broker, counted toward ``FLEET_MAX_DELIVERIES``).
"""

from __future__ import annotations

import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.settings import Settings

__all__ = ["RetryPolicy", "effective_policy"]


class RetryPolicy(BaseModel):
    """How a function's failures are retried (every field optional; see :func:`effective_policy`).

    ``max_attempts`` counts every run, the first included (1 = never retried), and is capped by
    ``FLEET_MAX_DELIVERIES``. The wait before attempt *n* + 1 is ``initial_backoff_seconds *
    multiplier^(n-1)``, at most ``max_backoff_seconds``, shortened at random by up to ``jitter``
    (0 to 1) of itself, and never shorter than the ``retry_after`` seconds a failure carries.
    ``retry_on`` lists the error codes retried; unset, every failure marked ``retryable``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int | None = Field(default=None, ge=1, le=100)
    initial_backoff_seconds: float | None = Field(default=None, gt=0, le=86_400)
    max_backoff_seconds: float | None = Field(default=None, gt=0, le=86_400)
    multiplier: float | None = Field(default=None, ge=1, le=10)
    jitter: float | None = Field(default=None, ge=0, le=1)
    retry_on: tuple[str, ...] | None = Field(default=None, description="error codes retried")

    @model_validator(mode="after")
    def _backoff_order(self) -> RetryPolicy:
        low, high = self.initial_backoff_seconds, self.max_backoff_seconds
        if low is not None and high is not None and high < low:
            raise ValueError("max_backoff_seconds must be at least initial_backoff_seconds")
        return self

    def retries(self, code: str, retryable: bool, attempt: int) -> bool:
        """Whether a failure with ``code`` (marked ``retryable`` or not) on ``attempt`` (1 = the
        first run) is run again. Call on an :func:`effective_policy` (no field unset)."""
        if attempt >= (self.max_attempts or 1):
            return False
        return code in self.retry_on if self.retry_on is not None else retryable

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``attempt`` failed, before the next one."""
        initial = self.initial_backoff_seconds or 1.0
        base = min(self.max_backoff_seconds or initial, initial * (self.multiplier or 1.0) ** (attempt - 1))
        wait = base * (1 - random.uniform(0, self.jitter or 0.0))
        return max(wait, retry_after or 0.0)

    def as_document(self) -> dict[str, Any]:
        """The fields that are set, as stored in the registry."""
        return self.model_dump(mode="json", exclude_none=True)


def effective_policy(policy: RetryPolicy | dict[str, Any] | None, settings: Settings) -> RetryPolicy:
    """``policy`` with every unset field taken from the settings, ``max_attempts`` capped by
    ``FLEET_MAX_DELIVERIES``."""
    given = policy if isinstance(policy, RetryPolicy) else RetryPolicy.model_validate(policy or {})
    defaults = {
        "max_attempts": settings.retry_max_attempts,
        "initial_backoff_seconds": settings.retry_initial_backoff,
        "max_backoff_seconds": settings.retry_max_backoff,
        "multiplier": settings.retry_multiplier,
        "jitter": settings.retry_jitter,
    }
    values = {k: v for k, v in given.model_dump().items() if v is not None}
    merged = {**defaults, **values}
    merged["max_attempts"] = min(merged["max_attempts"], settings.max_deliveries)
    if merged["max_backoff_seconds"] < merged["initial_backoff_seconds"]:
        merged["max_backoff_seconds"] = merged["initial_backoff_seconds"]
    return RetryPolicy(**merged)
