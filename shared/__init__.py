"""Function Fleet's shared runtime: contract, transports, runtime, client and CLI.

The public surface is re-exported here; everything else is an implementation detail.
"""

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
