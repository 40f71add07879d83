"""A client routes every built-in by the domains' declared routes, without importing the worker
packages (shared/domains.py ``routes``), and the declaration agrees with the built-ins."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.domains import routed_domain
from shared.functions import BUILTINS


def test_every_built_in_is_routed_to_its_own_domain() -> None:
    from shared.assemble import load_functions

    load_functions()
    worker_builtins = [spec for spec in BUILTINS if spec.domain is not None]
    assert len(worker_builtins) > 30
    wrong = {
        spec.slug: spec.domain
        for spec in worker_builtins
        if (routed_domain(spec.slug) or None) is None or routed_domain(spec.slug).name != spec.domain
    }  # type: ignore[union-attr]
    assert wrong == {}


@pytest.mark.parametrize(
    ("slug", "domain"),
    [
        ("ai/generate-text", "ai"),
        ("system/http-request", "http"),
        ("nobody/knows", None),
        ("system/echo", None),
    ],
)
def test_routes_by_prefix_exact_slug_or_alias(slug: str, domain: str | None) -> None:
    from shared.functions import canonical_slug

    routed = routed_domain(canonical_slug(slug))
    assert (routed.name if routed else None) == domain


def test_the_client_routes_without_importing_worker_packages() -> None:
    code = (
        "import sys\n"
        "from shared.client import FleetClient\n"
        "from shared.settings import Settings\n"
        "c = FleetClient(settings=Settings(redis_url='redis://127.0.0.1:1/0'))\n"
        "slugs = ['slack/send-message', 'system/echo', 'ai/generate-text']\n"
        "print(*(c.topic_for(s) for s in slugs))\n"
        "print(sorted(m for m in sys.modules if m.startswith('workers')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    topics, modules = out.splitlines()
    assert topics == "functions.comms functions.ai functions.ai"
    assert modules == "[]"
