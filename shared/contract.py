"""The public contract orchestrators code against (see docs/contract.md).

Event types, default topic names, stable error codes and the typed shapes of a request's
``data`` and of a result's ``data``. Nothing here does I/O; everything may import it.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DAPR_DEFAULT_EVENT_TYPE",
    "DEFAULT_RESULTS_TOPIC",
    "DEFAULT_TOPIC_PREFIX",
    "DLQ_SUFFIX",
    "EVENT_COMPLETED",
    "EVENT_FAILED",
    "EVENT_REQUESTED",
    "ORIGIN_ALIASES",
    "ErrorCode",
    "ExecutionError",
    "ExecutionResult",
    "RequestData",
    "apply_origin_aliases",
]

EVENT_REQUESTED = "fleet.execution.requested"
EVENT_COMPLETED = "fleet.execution.completed"
EVENT_FAILED = "fleet.execution.failed"
#: The type daprd gives an event published with a plain ``application/json`` body. Accepted as a
#: request when its ``data`` is a request object, so an orchestrator may publish through Dapr's
#: ordinary publish API without building the CloudEvent itself.
DAPR_DEFAULT_EVENT_TYPE = "com.dapr.event.sent"

DEFAULT_TOPIC_PREFIX = "functions."
DEFAULT_RESULTS_TOPIC = "functions.results"
DLQ_SUFFIX = ".dlq"


class ErrorCode(enum.StrEnum):
    """Stable error codes of failed results. Never renamed; new ones are only added."""

    INVALID_EVENT = "invalid_event"
    UNKNOWN_FUNCTION = "unknown_function"
    WRONG_DOMAIN = "wrong_domain"
    INVALID_INPUT = "invalid_input"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    TIMEOUT = "timeout"
    HANDLER_ERROR = "handler_error"
    FUNCTION_FAILED = "function_failed"
    MAX_DELIVERIES_EXCEEDED = "max_deliveries_exceeded"
    DROPPED = "dropped"
    CREDENTIALS_MISSING = "credentials_missing"
    FUNCTION_DISABLED = "function_disabled"
    INVALID_OUTPUT = "invalid_output"
    TEMPLATE_UNRESOLVED = "template_unresolved"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    PROVIDER_ERROR = "provider_error"
    DESTINATION_BLOCKED = "destination_blocked"
    RESPONSE_TOO_LARGE = "response_too_large"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    CONNECTION_FAILED = "connection_failed"
    HTTP_ERROR = "http_error"
    IMAGE_PULL_FAILED = "image_pull_failed"


#: The origin orchestrator's names for request fields (docs/contract.md, "The origin's request
#: shape"): accepted on every path as aliases of the contract's; results use the contract's.
ORIGIN_ALIASES: dict[str, str] = {
    "function_slug": "function",
    "workflow_id": "workflow_execution_id",
    "node_outputs": "context",
}


def apply_origin_aliases(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the origin's field names replaced by the contract's. Raises ``ValueError``
    naming both spellings when a field is given twice with different values."""
    out = dict(data)
    for alias, name in ORIGIN_ALIASES.items():
        if alias not in out:
            continue
        value = out.pop(alias)
        if name in out and out[name] != value:
            raise ValueError(f"{alias!r} and {name!r} are the same field and disagree")
        out[name] = value
    return out


class RequestData(BaseModel):
    """``data`` of a ``fleet.execution.requested`` event.

    ``function`` (the slug) or ``function_id`` (the registry id) names the function; with both,
    they must name the same one. The origin orchestrator's names are accepted too
    (:data:`ORIGIN_ALIASES`).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    function: str | None = Field(default=None, min_length=1, max_length=200, description="function slug")
    function_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="the function's registry id (UUID)"
    )
    input: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] | None = Field(
        default=None, description="earlier node outputs, for {{node.field}} templates"
    )
    workflow_execution_id: str | None = None
    node_id: str | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)


class ExecutionError(BaseModel):
    """``error`` of a failed result."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    retryable: bool = False
    details: Any = None


class ExecutionResult(BaseModel):
    """``data`` of a ``fleet.execution.completed`` / ``fleet.execution.failed`` event."""

    model_config = ConfigDict(extra="allow", frozen=True)

    execution_id: str
    function: str
    status: Literal["completed", "failed"]
    output: Any = None
    error: ExecutionError | None = None
    attempt: int = 1
    started_at: str | None = None
    completed_at: str | None = None
    duration_ms: float | None = None
    worker: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "completed"
