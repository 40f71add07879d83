"""Test-only built-ins, in their own table (never in the process-wide BUILTINS, so other
suites' checks over BUILTINS are unaffected). ``tests.registry.extra_builtins`` adds them to
BUILTINS in a worker subprocess (``FLEET_EXTRA_MODULES``)."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis

import shared.diagnostics  # noqa: F401  (registers system/* in BUILTINS)
from shared.functions import BUILTINS, ExecutionContext, FunctionTable, builtin

TEST_FUNCTIONS = FunctionTable()
for _spec in list(BUILTINS):
    if _spec.slug.startswith("system/"):
        TEST_FUNCTIONS.add(_spec)


class CountedInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    redis: str = Field(description="Redis URL where the effect is counted")
    key: str
    hold: float = Field(default=0.0, ge=0, description="first run sleeps this long before its effect")


class CountedOutput(BaseModel):
    effect: int
    runs: int


@builtin(
    "testing/counted",
    domain=None,
    input_model=CountedInput,
    output_model=CountedOutput,
    timeout_seconds=5,
    table=TEST_FUNCTIONS,
)
async def counted(data: CountedInput, ctx: ExecutionContext) -> CountedOutput:
    """A side effect counted in Redis: INCR <key>:effect once per run that finishes."""
    redis = Redis.from_url(data.redis)
    try:
        runs = int(await redis.incr(f"{data.key}:runs"))
        if runs == 1 and data.hold:
            await asyncio.sleep(data.hold)
        effect = int(await redis.incr(f"{data.key}:effect"))
    finally:
        await redis.aclose()
    return CountedOutput(effect=effect, runs=runs)


class SecretOutput(BaseModel):
    said: str


@builtin("testing/leak", domain=None, credentials=("PLANTED_TOKEN",), timeout_seconds=5, table=TEST_FUNCTIONS)
async def leak(data: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    """Misbehaves on purpose: logs, returns and fails with its secret."""
    import structlog

    secret = ctx.credentials["PLANTED_TOKEN"]
    structlog.get_logger("testing.leak").warning("about to leak", token=secret, text=f"token is {secret}")
    if data.get("fail"):
        from shared.errors import ExecutionFailed

        raise ExecutionFailed(f"failed with {secret}", details={"token": secret})
    return {"said": f"the token is {secret}", "nested": {"token": secret}}


class StrictOutput(BaseModel):
    n: int


@builtin(
    "testing/bad-output", domain=None, output_model=StrictOutput, timeout_seconds=5, table=TEST_FUNCTIONS
)
async def bad_output(data: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    """Returns what its output model forbids."""
    return {"n": "not a number"}
