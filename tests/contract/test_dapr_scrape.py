"""What the rendered PodMonitors rely on (shared/tools/manifests/monitoring.py): with daprd's app
token configured, Prometheus scrapes /metrics on the app channel without it, while deliveries
and daprd's subscription handshake still need it."""

from __future__ import annotations

import aiohttp

from shared.tools.manifests.monitoring import METRICS_PATH
from shared.transports.dapr_http import EVENTS_ROUTE, DaprTransport
from tests.contract.conftest import Harness, Running
from tests.observability import get

TOKEN = "scrape-test-app-token"


def app_url(run: Running, path: str) -> str:
    assert isinstance(run.worker.transport, DaprTransport)
    return f"http://127.0.0.1:{run.worker.transport.port}{path}"


async def test_metrics_are_scraped_without_the_app_token(dapr_harness: Harness) -> None:
    async with dapr_harness.start(app_api_token=TOKEN) as run:
        await run.echo()
        status, content_type, text = await get(app_url(run, METRICS_PATH))
        assert status == 200
        assert content_type.startswith("text/plain; version=0.0.4")
        assert "fleet_executions_total" in text
        for path in ("/healthz", "/readyz"):
            assert (await get(app_url(run, path)))[0] == 200, path
        async with aiohttp.ClientSession() as session:
            async with session.post(app_url(run, EVENTS_ROUTE), json={}) as response:
                assert response.status == 401
            async with session.get(app_url(run, "/dapr/subscribe")) as response:
                assert response.status == 401
