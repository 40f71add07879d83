"""Imported by worker subprocesses through ``FLEET_EXTRA_MODULES``: puts the test built-ins
into the process-wide table that worker serves."""

from __future__ import annotations

from shared.functions import BUILTINS
from tests.registry.fixtures_functions import TEST_FUNCTIONS

for _spec in TEST_FUNCTIONS:
    if _spec.slug not in BUILTINS:
        BUILTINS.add(_spec)
