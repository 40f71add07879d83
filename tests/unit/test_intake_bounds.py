"""The consume loop's bounds with a transport that never accepts a settlement: at most
``concurrency`` executions at once and ``2 * concurrency`` deliveries unsettled, then intake
stops (nothing more is read) while settling is retried."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from shared.errors import TransportError
from shared.functions import BUILTINS
from shared.runtime.envelope import encode_request
from shared.runtime.worker import Worker
from shared.settings import Settings
from shared.transports.base import Delivery, Settlement


class AckRefusingTransport:
    """Hands out as many echo requests as asked for; every settle fails."""

    name = "fake"

    def __init__(self) -> None:
        self.received = 0
        self.settle_attempts = 0

    async def open(self) -> None:
        pass

    async def receive(self, max_count: int) -> Sequence[Delivery]:
        batch = []
        for _ in range(max_count):
            self.received += 1
            _, body = encode_request(function="system/echo", input={"n": self.received})
            batch.append(Delivery(message_id=f"0-{self.received}", body=body))
        await asyncio.sleep(0.001)
        return batch

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        self.settle_attempts += 1
        raise TransportError("broker refuses acks")

    async def stop_intake(self) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_intake_stops_at_twice_the_concurrency_when_nothing_settles() -> None:
    import shared.diagnostics  # noqa: F401  (system/echo)

    transport = AckRefusingTransport()
    settings = Settings(concurrency=3, batch_size=100, shutdown_timeout=0.5, log_level="error")
    worker = Worker(domain="ai", transport=transport, settings=settings, resolver=BUILTINS, middleware=[])
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            if transport.settle_attempts >= 3:
                break
            await asyncio.sleep(0.02)
        peak: Any = (worker.held, worker.executing, transport.received)
        await asyncio.sleep(0.2)  # nothing more is read while settling keeps failing
        assert transport.settle_attempts >= 3
        assert peak == (6, 0, 6)
        assert transport.received == 6
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
