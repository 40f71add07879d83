"""The ``http`` worker's policy and webhook executor join a worker as one extension.

* built from the worker's settings: the SSRF policy (``FLEET_HTTP_ALLOW``,
  ``FLEET_HTTP_MAX_RESPONSE_BYTES``, ``FLEET_HTTP_MAX_REDIRECTS``) is parsed there, so a bad
  allow-list entry raises :class:`~shared.errors.ConfigError` when the worker is built;
* :meth:`HttpExtension.start` provides that :class:`~workers.http.ssrf.HttpPolicy` among the
  worker's resources (``system/http-request`` and the webhook executor read it from
  ``ctx.resources``) and adds the worker's :class:`~workers.http.webhook.WebhookExecutor` to its
  :class:`~shared.registry.executors.Executors` (providing that table when no other extension
  has), so the registry runs every ``http`` row with it.

Nothing is shared between workers: two ``http`` workers of one process, built from different
settings, each enforce their own allow-list. The client opens one session per request and closes
it with the request, so there is nothing to release at stop.
"""

from __future__ import annotations

import dataclasses

from shared.registry.executors import Executors
from shared.runtime.extension import BaseExtension, WorkerContext
from shared.runtime.metrics import Metrics
from shared.settings import Settings
from workers.http.ssrf import HttpPolicy
from workers.http.webhook import WebhookExecutor

__all__ = ["EXECUTION_TYPE", "HttpExtension"]

#: The ``execution_type`` of the registry rows this extension runs.
EXECUTION_TYPE = "http"


class HttpExtension(BaseExtension):
    """One worker's SSRF policy and webhook executor (see module docstring)."""

    name = "http-policy"

    def __init__(self, settings: Settings) -> None:
        self.policy = HttpPolicy.from_settings(settings)
        self.executor = WebhookExecutor()

    async def start(self, ctx: WorkerContext) -> bool:
        metrics = ctx.resources.find(Metrics)
        if metrics is not None:
            self.policy = dataclasses.replace(self.policy, on_refusal=metrics.count_ssrf_refusal)
        ctx.resources.provide(HttpPolicy, self.policy)
        Executors.of(ctx.resources).add(EXECUTION_TYPE, self.executor)
        return True
