"""Per-function container resources: registered with the function, applied to its Job."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.registry.models import FunctionDefinition
from shared.registry.repository import FunctionRepository
from shared.settings import Settings
from workers.oci.protocol import OciFunction


def definition(**extra: Any) -> FunctionDefinition:
    return FunctionDefinition(
        slug="acme/resize", domain="oci", execution_type="oci", image_ref="ghcr.io/acme/resize:1", **extra
    )


async def test_registered_resources_reach_the_job_with_defaults_for_the_rest(pool: Any) -> None:
    repo = FunctionRepository(pool)
    record, action = await repo.register(
        definition(resources={"requests": {"memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}})
    )
    assert action == "created"
    assert record.resources == {"requests": {"memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}

    settings = Settings(oci_cpu_request="50m")
    function = OciFunction.from_record(await repo.get("acme/resize"), settings)
    assert function.resources.to_kubernetes() == {
        "requests": {"cpu": "50m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }

    # Changing only the resources is a change: the version goes up.
    updated, action = await repo.register(definition(resources={"limits": {"cpu": "4"}}))
    assert (action, updated.version, updated.resources) == ("updated", 2, {"limits": {"cpu": "4"}})
    _, action = await repo.register(definition(resources={"limits": {"cpu": "4"}}))
    assert action == "unchanged"


def test_resource_quantities_are_validated() -> None:
    with pytest.raises(ValidationError):
        definition(resources={"limits": {"cpu": "two"}})
    with pytest.raises(ValidationError):
        definition(resources={"limits": {"gpu": "1"}})
