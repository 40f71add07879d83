"""The `http` domain worker's functions. Importing this package declares its built-ins; each
worker built for the domain gets its own :class:`~workers.http.extension.HttpExtension`
(:func:`extensions`): the SSRF policy of its settings and the executor of the registry's
``http`` rows. Nothing is registered process-wide.

* ``system/http-request`` (:mod:`workers.http.request`): one SSRF-guarded HTTP request;
* :func:`workers.http.webhook.run_webhook`: the webhook call behind registered ``http`` functions;
* :mod:`workers.http.ssrf` / :mod:`workers.http.client`: the guard and the client both use
  (policy: ``docs/http.md``; settings ``FLEET_HTTP_*`` in :class:`~shared.settings.Settings`).
"""

from __future__ import annotations

from shared.runtime.extension import Extension
from shared.settings import Settings
from workers.http import client, request, ssrf, webhook
from workers.http.extension import HttpExtension
from workers.http.ssrf import HttpPolicy
from workers.http.webhook import WebhookExecutor, run_webhook, webhook_credential_keys

__all__ = [
    "HttpExtension",
    "HttpPolicy",
    "WebhookExecutor",
    "client",
    "extensions",
    "request",
    "run_webhook",
    "ssrf",
    "webhook",
    "webhook_credential_keys",
]


def extensions(settings: Settings) -> list[Extension]:
    """The extensions of one `http` worker (``shared.assemble.create_worker`` calls this).

    Raises:
        ConfigError: an unparsable ``FLEET_HTTP_ALLOW`` entry (named in the message).
    """
    return [HttpExtension(settings)]
