"""The diagnostic built-ins every domain worker serves: ``system/echo``, ``system/sleep``,
``system/fail``. They are for health checks, tests and benchmarks, so they stay trivial."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.contract import ErrorCode
from shared.errors import Drop, ExecutionFailed, Retry
from shared.functions import ExecutionContext, builtin

__all__ = ["FailInput", "SleepInput", "echo", "fail", "sleep"]


@builtin(
    "system/echo",
    domain=None,
    description="Returns its input unchanged.",
    timeout_seconds=10,
)
async def echo(data: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    return data


class SleepInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(default=1.0, ge=0, le=3600, title="Seconds")


@builtin(
    "system/sleep",
    domain=None,
    description="Sleeps for `seconds`, then returns {slept}.",
    input_model=SleepInput,
    timeout_seconds=3600,
)
async def sleep(data: SleepInput, ctx: ExecutionContext) -> dict[str, Any]:
    await asyncio.sleep(data.seconds)
    return {"slept": data.seconds}


class FailInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(default="requested failure", title="Message")
    retryable: bool = Field(default=False, title="Retryable")
    code: str = Field(default=ErrorCode.FUNCTION_FAILED, title="Error code")
    redeliver: bool = Field(
        default=False,
        title="Redeliver",
        description="Ask for redelivery instead of failing (ends in the dead-letter topic).",
    )
    drop: bool = Field(
        default=False,
        title="Drop",
        description="Give up at once: dead-lettered now, answered with code `dropped`.",
    )


@builtin(
    "system/fail",
    domain=None,
    description="Fails with the given message and code (or asks for redelivery).",
    input_model=FailInput,
    timeout_seconds=10,
)
async def fail(data: FailInput, ctx: ExecutionContext) -> dict[str, Any]:
    if data.drop:
        raise Drop(data.message)
    if data.redeliver:
        raise Retry(data.message)
    raise ExecutionFailed(data.message, code=data.code, retryable=data.retryable)
