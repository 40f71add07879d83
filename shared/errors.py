"""The one exception tree of Function Fleet.

::

    FleetError                          root: everything the fleet raises on purpose
    ├── ConfigError (ValueError)        settings or CLI input that cannot work
    ├── InfrastructureError             broker / sidecar / database unreachable; never acked,
    │   └── TransportError              retried with backoff by the consume loop
    ├── EventError                      a delivery that is not a usable execution request
    │   ├── UndecodableEvent            not JSON / not a CloudEvent: dropped (dead-lettered)
    │   └── InvalidEvent                a CloudEvent with an id but bad fields: failed result
    └── ExecutionFailed                 a request that ends in a failed result with `code`
        ├── UnknownFunction             code unknown_function
        ├── WrongDomain                 code wrong_domain
        ├── InvalidInput                code invalid_input (carries every violation)
        ├── PayloadTooLarge             code payload_too_large
        └── ExecutionTimeout            code timeout

    ControlSignal                       not failures, never logged as errors
    ├── Retry                           leave the delivery un-acked: it is redelivered later
    │   └── Defer                       the same, not counted as a delivery (a duplicate waiting)
    └── Drop                            give up now: dead-lettered, answered with `dropped`

    Outside the runtime's path, each with the message of its failure:
    FleetError ── RecordFormatError, ReplayError (ValueError; shared/tools/replay), BenchError
                  (shared/tools/bench), KubeError (workers/oci/kube.py), InvalidUrl (ValueError;
                  workers/http/ssrf.py)

Handlers raise :class:`ExecutionFailed` (or a subclass) to fail with a stable code; any other
exception from a handler becomes ``handler_error``. Errors carry the function slug and the
execution id once the runtime knows them, so a log line or a result names both.
"""

from __future__ import annotations

from typing import Any

from shared.contract import ErrorCode

__all__ = [
    "ConfigError",
    "ControlSignal",
    "Defer",
    "Drop",
    "EventError",
    "ExecutionFailed",
    "ExecutionTimeout",
    "FleetError",
    "InfrastructureError",
    "InvalidEvent",
    "InvalidInput",
    "PayloadTooLarge",
    "Retry",
    "TransportError",
    "UndecodableEvent",
    "UnknownFunction",
    "WrongDomain",
]


class FleetError(Exception):
    """Root of every error the fleet raises on purpose.

    ``slug`` and ``execution_id`` are filled in by whoever knows them (often the runtime, after
    the fact) so that a log line or a result can name the function and the request.
    """

    # Class-level defaults for subclasses that are dataclasses with an ``__init__`` of their own.
    message: str = ""
    slug: str | None = None
    execution_id: str | None = None

    def __init__(self, message: str, *, slug: str | None = None, execution_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.slug = slug
        self.execution_id = execution_id

    def with_context(self, *, slug: str | None = None, execution_id: str | None = None) -> FleetError:
        """Fill in the context fields that are still unset; returns ``self``."""
        self.slug = self.slug or slug
        self.execution_id = self.execution_id or execution_id
        return self


class ConfigError(FleetError, ValueError):
    """Settings, flags or a declaration that cannot work."""


class InfrastructureError(FleetError):
    """A dependency (broker, sidecar, database) failed. Never turned into a result."""


class TransportError(InfrastructureError):
    """The broker or sidecar could not receive, publish or acknowledge."""


class EventError(FleetError):
    """A delivery that is not a usable execution request."""


class UndecodableEvent(EventError):
    """Not JSON, not a CloudEvent, or no id to answer to: the delivery is dropped.

    ``raw`` keeps the first bytes for the dead-letter entry and the log line.
    """

    def __init__(self, message: str, *, raw: bytes = b"") -> None:
        super().__init__(message)
        self.raw = raw[:256]


class ExecutionFailed(FleetError):
    """A request that ends in a failed result.

    Parameters:
        message: human-readable, safe to show to the caller (never a secret).
        code: a stable :class:`ErrorCode` (or a string from a later table).
        retryable: whether the caller may usefully send the same request again.
        details: JSON-serialisable extra facts (violations, provider status, ...).
    """

    code: str = ErrorCode.HANDLER_ERROR

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool = False,
        details: Any = None,
        slug: str | None = None,
        execution_id: str | None = None,
    ) -> None:
        super().__init__(message, slug=slug, execution_id=execution_id)
        if code is not None:
            self.code = code
        self.retryable = retryable
        self.details = details

    def to_error(self) -> dict[str, Any]:
        """The ``error`` object of a failed result."""
        error: dict[str, Any] = {
            "code": str(self.code),
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.details is not None:
            error["details"] = self.details
        return error


class InvalidEvent(ExecutionFailed, EventError):
    """A CloudEvent with an id whose other fields are unusable: answered with ``invalid_event``."""

    code = ErrorCode.INVALID_EVENT


class UnknownFunction(ExecutionFailed):
    code = ErrorCode.UNKNOWN_FUNCTION


class WrongDomain(ExecutionFailed):
    code = ErrorCode.WRONG_DOMAIN


class InvalidInput(ExecutionFailed):
    """Input that does not match the function's schema; ``details`` lists every violation."""

    code = ErrorCode.INVALID_INPUT


class PayloadTooLarge(ExecutionFailed):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class ExecutionTimeout(ExecutionFailed):
    code = ErrorCode.TIMEOUT

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("retryable", True)
        super().__init__(message, **kwargs)


class ControlSignal(Exception):
    """Flow control raised through the runtime; not a failure and never logged as one."""


class Retry(ControlSignal):
    """Leave the delivery un-acknowledged so the broker redelivers it (at most
    ``FLEET_MAX_DELIVERIES`` times in all; then it is dead-lettered with ``reason``)."""

    def __init__(self, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.reason = reason


class Defer(Retry):
    """Not now, and not the delivery's fault: a duplicate of an execution that is running
    elsewhere, or a function over its concurrency or rate limit. Redelivered later like
    :class:`Retry`, but the deferral does not count toward ``FLEET_MAX_DELIVERIES`` (a request
    is never dead-lettered for waiting). ``delay``: redeliver no sooner than this many seconds
    from now, where the transport can (Redis Streams; Dapr redelivers as it always does).
    ``cause``: what it waits for, in a word (the ``reason`` label of ``fleet_deferrals_total``:
    ``concurrency_limit``, ``rate_limit``, ``limits_unavailable``, ``duplicate_running``, ...)."""

    def __init__(self, reason: str = "deferred", *, delay: float | None = None, cause: str = "other") -> None:
        super().__init__(reason)
        self.delay = delay
        self.cause = cause


class Drop(ControlSignal):
    """Give up on the delivery now, without further redeliveries: it is dead-lettered with
    ``reason``, and the orchestrator still gets a failed result with code ``dropped`` (nobody is
    left waiting). For a request the function can tell will never succeed however often it is
    delivered, where :class:`ExecutionFailed` would answer without a dead letter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
