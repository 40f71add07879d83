"""The `http` domain worker's functions. Importing this package registers its built-ins.

* ``system/http-request`` (:mod:`workers.http.request`): one SSRF-guarded HTTP request;
* :func:`workers.http.webhook.run_webhook`: the executor of registered ``http`` functions;
* :mod:`workers.http.ssrf` / :mod:`workers.http.client`: the guard and the client both use
  (policy: ``docs/http.md``; settings ``FLEET_HTTP_*``, see :class:`~workers.http.ssrf.HttpSettings`).
"""

from workers.http import client, request, ssrf, webhook
from workers.http.ssrf import configure
from workers.http.webhook import run_webhook, webhook_credential_keys

__all__ = ["client", "configure", "request", "run_webhook", "ssrf", "webhook", "webhook_credential_keys"]
