"""Helpers for the probe and metrics tests: a free port, scraping and parsing ``/metrics``."""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def parse(text: str) -> tuple[set[str], Samples]:
    """The family names and every sample (name, sorted labels) -> value of an exposition."""
    families = list(text_string_to_metric_families(text))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples
    }
    return {family.name for family in families}, samples


async def get(url: str) -> tuple[int, str, Any]:
    """``(status, content type, body)``; the body parsed when it is JSON."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        if response.content_type == "application/json":
            return response.status, response.content_type, await response.json()
        return response.status, response.headers.get("Content-Type", ""), await response.text()
