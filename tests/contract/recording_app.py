"""A minimal Dapr subscriber app (an orchestrator reading results, say) that records what the
fake daprd delivers and answers from a script of statuses."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class RecordingApp:
    """Subscribes ``topic`` on ``pubsub`` with route ``/receive``; answers ``answers`` in order
    (then ``default``); an answer is a JSON ``status`` string or an int HTTP status."""

    pubsub: str
    topic: str
    dead_letter_topic: str | None = None
    answers: list[str | int] = field(default_factory=list)
    default: str | int = "SUCCESS"
    received: list[Received] = field(default_factory=list)
    port: int = 0

    def subscriptions(self) -> list[dict[str, Any]]:
        item: dict[str, Any] = {"pubsubname": self.pubsub, "topic": self.topic, "route": "/receive"}
        if self.dead_letter_topic:
            item["deadLetterTopic"] = self.dead_letter_topic
        return [item]

    async def _subscribe(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.subscriptions())

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        self.received.append(Received(dict(request.headers), await request.read()))
        answer = self.answers.pop(0) if self.answers else self.default
        if isinstance(answer, int):
            return web.Response(status=answer)
        return web.Response(body=orjson.dumps({"status": answer}), content_type="application/json")

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[RecordingApp]:
        app = web.Application()
        app.router.add_get("/dapr/subscribe", self._subscribe)
        app.router.add_post("/receive", self._receive)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = int(runner.addresses[0][1])
            yield self
        finally:
            await runner.cleanup()
