"""structlog configuration: one call, at process start, from :class:`Settings`.

JSON lines for machines (``FLEET_LOG_FORMAT=json``, the default when stderr is not a TTY),
coloured key-value lines for people. Per-message context (execution id, function) is passed as
keyword arguments at the call site rather than bound into a fresh logger per message.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from shared.credentials import scrub_log_event
from shared.settings import Settings

__all__ = ["configure_logging"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(settings: Settings, *, extra_processors: list[Any] | None = None) -> None:
    """Configure structlog (and stdlib logging, for libraries) to write to stderr."""
    level = _LEVELS[settings.log_level]
    use_json = settings.log_format == "json" or (settings.log_format == "auto" and not sys.stderr.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        *(extra_processors or []),
        scrub_log_event,
    ]
    if use_json:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr, format="%(name)s: %(message)s")
