"""Function Fleet's shared runtime: contract, transports, runtime, client and CLI.

The public surface is re-exported here, resolved on first access, so importing any
``shared.*`` module (as every worker process does) does not also load the client and its
dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.client import FleetClient
    from shared.contract import ErrorCode, ExecutionError, ExecutionResult, RequestData
    from shared.errors import (
        ConfigError,
        ControlSignal,
        Drop,
        ExecutionFailed,
        FleetError,
        InfrastructureError,
        Retry,
        TransportError,
    )
    from shared.functions import ExecutionContext, FunctionSpec, builtin
    from shared.settings import Settings

__all__ = [
    "ConfigError",
    "ControlSignal",
    "Drop",
    "ErrorCode",
    "ExecutionContext",
    "ExecutionError",
    "ExecutionFailed",
    "ExecutionResult",
    "FleetClient",
    "FleetError",
    "FunctionSpec",
    "InfrastructureError",
    "RequestData",
    "Retry",
    "Settings",
    "TransportError",
    "builtin",
]

_HOMES = {
    "FleetClient": "shared.client",
    "ErrorCode": "shared.contract",
    "ExecutionError": "shared.contract",
    "ExecutionResult": "shared.contract",
    "RequestData": "shared.contract",
    "ConfigError": "shared.errors",
    "ControlSignal": "shared.errors",
    "Drop": "shared.errors",
    "ExecutionFailed": "shared.errors",
    "FleetError": "shared.errors",
    "InfrastructureError": "shared.errors",
    "Retry": "shared.errors",
    "TransportError": "shared.errors",
    "ExecutionContext": "shared.functions",
    "FunctionSpec": "shared.functions",
    "builtin": "shared.functions",
    "Settings": "shared.settings",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'shared' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
