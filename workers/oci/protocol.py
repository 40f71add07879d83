"""The OCI function protocol, shared by every backend (docs/oci.md is its prose).

A function is a program (a container image's entrypoint, or ``command`` for the local backend):

* its input is the environment variable ``INPUT``: one JSON object;
* its result is **one JSON object on the last line of stdout**; anything else it prints (stderr,
  earlier stdout lines) is log;
* exit status 0 = success (the last line must then be an object, else ``invalid_output``);
  non-zero = ``function_failed`` with the exit code and the tail of the log (secrets scrubbed).
  A failing function may print ``{"error": {"message": ..., "retryable": ...}}`` as its last line
  to say why; the message and ``retryable`` then come from it.

This module turns a registry row into an :class:`OciFunction`, builds the environment, and maps
what a run produced (:class:`RunOutcome`) onto an output or an :class:`ExecutionFailed`. What a
run's text is scrubbed with is passed in (``secrets``, from :func:`run_secrets`): the values the
call's worker has handed out (its registry in ``ctx.resources``) and the call's own credentials.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.contract import ErrorCode
from shared.credentials import SecretRegistry, call_secrets
from shared.errors import ExecutionFailed, ExecutionTimeout, PayloadTooLarge
from shared.functions import ExecutionContext
from shared.settings import Settings

__all__ = [
    "MAX_INPUT_BYTES",
    "RESERVED_ENV",
    "OciFunction",
    "Resources",
    "RunOutcome",
    "backend_unavailable",
    "credential_env",
    "encode_input",
    "function_env",
    "interpret",
    "parse_output",
    "run_secrets",
]

#: Linux refuses (E2BIG) a single environment string longer than 128 KiB (MAX_ARG_STRLEN), so
#: ``INPUT=<json>`` must stay below it; larger inputs fail ``payload_too_large`` up front.
MAX_INPUT_BYTES = 128 * 1024 - len("INPUT=") - 1
#: Variables the runtime sets; a function's ``container_env`` cannot override them.
RESERVED_ENV = ("INPUT", "FLEET_EXECUTION_ID", "FLEET_FUNCTION", "FLEET_ATTEMPT")
#: Longest last-line excerpt put in an ``invalid_output`` error.
MAX_EXCERPT = 500
_ENV_NAME = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True, slots=True)
class Resources:
    """Container requests/limits (Kubernetes quantities)."""

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str

    @classmethod
    def from_settings(cls, settings: Settings, override: Mapping[str, Any] | None = None) -> Resources:
        """The defaults of ``settings``, with a registry value on top: ``override`` is
        ``{"requests": {"cpu", "memory"}, "limits": {"cpu", "memory"}}`` (any part optional)."""
        requests = dict((override or {}).get("requests") or {})
        limits = dict((override or {}).get("limits") or {})
        return cls(
            cpu_request=str(requests.get("cpu", settings.oci_cpu_request)),
            memory_request=str(requests.get("memory", settings.oci_memory_request)),
            cpu_limit=str(limits.get("cpu", settings.oci_cpu_limit)),
            memory_limit=str(limits.get("memory", settings.oci_memory_limit)),
        )

    def to_kubernetes(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class OciFunction:
    """What a backend needs to know of an ``oci`` function (a ``functions`` row's oci fields)."""

    slug: str
    image_ref: str
    command: tuple[str, ...] = ()
    working_dir: str | None = None
    container_env: Mapping[str, str] = field(default_factory=dict)
    timeout_seconds: float
    max_concurrency: int | None = None
    credentials: tuple[str, ...] = ()
    resources: Resources

    @classmethod
    def from_record(cls, record: Any, settings: Settings) -> OciFunction:
        """From a registry :class:`~shared.registry.models.FunctionRecord` (or anything with its
        attributes). ``timeout_seconds`` falls back to ``FLEET_DEFAULT_TIMEOUT_SECONDS``;
        resources come from a ``resources`` attribute or ``extra["resources"]`` when the registry
        has one, else from the ``FLEET_OCI_*`` defaults."""
        resources = getattr(record, "resources", None) or (getattr(record, "extra", None) or {}).get(
            "resources"
        )
        return cls(
            slug=record.slug,
            image_ref=record.image_ref or "",
            command=tuple(record.command or ()),
            working_dir=record.working_dir or None,
            container_env=dict(record.container_env or {}),
            timeout_seconds=float(record.timeout_seconds or settings.default_timeout_seconds),
            max_concurrency=record.max_concurrency,
            credentials=tuple(record.credentials or ()),
            resources=Resources.from_settings(settings, resources if isinstance(resources, dict) else None),
        )

    @property
    def deadline_seconds(self) -> int:
        """The timeout as whole seconds (Kubernetes ``activeDeadlineSeconds``), at least 1."""
        return max(1, math.ceil(self.timeout_seconds))


def backend_unavailable(message: str, *, retryable: bool, **details: Any) -> ExecutionFailed:
    """An ``backend_unavailable`` failure (``retryable`` for outages, not for refusals)."""
    return ExecutionFailed(
        message, code=ErrorCode.BACKEND_UNAVAILABLE, retryable=retryable, details=details or None
    )


def encode_input(data: Any) -> str:
    """``data`` as the ``INPUT`` JSON text; ``payload_too_large`` beyond :data:`MAX_INPUT_BYTES`."""
    if hasattr(data, "model_dump"):
        data = data.model_dump(mode="json")
    text = orjson.dumps(data).decode()
    if len(text.encode()) > MAX_INPUT_BYTES:
        raise PayloadTooLarge(
            f"the input is {len(text.encode())} bytes as JSON; an OCI function's INPUT holds at most "
            f"{MAX_INPUT_BYTES} (the kernel's limit on one environment variable)",
            details={"limit_bytes": MAX_INPUT_BYTES},
        )
    return text


def credential_env(keys: Sequence[str]) -> dict[str, str]:
    """Credential key → environment variable name (upper case; characters other than letters,
    digits and ``_`` become ``_``: ``github:token`` → ``GITHUB_TOKEN``). Two keys that map to the
    same name, or onto a reserved name, fail ``backend_unavailable`` (not retryable)."""
    names: dict[str, str] = {}
    for key in keys:
        name = _ENV_NAME.sub("_", key).upper()
        if name[:1].isdigit():
            name = f"_{name}"
        clash = [k for k, n in names.items() if n == name]
        if clash or name in RESERVED_ENV:
            raise backend_unavailable(
                f"credential key {key!r} maps to environment variable {name} which "
                f"{'is reserved' if not clash else f'{clash[0]!r} also maps to'}",
                retryable=False,
                credential=key,
            )
        names[key] = name
    return names


def function_env(fn: OciFunction, input_json: str, ctx: ExecutionContext) -> dict[str, str]:
    """The plain (non-secret) environment of a run: ``container_env``, then the reserved
    variables (``INPUT``, ``FLEET_EXECUTION_ID``, ``FLEET_FUNCTION``, ``FLEET_ATTEMPT``) on top."""
    env = {k: str(v) for k, v in fn.container_env.items() if k not in RESERVED_ENV}
    env.update(
        {
            "INPUT": input_json,
            "FLEET_EXECUTION_ID": ctx.execution_id,
            "FLEET_FUNCTION": fn.slug,
            "FLEET_ATTEMPT": str(ctx.attempt),
        }
    )
    return env


def run_secrets(ctx: ExecutionContext) -> SecretRegistry:
    """What one run's log tail and messages are scrubbed with: every value the worker running
    the call has handed out (the :class:`SecretRegistry` in ``ctx.resources``) and the call's
    own credential values (``ctx.credentials``), whether that registry has them or not."""
    return call_secrets(ctx)


def _last_line(text: str) -> str | None:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return None


def _excerpt(text: str, secrets: SecretRegistry) -> str:
    text = secrets.scrub(text)
    return text if len(text) <= MAX_EXCERPT else text[:MAX_EXCERPT] + "…"


def parse_output(stdout: str, slug: str, *, secrets: SecretRegistry) -> dict[str, Any]:
    """The output of a successful run: the last non-blank line of ``stdout`` as a JSON object
    (the line quoted in an error is scrubbed with ``secrets``).

    Raises:
        ExecutionFailed: ``invalid_output`` when there is no line, it is not JSON, or not an object.
    """
    line = _last_line(stdout)
    if line is None:
        raise ExecutionFailed(
            f"{slug} printed nothing; its result must be one JSON object on the last line of stdout",
            code=ErrorCode.INVALID_OUTPUT,
            details={"last_line": None},
        )
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ExecutionFailed(
            f"{slug}'s last stdout line is not JSON",
            code=ErrorCode.INVALID_OUTPUT,
            details={"last_line": _excerpt(line, secrets)},
        ) from None
    if not isinstance(value, dict):
        raise ExecutionFailed(
            f"{slug}'s last stdout line is JSON but not an object ({type(value).__name__})",
            code=ErrorCode.INVALID_OUTPUT,
            details={"last_line": _excerpt(line, secrets)},
        )
    return value


def log_tail(text: str, lines: int, secrets: SecretRegistry) -> list[str]:
    """The last ``lines`` lines of ``text``, scrubbed with ``secrets``."""
    return [secrets.scrub(line) for line in text.splitlines()[-lines:]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOutcome:
    """What a backend observed of one finished run.

    ``exit_code`` is ``None`` when the process never exited on its own (``timed_out``);
    ``stdout`` is what the result line is read from (the pod log in Kubernetes, where stdout and
    stderr are one stream); ``log`` is what the failure tail is cut from.
    """

    exit_code: int | None
    stdout: str
    log: str
    timed_out: bool = False
    reason: str | None = None


def interpret(
    fn: OciFunction, outcome: RunOutcome, *, tail_lines: int, secrets: SecretRegistry
) -> dict[str, Any]:
    """Map a finished run onto the function's output, or raise its failure (every text taken
    from the run is scrubbed with ``secrets``, see :func:`run_secrets`):

    * timed out → ``timeout`` (retryable);
    * exit 0 → :func:`parse_output` (``invalid_output`` when the last line is not an object);
    * non-zero → ``function_failed`` with ``exit_code``, ``reason`` and ``log_tail`` (scrubbed);
      a last line ``{"error": {"message", "retryable"}}`` (or ``{"error": "text"}``) supplies the
      message and ``retryable``;
    * no exit status (the pod was evicted or deleted) → ``function_failed``, retryable.
    """
    if outcome.timed_out:
        raise ExecutionTimeout(
            f"{fn.slug} did not finish within {fn.timeout_seconds:g}s",
            details={
                "timeout_seconds": fn.timeout_seconds,
                "log_tail": log_tail(outcome.log, tail_lines, secrets),
            },
        )
    if outcome.exit_code == 0:
        return parse_output(outcome.stdout, fn.slug, secrets=secrets)
    if outcome.exit_code is None:
        # No exit status at all (pod evicted, preempted, deleted): the infrastructure's doing,
        # so the same request may well succeed again.
        message, retryable = f"{fn.slug} did not run to completion", True
    else:
        message, retryable = f"{fn.slug} exited with code {outcome.exit_code}", False
    if outcome.reason:
        message += f" ({outcome.reason})"
    line = _last_line(outcome.stdout)
    if line is not None and line.startswith("{"):
        try:
            reported = orjson.loads(line)
        except orjson.JSONDecodeError:
            reported = None
        error = reported.get("error") if isinstance(reported, dict) else None
        if isinstance(error, str):
            message = f"{fn.slug} failed: {error}"
        elif isinstance(error, dict) and isinstance(error.get("message"), str):
            message = f"{fn.slug} failed: {error['message']}"
            retryable = bool(error.get("retryable", False))
    details: dict[str, Any] = {
        "exit_code": outcome.exit_code,
        "log_tail": log_tail(outcome.log, tail_lines, secrets),
    }
    if outcome.reason:
        details["reason"] = outcome.reason
    raise ExecutionFailed(
        secrets.scrub(message), code=ErrorCode.FUNCTION_FAILED, retryable=retryable, details=details
    )
