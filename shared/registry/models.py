"""What the registry stores: :class:`FunctionRecord` (a row of ``functions``) and
:class:`FunctionDefinition` (what `fleet functions register` accepts for oci/http functions)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import asyncpg
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.domains import get_domain
from shared.errors import ConfigError
from shared.limits import RateLimit, check_concurrency_key
from shared.retry import RetryPolicy

__all__ = ["EXECUTION_TYPES", "FunctionDefinition", "FunctionRecord", "check_schema"]

EXECUTION_TYPES = ("builtin", "oci", "http")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_.-]*/[a-z0-9][a-z0-9_.-]*$")
_CREDENTIAL_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")
#: ``{{credentials.KEY}}`` in a webhook header value (resolved by the http executor).
_HEADER_CREDENTIAL = re.compile(r"\{\{\s*credentials\.([A-Za-z_][A-Za-z0-9_.:-]*)\s*\}\}")


def check_schema(schema: Any, what: str) -> None:
    """Raise ``ValueError`` unless ``schema`` is a valid JSON Schema (draft 2020-12)."""
    if not isinstance(schema, dict | bool):
        raise ValueError(f"{what} must be a JSON Schema object")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"{what} is not a valid JSON Schema: {exc.message}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionRecord:
    """One row of ``functions``."""

    id: str
    slug: str
    name: str
    description: str
    plugin_id: str
    version: int
    domain: str | None
    execution_type: str
    image_ref: str | None = None
    command: list[str] | None = None
    working_dir: str | None = None
    container_env: dict[str, str] | None = None
    webhook_url: str | None = None
    webhook_method: str | None = None
    webhook_headers: dict[str, str] | None = None
    webhook_timeout_seconds: float | None = None
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    timeout_seconds: float | None = None
    retry_policy: dict[str, Any] | None = None
    max_concurrency: int | None = None
    concurrency_key: str | None = None
    rate_limit: dict[str, Any] | None = None
    credentials: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    resources: dict[str, Any] | None = None
    is_builtin: bool = False
    is_enabled: bool = True
    is_deprecated: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    created_by: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> FunctionRecord:
        values = dict(row)
        values["id"] = str(values["id"])
        values["credentials"] = tuple(values.get("credentials") or ())
        values["tags"] = tuple(values.get("tags") or ())
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps as ISO strings) for `--json` output."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            if name == "extra":
                continue
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


class ResourceAmounts(BaseModel):
    """Kubernetes quantities, e.g. ``cpu: "500m"``, ``memory: "256Mi"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: str | None = Field(default=None, pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    memory: str | None = Field(default=None, pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?|[kmgtpe])?$")


class ContainerResources(BaseModel):
    """``resources`` of an oci function: requests and limits, any part optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: ResourceAmounts | None = None
    limits: ResourceAmounts | None = None


class FunctionDefinition(BaseModel):
    """A registrable (``oci`` or ``http``) function, as read from a YAML/JSON file.

    Built-ins are not registered this way: they come from code (``fleet functions sync``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    slug: str = Field(description="<plugin>/<action>, lower case")
    name: str | None = None
    description: str = ""
    domain: str = Field(description="the domain whose worker runs it (oci, http, ...)")
    execution_type: Literal["oci", "http"]
    image_ref: str | None = None
    command: list[str] | None = None
    working_dir: str | None = None
    container_env: dict[str, str] | None = None
    webhook_url: str | None = None
    webhook_method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] | None = None
    webhook_headers: dict[str, str] | None = None
    webhook_timeout_seconds: float | None = Field(default=None, gt=0)
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)
    retry_policy: dict[str, Any] | None = None
    max_concurrency: int | None = Field(
        default=None, gt=0, description="executions running at once across the fleet"
    )
    concurrency_key: str | None = Field(
        default=None, description='max_concurrency per value of this input template ("{{input.channel}}")'
    )
    rate_limit: dict[str, Any] | None = Field(
        default=None, description='{"limit": N, "period_seconds": P[, "burst": B]} across the fleet'
    )
    resources: ContainerResources | None = Field(
        default=None, description="container requests/limits of an oci function (else the defaults)"
    )
    credentials: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    is_deprecated: bool = False

    @field_validator("slug")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SLUG.match(value):
            raise ValueError("must look like '<plugin>/<action>' (lower case, digits, '-', '_', '.')")
        return value

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        try:
            return get_domain(value).name
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("retry_policy")
    @classmethod
    def _retry_policy(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # Validated by the policy model (unknown fields, ranges) and stored in its own terms.
        return RetryPolicy.model_validate(value).as_document() if value is not None else None

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return RateLimit.model_validate(value).as_document() if value is not None else None

    @field_validator("concurrency_key")
    @classmethod
    def _concurrency_key(cls, value: str | None) -> str | None:
        return check_concurrency_key(value) if value is not None else None

    @field_validator("credentials")
    @classmethod
    def _credentials(cls, value: list[str]) -> list[str]:
        bad = [k for k in value if not _CREDENTIAL_KEY.match(k)]
        if bad:
            raise ValueError(f"invalid credential keys: {bad}")
        return value

    @field_validator("input_schema", "output_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_schema(value, "the schema")
        return value

    @model_validator(mode="after")
    def _backend_fields(self) -> FunctionDefinition:
        if self.concurrency_key is not None and self.max_concurrency is None:
            raise ValueError("concurrency_key needs max_concurrency")
        if self.execution_type == "oci":
            if not self.image_ref:
                raise ValueError("an oci function needs image_ref")
            if self.webhook_url or self.webhook_method or self.webhook_headers:
                raise ValueError("webhook_* fields belong to http functions")
        else:
            if not self.webhook_url:
                raise ValueError("an http function needs webhook_url")
            if not re.match(r"^https?://", self.webhook_url):
                raise ValueError("webhook_url must be an http(s) URL")
            if self.image_ref or self.command or self.working_dir or self.container_env:
                raise ValueError("image_ref/command/working_dir/container_env belong to oci functions")
            # A header that needs a credential declares it: the worker resolves declared keys.
            used = [k for v in (self.webhook_headers or {}).values() for k in _HEADER_CREDENTIAL.findall(v)]
            missing = [k for k in dict.fromkeys(used) if k not in self.credentials]
            if missing:
                object.__setattr__(self, "credentials", [*self.credentials, *missing])
        return self

    @property
    def plugin_id(self) -> str:
        return self.slug.split("/", 1)[0]

    @property
    def display_name(self) -> str:
        return self.name or self.slug.split("/", 1)[1].replace("-", " ").title()
