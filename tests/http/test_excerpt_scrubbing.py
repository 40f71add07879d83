"""A webhook's error body is cut to an excerpt only after every secret in it is masked: a
secret the server echoes across the cut leaves none of its characters in the failure."""

from __future__ import annotations

import uuid

import orjson
import pytest
from aiohttp import web

from shared.credentials import SecretRegistry
from tests.http.conftest import Fake, allowing
from tests.http.test_webhook import context, failure
from workers.http.webhook import run_webhook

LIMIT = 2048  # the excerpt's length (workers/http/webhook.py)


@pytest.mark.parametrize("known_as", ["call credential", "registered secret"])
async def test_a_secret_straddling_the_excerpt_cut_leaves_no_prefix(fake: Fake, known_as: str) -> None:
    secret = f"Wk7sECRET-{uuid.uuid4().hex}"
    credentials = {"ACME_TOKEN": secret}
    registry = SecretRegistry()  # the worker's, in ctx.resources as its credentials extension puts it
    if known_as == "registered secret":  # e.g. another function's, resolved by the middleware
        registry.add(secret)
        credentials = {"ACME_TOKEN": "tok-unrelated"}
    ctx = context(**credentials)
    ctx.resources.provide(SecretRegistry, registry)
    body = "x" * (LIMIT - 6) + secret + "y" * 500

    async def echo(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502, text=body)

    fake.routes["/hook"] = echo
    error = await failure(
        run_webhook(
            url=fake.url("/hook"),
            headers={"Authorization": "Bearer {{credentials.ACME_TOKEN}}"},
            input={"a": 1},
            ctx=ctx,
            policy=allowing("127.0.0.1"),
        )
    )
    excerpt = error.details["body"]
    assert excerpt.startswith("x" * (LIMIT - 6) + "***")
    assert excerpt.endswith("…")
    assert len(excerpt) == LIMIT + 1
    published = orjson.dumps(error.to_error()).decode()
    assert secret[:4] not in published
