"""Dapr mode: the app channel serves /readyz (the worker's report) and /metrics (the worker's
registry, parsed as Prometheus text) besides /healthz; no port of its own is opened."""

from __future__ import annotations

from shared.transports.dapr_http import DaprTransport
from tests.contract.conftest import DOMAIN, Harness, Running
from tests.observability import free_port, get, parse


def app_url(run: Running, path: str) -> str:
    assert isinstance(run.worker.transport, DaprTransport)
    return f"http://127.0.0.1:{run.worker.transport.port}{path}"


async def test_readyz_and_metrics_on_the_app_channel(dapr_harness: Harness) -> None:
    unused = free_port()
    async with dapr_harness.start(metrics_port=unused) as run:
        await run.echo()
        await run.wait_settled()
        status, _, report = await get(app_url(run, "/readyz"))
        assert status == 200
        assert report["ready"] is True
        assert (report["state"], report["domain"], report["transport"]) == ("running", DOMAIN, "dapr")
        status, content_type, text = await get(app_url(run, "/metrics"))
        assert status == 200
        assert content_type.startswith("text/plain; version=0.0.4")
        _, samples = parse(text)
        key = ("fleet_executions_total", (("function", "system/echo"), ("outcome", "completed")))
        assert samples[key] == 1
        info = [dict(labels) for name, labels in samples if name == "fleet_build_info"]
        assert [i["transport"] for i in info] == ["dapr"]
        probes = next(e for e in run.worker.extensions if e.name == "probes")
        assert getattr(probes, "url", None) is None  # FLEET_METRICS_PORT is not used in Dapr mode
        worker = run.worker
    assert worker.health()["ready"] is False
