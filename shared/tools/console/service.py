"""The console's operations, shared by the pages and ``/api/v1`` (one implementation, two
renderings). Each returns JSON-ready data or raises :class:`NotFound`, :class:`Unavailable`,
:class:`~shared.tools.console.data.BadInput` or :class:`~shared.tools.console.edit.EditRefused`.
"""

from __future__ import annotations

from typing import Any

from shared.domains import DOMAINS, get_domain
from shared.errors import ConfigError, ExecutionTimeout, FleetError, UnknownFunction
from shared.registry.repository import FunctionRepository
from shared.tools.console import data
from shared.tools.console.app import Console
from shared.tools.console.data import BadInput
from shared.tools.console.edit import definition_from

__all__ = ["NotFound", "Unavailable"]

#: Longest a test run or a re-run waits for its result.
MAX_RUN_TIMEOUT = 300.0
DEFAULT_RUN_TIMEOUT = 30.0
DEAD_LETTERS_PER_DOMAIN = 100


class NotFound(LookupError):
    pass


class Unavailable(RuntimeError):
    """A database or broker the operation needs is not there; ``code`` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def database(console: Console) -> Any:
    if console.pool is None:
        raise Unavailable("database_unavailable", console.database_problem or "no database")
    return console.pool


def broker(console: Console) -> Any:
    if console.redis is None:
        raise Unavailable("broker_unavailable", console.broker_problem or "no broker")
    return console.redis


# ---------------------------------------------------------------------------------- functions
async def functions(console: Console, query: Any) -> dict[str, Any]:
    return await data.list_functions(console.pool, console.table, data.FunctionFilters.parse(query))


async def function(console: Console, slug: str) -> dict[str, Any]:
    found = await data.function_detail(console.pool, console.table, slug, console.settings)
    if found is None:
        raise NotFound(f"no function {slug!r}")
    return found


async def function_page(console: Console, slug: str, query: Any) -> dict[str, Any]:
    """Everything the function page shows: the function, its credentials' status, and with a
    database its recent executions, versions and (``from``/``to`` in ``query``) a diff."""
    found = await function(console, slug)
    page: dict[str, Any] = {
        "function": found,
        "credentials": await data.credential_status(
            list(found.get("credentials") or ()), console.settings, console.pool
        ),
        "secrets": {
            "writable": secrets_key_problem(console) is None,
            "problem": secrets_key_problem(console),
            "cache_ttl": console.settings.secrets_cache_ttl,
        },
        "stats": None,
        "versions": None,
        "diff": None,
    }
    if console.pool is not None and found.get("id"):
        page["stats"] = await data.function_stats(console.pool, slug)
        page["versions"] = await data.function_versions(console.pool, found["id"])
        if query.get("from") or query.get("to"):
            page["diff"] = await diff(console, slug, query)
    return page


def _version(query: Any, name: str) -> int:
    raw = (query.get(name) or "").strip()
    if not raw.isdigit():
        raise BadInput(f"{name} must be a version number", name)
    return int(raw)


async def diff(console: Console, slug: str, query: Any) -> dict[str, Any]:
    a, b = _version(query, "from"), _version(query, "to")
    found = await function(console, slug)
    result = await data.version_diff(database(console), found["id"], a, b)
    if result is None:
        raise NotFound(f"{slug} has no version {a} or {b} in the registry")
    return result


async def versions(console: Console, slug: str) -> list[dict[str, Any]]:
    found = await function(console, slug)
    return await data.function_versions(database(console), found["id"])


async def stats(console: Console, slug: str) -> dict[str, Any]:
    await function(console, slug)
    return await data.function_stats(database(console), slug)


async def set_state(
    console: Console, slug: str, *, enabled: bool | None = None, deprecated: bool | None = None
) -> dict[str, Any]:
    repository = FunctionRepository(database(console))
    if enabled is None and deprecated is None:
        raise BadInput("give enabled and/or deprecated (true or false)", "enabled")
    record = await repository.get(slug)
    if record is None:
        raise NotFound(f"no function {slug!r}")
    if enabled is not None:
        record = await repository.set_enabled(slug, enabled)
    if deprecated is not None and record is not None:
        record = await repository.set_deprecated(slug, deprecated)
    if record is None:
        raise NotFound(f"no function {slug!r}")
    return data.record_json(record)


async def save(console: Console, slug: str | None, changes: dict[str, Any]) -> dict[str, Any]:
    """Edit the registered function ``slug`` (``None``: create one from ``changes``); returns
    ``{"action", "function"}``. Validation happens before anything is written."""
    repository = FunctionRepository(database(console))
    current = None
    if slug is not None:
        current = await repository.get(slug)
        if current is None:
            raise NotFound(f"no function {slug!r}")
        if "slug" in changes and changes["slug"] != slug:
            raise BadInput("the slug of a function cannot change; create a new function", "slug")
    elif (changes.get("slug") and await repository.get(str(changes["slug"]))) is not None:
        from shared.tools.console.edit import EditRefused

        raise EditRefused({"slug": f"{changes['slug']} exists already; edit it on its page"})
    definition = definition_from(current, {k: v for k, v in changes.items() if slug is None or k != "slug"})
    try:
        record, action = await repository.register(definition, created_by="console")
    except ValueError as exc:
        from shared.tools.console.edit import EditRefused

        raise EditRefused({"_form": str(exc)}) from None
    return {"action": action, "function": data.record_json(record)}


# ---------------------------------------------------------------------------------- templates
async def from_template(console: Console, language: Any, name: Any) -> dict[str, Any]:
    """What ``fleet new LANGUAGE NAME`` does, then registering its ``function.local.yaml``: a new
    OCI function from ``function_templates/``, runnable at once on the local backend.

    The directory is always ``$FLEET_HOME/functions/<action>`` on the console's machine (a
    caller never names a path). Returns ``{action, function, directory, files, next}``:
    ``next`` holds the commands that build and register it for a cluster.
    """
    import yaml

    from shared.tools.scaffold import LANGUAGES, scaffold

    if language not in LANGUAGES:
        raise BadInput(f"template must be one of {', '.join(LANGUAGES)}", "template")
    if not isinstance(name, str) or not name:
        raise BadInput("name: <action> or <plugin>/<action>", "name")
    root = console.settings.home / "functions"
    try:
        made = scaffold(language, name, root)
    except ConfigError as exc:  # a bad name, or the directory exists
        raise BadInput(str(exc), "name") from None
    definition = yaml.safe_load((made.directory / "function.local.yaml").read_text())
    saved = await save(console, None, definition)
    files = sorted(
        str(path.relative_to(made.directory)) for path in made.directory.rglob("*") if path.is_file()
    )
    return {
        **saved,
        "directory": str(made.directory),
        "files": files,
        "next": [
            f"fleet build {made.directory} --image <registry>/{made.slug}:0.1.0",
            f"fleet functions register {made.directory / 'function.yaml'}",
        ],
    }


# ------------------------------------------------------------------------------------ secrets
def secrets_key_problem(console: Console) -> str | None:
    """Why secret values cannot be written here (no key, a malformed one); ``None``: they can."""
    from shared.registry.secret_keys import NoSecretsKey, SecretCipher

    try:
        if SecretCipher.from_settings(console.settings) is None:
            return str(NoSecretsKey(console.settings))
    except ConfigError as exc:
        return str(exc)
    return None


def _store(console: Console) -> Any:
    from shared.registry.secrets import SecretStore

    db = database(console)
    try:
        return SecretStore.from_settings(db, console.settings)
    except ConfigError as exc:  # a malformed FLEET_SECRETS_KEY
        raise Unavailable("secrets_key_invalid", str(exc)) from None


async def secrets(console: Console) -> dict[str, Any]:
    """The stored secrets: names, times, the functions declaring each (never a value)."""
    store = _store(console)
    return {
        "writable": secrets_key_problem(console) is None,
        "problem": secrets_key_problem(console),
        "secrets": [info.as_json() for info in await store.listing()],
    }


async def set_secret(console: Console, name: str, value: Any) -> dict[str, Any]:
    """Store ``value`` under ``name`` (write-only: the answer names the secret, never the value)."""
    from shared.registry.secret_keys import NoSecretsKey
    from shared.registry.secrets import InvalidSecret

    if not isinstance(value, str):
        raise BadInput("value must be a string", "value")
    store = _store(console)
    try:
        info, created = await store.put(name, value, by="console")
    except InvalidSecret as exc:
        raise BadInput(str(exc), exc.field) from None
    except NoSecretsKey as exc:
        raise Unavailable("secrets_key_missing", str(exc)) from None
    return {"secret": info.as_json(), "created": created}


async def delete_secret(console: Console, name: str) -> dict[str, Any]:
    if not await _store(console).delete(name):
        raise NotFound(f"no secret {name!r} in the store")
    return {"deleted": name}


# ---------------------------------------------------------------------------------- test runs
def _timeout(raw: Any) -> float:
    if raw in (None, ""):
        return DEFAULT_RUN_TIMEOUT
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise BadInput("timeout must be a number of seconds", "timeout") from None
    if not 0 < value <= MAX_RUN_TIMEOUT:
        raise BadInput(f"timeout must be above 0 and at most {MAX_RUN_TIMEOUT:g} seconds", "timeout")
    return value


def result_view(result: Any) -> dict[str, Any]:
    """A result as the console shows it, with the field paths of validation errors."""
    body: dict[str, Any] = result.model_dump(mode="json")
    error = body.get("error") or {}
    details = error.get("details")
    paths = []
    if isinstance(details, list):
        paths = [
            {"path": d.get("path") or "/", "message": str(d.get("message", ""))}
            for d in details
            if isinstance(d, dict) and ("path" in d or "message" in d)
        ]
    body["field_errors"] = paths
    body["link"] = f"/executions/{body['execution_id']}"
    return body


async def run(console: Console, slug: str, body: Any) -> dict[str, Any]:
    """Run ``slug`` through the fleet as an orchestrator does (a request on its domain topic,
    the result from the results stream) and wait for the result."""
    if not isinstance(body, dict):
        raise BadInput("the body must be a JSON object", "input")
    input_ = body.get("input", {})
    if not isinstance(input_, dict):
        raise BadInput("input must be a JSON object", "input")
    context = body.get("context")
    if context is not None and not isinstance(context, dict):
        raise BadInput("context must be a JSON object", "context")
    domain = body.get("domain") or None
    if domain is not None:
        try:
            domain = get_domain(str(domain)).name
        except ConfigError as exc:
            raise BadInput(str(exc), "domain") from None
    timeout = _timeout(body.get("timeout"))
    broker(console)
    try:
        result = await console.client.invoke(
            slug, input_, timeout=timeout, context=context, domain=domain, workflow_execution_id=None
        )
    except UnknownFunction as exc:
        raise NotFound(str(exc)) from None
    except ExecutionTimeout as exc:
        return {
            "execution_id": exc.execution_id,
            "status": "timeout",
            "error": {"code": "timeout", "message": str(exc)},
            "field_errors": [],
            "link": f"/executions/{exc.execution_id}",
        }
    except FleetError as exc:
        raise Unavailable("broker_unavailable", str(exc)) from None
    return result_view(result)


# --------------------------------------------------------------------------------- executions
async def executions(console: Console, query: Any) -> dict[str, Any]:
    filters = data.ExecutionFilters.parse(query)
    return await data.list_executions(database(console), filters)


async def execution(console: Console, execution_id: str) -> dict[str, Any]:
    found = await data.execution_detail(database(console), execution_id)
    if found is None:
        raise NotFound(f"no execution {execution_id!r}")
    return found


async def rerun(console: Console, execution_id: str, *, wait: float = DEFAULT_RUN_TIMEOUT) -> dict[str, Any]:
    """Run an execution's function again with its input under a new execution id."""
    found = await execution(console, execution_id)
    if not found["function_slug"]:
        raise BadInput("this execution names no function to run again", "function")
    body = {"input": found["input"] if isinstance(found["input"], dict) else {}, "timeout": wait}
    result = await run(console, found["function_slug"], body)
    result["rerun_of"] = execution_id
    return result


# ---------------------------------------------------------------------------- fleet and DLQs
async def fleet(console: Console) -> dict[str, Any]:
    from shared.tools.scaling.snapshot import take_snapshot

    snapshot: dict[str, Any] = await take_snapshot(
        broker(console), console.settings, DOMAINS, local=console.local
    )
    return snapshot


def _queue(console: Console, domain: str) -> tuple[str, str]:
    try:
        name = get_domain(domain).name
    except ConfigError:
        raise NotFound(f"no domain {domain!r}") from None
    topic = console.settings.topic_for(name)
    return console.settings.dlq_for(topic), topic


async def dead_letters(console: Console, domain: str | None = None) -> dict[str, Any]:
    from shared.tools.replay.dlq import iter_dead_letters

    redis = broker(console)
    names = [domain] if domain else [d.name for d in DOMAINS]
    out = []
    for name in names:
        dlq, topic = _queue(console, name)
        letters = [
            letter.summary()
            async for letter in iter_dead_letters(redis, dlq, topic, limit=DEAD_LETTERS_PER_DOMAIN)
        ]
        out.append({"domain": name, "dlq": dlq, "count": await redis.xlen(dlq), "entries": letters})
    return {"domains": out}


async def dead_letter(console: Console, domain: str, entry_id: str) -> dict[str, Any]:
    from shared.tools.replay.dlq import find_dead_letter

    if not _entry_id_ok(entry_id):
        raise NotFound(f"no dead letter {entry_id!r}")
    found = await find_dead_letter(broker(console), [_queue(console, domain)], entry_id)
    if found is None:
        raise NotFound(f"no dead letter {entry_id!r} in {domain}")
    return found.details()


def _entry_id_ok(entry_id: str) -> bool:
    ms, _, seq = entry_id.partition("-")
    return ms.isdigit() and (seq == "" or seq.isdigit())


async def redrive(console: Console, domain: str, ids: list[str] | None) -> dict[str, Any]:
    from shared.tools.replay.dlq import redrive as move

    dlq, topic = _queue(console, domain)
    if ids is not None:
        bad = [i for i in ids if not isinstance(i, str) or not _entry_id_ok(i)]
        if bad or not ids:
            raise BadInput("ids must be dead-letter entry ids (1700000000000-0)", "ids")
    report = await move(broker(console), dlq, topic, ids)
    return {"moved": [{"id": a, "new_id": b} for a, b in report.moved], "missing": report.missing}
