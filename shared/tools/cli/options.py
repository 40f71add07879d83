"""Reusable click options. Each one names its ``FLEET_*`` env fallback, shown in ``--help``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["home_option", "redis_url_option"]


def redis_url_option(f: F) -> F:
    return click.option(
        "--redis-url",
        envvar="FLEET_REDIS_URL",
        show_envvar=True,
        default=None,
        help="Broker URL. Default: the one a running `fleet up` uses.",
    )(f)


def home_option(f: F) -> F:
    return click.option(
        "--home",
        envvar="FLEET_HOME",
        show_envvar=True,
        default=None,
        type=click.Path(file_okay=False),
        help="State directory (default ~/.fleet).",
    )(f)
