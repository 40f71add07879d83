"""Built-in functions: how a typed Python coroutine becomes something a worker can run.

A built-in is declared with :func:`builtin`::

    class EchoInput(BaseModel):
        model_config = ConfigDict(extra="allow")

    @builtin("system/echo", domain=None, input_model=EchoInput)
    async def echo(data: EchoInput, ctx: ExecutionContext) -> dict[str, Any]:
        return data.model_dump()

``domain=None`` means every domain worker serves it (the diagnostics). The in-code table
(:data:`BUILTINS`) is what the client routes by until the registry issue replaces it with the
database; the runtime only sees the :class:`FunctionResolver` protocol, so that swap is local.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from shared.errors import ConfigError
from shared.limits import RateLimit, check_concurrency_key
from shared.resources import Resources
from shared.retry import RetryPolicy
from shared.settings import Settings

__all__ = [
    "BUILTINS",
    "ExecutionContext",
    "FunctionResolver",
    "FunctionSpec",
    "FunctionTable",
    "Handler",
    "builtin",
    "canonical_slug",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionContext:
    """What a handler may know about the execution it serves."""

    execution_id: str
    function: str
    attempt: int
    domain: str
    workflow_execution_id: str | None = None
    node_id: str | None = None
    context: dict[str, Any] | None = None
    #: the values of the credential keys the function declared (filled by the credentials
    #: middleware before the handler runs; never logged, never in results).
    credentials: Mapping[str, str] = field(default_factory=dict)
    #: the settings of the worker running the call (``None`` only outside a worker, in tests).
    settings: Settings | None = None
    #: what the worker's extensions provide: ``ctx.resources.get(ProviderClients)``.
    resources: Resources = field(default_factory=Resources)


class Handler(Protocol):
    """A built-in's coroutine: validated input in, JSON-serialisable output out.

    Raise :class:`shared.errors.ExecutionFailed` to fail with a stable code, or
    :class:`shared.errors.Retry` to have the delivery redelivered; anything else raised
    becomes ``handler_error``.
    """

    def __call__(self, data: Any, ctx: ExecutionContext, /) -> Awaitable[Any]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionSpec:
    """A function a worker can run.

    Parameters:
        slug: ``<plugin>/<action>``, unique.
        domain: the domain whose worker runs it; ``None`` = every domain (diagnostics).
        handler: the coroutine (built-ins).
        input_model: pydantic model the raw input is validated into; ``None`` passes the dict.
        output_model: pydantic model of the output, for the registry's ``output_schema``.
        timeout_seconds: the function's own limit (the request may only lower it).
        credentials: secret keys the function needs (``SLACK_API_KEY``); resolved before it
            runs, missing ones fail ``credentials_missing``.
        optional_credentials: keys resolved when configured and otherwise left out of
            ``ctx.credentials`` (a sender default, a team id) — never a failure.
        function_id, version, execution_type, is_deprecated, input_schema, output_schema: what
            the registry knows of the function (JSON Schemas are checked by
            ``shared.validation``; ``version`` keys the compiled validators).
    """

    slug: str
    name: str
    description: str
    domain: str | None
    handler: Handler
    input_model: type[BaseModel] | None = None
    output_model: type[BaseModel] | None = None
    timeout_seconds: float | None = None
    credentials: tuple[str, ...] = ()
    optional_credentials: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    #: how failures are retried (shared/retry.py); ``None``: the settings' defaults.
    retry_policy: RetryPolicy | None = None
    #: fleet-wide limits (shared/limits.py): executions running at once (per value of
    #: ``concurrency_key``, a template over the input, when set) and starts per period.
    max_concurrency: int | None = None
    concurrency_key: str | None = None
    rate_limit: RateLimit | None = None
    #: registry fields (``shared.registry``); the defaults describe an in-code built-in.
    function_id: str | None = None
    version: int = 1
    execution_type: str = "builtin"
    is_deprecated: bool = False
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None

    def serves(self, domain: str) -> bool:
        return self.domain is None or self.domain == domain


class FunctionResolver(Protocol):
    """Looks a function up by slug for the runtime (the in-code table now, the registry later)."""

    async def resolve(self, slug: str) -> FunctionSpec | None: ...


#: Plugin ids the origin workflow builder accepts for another plugin's functions
#: (../shared/reference/function-catalog.md §2: ``ai/*`` and ``ai-gateway/*`` → ``openai/*``).
PLUGIN_ALIASES = {"ai": "openai", "ai-gateway": "openai"}


def canonical_slug(slug: str) -> str:
    """``slug`` with an aliased plugin id replaced (``ai/generate-text`` → ``openai/generate-text``);
    other slugs unchanged. Resolvers try the slug as written first, so a function registered
    under an aliased name keeps it."""
    plugin, _, action = slug.partition("/")
    target = PLUGIN_ALIASES.get(plugin)
    return f"{target}/{action}" if target and action else slug


class FunctionTable:
    """An in-memory table of :class:`FunctionSpec` keyed by slug; also a :class:`FunctionResolver`."""

    def __init__(self) -> None:
        self._specs: dict[str, FunctionSpec] = {}

    def add(self, spec: FunctionSpec) -> None:
        existing = self._specs.get(spec.slug)
        if existing is not None and existing.handler is not spec.handler:
            raise ConfigError(f"function {spec.slug!r} is declared twice")
        self._specs[spec.slug] = spec

    def get(self, slug: str) -> FunctionSpec | None:
        """The function named ``slug``, or by its :func:`canonical_slug`."""
        spec = self._specs.get(slug)
        return spec if spec is not None else self._specs.get(canonical_slug(slug))

    async def resolve(self, slug: str) -> FunctionSpec | None:
        return self.get(slug)

    def for_domain(self, domain: str) -> list[FunctionSpec]:
        return [s for s in self._specs.values() if s.serves(domain)]

    def __iter__(self) -> Iterator[FunctionSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: s.slug))

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, slug: object) -> bool:
        return slug in self._specs


#: Every built-in declared with :func:`builtin`.
BUILTINS = FunctionTable()

H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


def builtin(
    slug: str,
    *,
    domain: str | None,
    name: str | None = None,
    description: str = "",
    input_model: type[BaseModel] | None = None,
    output_model: type[BaseModel] | None = None,
    timeout_seconds: float | None = None,
    credentials: tuple[str, ...] = (),
    optional_credentials: tuple[str, ...] = (),
    retry_policy: RetryPolicy | None = None,
    max_concurrency: int | None = None,
    concurrency_key: str | None = None,
    rate_limit: RateLimit | None = None,
    table: FunctionTable = BUILTINS,
) -> Callable[[H], H]:
    """Register the decorated coroutine as the built-in ``slug`` (see module docstring)."""
    if "/" not in slug:
        raise ConfigError(f"slug {slug!r} must look like '<plugin>/<action>'")
    if max_concurrency is not None and max_concurrency < 1:
        raise ConfigError(f"{slug}: max_concurrency must be at least 1")
    if concurrency_key is not None:
        if max_concurrency is None:
            raise ConfigError(f"{slug}: concurrency_key needs max_concurrency")
        try:
            check_concurrency_key(concurrency_key)
        except ValueError as exc:
            raise ConfigError(f"{slug}: {exc}") from None

    def register(handler: H) -> H:
        doc = (handler.__doc__ or "").strip().splitlines()
        table.add(
            FunctionSpec(
                slug=slug,
                name=name or slug.split("/", 1)[1].replace("-", " ").title(),
                description=description or (doc[0] if doc else ""),
                domain=domain,
                handler=handler,
                input_model=input_model,
                output_model=output_model,
                timeout_seconds=timeout_seconds,
                credentials=credentials,
                optional_credentials=optional_credentials,
                retry_policy=retry_policy,
                max_concurrency=max_concurrency,
                concurrency_key=concurrency_key,
                rate_limit=rate_limit,
            )
        )
        return handler

    return register
