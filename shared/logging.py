"""structlog configuration: one call, at process start, from :class:`Settings`.

JSON lines for machines (``FLEET_LOG_FORMAT=json``, the default when stderr is not a TTY),
coloured key-value lines for people. Per-message context (execution id, function) is passed as
keyword arguments at the call site rather than bound into a fresh logger per message; a line
logged inside a span (a traced worker's delivery) carries its ``trace_id`` and ``span_id``.

Secrets are masked in the finished line, not in the event: an exception's message reaches the
output only inside its formatted traceback (and a value inside a ``repr``), which a scrub of
the event's values never sees. Library records (stdlib ``logging``, e.g. asyncio's "Task
exception was never retrieved" with its traceback) are masked the same way.

Whose secrets: logging is configured once per process, but secrets belong to workers. A line is
masked with the secrets of the worker whose task emits it (``shared.credentials.worker_secrets``,
set by ``Worker.run`` and inherited by the tasks it starts) and with the registry passed to
:func:`configure_logging`, if any; a line logged outside any worker's tasks knows no worker's.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from shared.credentials import SecretRegistry, worker_secrets
from shared.runtime.spans import add_trace_ids
from shared.settings import Settings

__all__ = ["configure_logging"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _scrub(line: str, also: SecretRegistry | None) -> str:
    secrets = worker_secrets()
    if secrets:
        line = secrets.scrub(line)
    if also and also is not secrets:
        line = also.scrub(line)
    return line


class _Scrubbed:
    """The renderer, with the known secrets (module docstring) masked in the line it returns."""

    def __init__(self, renderer: Any, also: SecretRegistry | None) -> None:
        self._renderer = renderer
        self._also = also

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> str:
        line: str = self._renderer(logger, method_name, event_dict)
        return _scrub(line, self._also)


class _ScrubbingFormatter(logging.Formatter):
    """A stdlib formatter whose output (message and traceback) has the known secrets masked."""

    def __init__(self, fmt: str, also: SecretRegistry | None) -> None:
        super().__init__(fmt)
        self._also = also

    def format(self, record: logging.LogRecord) -> str:
        return _scrub(super().format(record), self._also)


def configure_logging(
    settings: Settings,
    *,
    extra_processors: list[Any] | None = None,
    secrets: SecretRegistry | None = None,
) -> None:
    """Configure structlog (and stdlib logging, for libraries) to write to stderr; every line
    is masked with its worker's secrets and with ``secrets`` (for the whole process)."""
    level = _LEVELS[settings.log_level]
    use_json = settings.log_format == "json" or (settings.log_format == "auto" and not sys.stderr.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        # trace_id / span_id of the current span (a traced worker's delivery), when there is one.
        add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        *(extra_processors or []),
    ]
    if use_json:
        processors += [
            structlog.processors.format_exc_info,
            _Scrubbed(structlog.processors.JSONRenderer(), secrets),
        ]
    else:
        processors.append(_Scrubbed(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()), secrets))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ScrubbingFormatter("%(name)s: %(message)s", secrets))
    logging.basicConfig(level=max(level, logging.WARNING), handlers=[handler])
