"""The `http` domain worker's functions. Importing this package registers its built-ins and
:data:`WEBHOOK_EXECUTOR` as the registry's executor for ``http`` rows
(``shared.registry.executors``).

* ``system/http-request`` (:mod:`workers.http.request`): one SSRF-guarded HTTP request;
* :func:`workers.http.webhook.run_webhook`: the webhook call behind registered ``http`` functions;
* :mod:`workers.http.ssrf` / :mod:`workers.http.client`: the guard and the client both use
  (policy: ``docs/http.md``; settings ``FLEET_HTTP_*`` in :class:`~shared.settings.Settings`).
"""

from __future__ import annotations

from shared.functions import on_startup
from shared.registry.executors import register_executor
from workers.http import client, request, ssrf, webhook
from workers.http.ssrf import configure
from workers.http.webhook import WebhookExecutor, run_webhook, webhook_credential_keys

__all__ = [
    "WEBHOOK_EXECUTOR",
    "client",
    "configure",
    "request",
    "run_webhook",
    "ssrf",
    "webhook",
    "webhook_credential_keys",
]

#: The process-wide executor of ``http`` registry functions (policy read on first use).
WEBHOOK_EXECUTOR = WebhookExecutor()
register_executor("http", WEBHOOK_EXECUTOR)

# Validate FLEET_HTTP_* when the worker is built: a bad allow-list stops it at start.
on_startup(configure)
