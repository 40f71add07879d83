"""`fleet up`: the whole fleet on one machine, no cluster.

Starts an embedded Valkey when no ``FLEET_REDIS_URL`` is set (data kept under ``FLEET_HOME``),
then one worker process per domain, supervised (a crashed worker is restarted with backoff).
Likewise an embedded PostgreSQL when no ``FLEET_DATABASE_URL`` is set (registry + history;
migrated and built-ins synced before the workers start).
Writes ``$FLEET_HOME/up.json`` so `fleet invoke` & co. in another terminal find the broker
and the database.
Serves the web console (``shared/tools/console``) on ``FLEET_UI_HOST``:``FLEET_UI_PORT`` (any
free port when that one is taken), its address printed and recorded in up.json as ``ui_url``;
``--no-ui`` / ``FLEET_UI=false`` leaves it out.
With its embedded database and no ``FLEET_SECRETS_KEY``, keeps the secret store's key in
``$FLEET_HOME/secrets.key`` (created once, mode 0600), which its workers and the CLI read.
Ctrl-C / SIGTERM drains every worker, stops the broker, removes the state file, exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from typing import Any

import click

from shared.backoff import Backoff
from shared.domains import DOMAINS, get_domain
from shared.errors import ConfigError
from shared.settings import Settings
from shared.tools.cli.common import make_settings, read_up_state
from shared.tools.cli.db import database_option
from shared.tools.cli.options import home_option, redis_url_option
from shared.tools.embedded import EmbeddedBroker, EmbeddedDatabase

__all__ = ["up"]

#: Seconds between restarts of a worker that keeps crashing (doubles up to the cap).
RESTART_BACKOFF_INITIAL, RESTART_BACKOFF_MAX = 0.5, 30.0
#: Set in the supervisor's environment: the process `fleet up` re-runs itself as.
_SUPERVISOR_ENV = "FLEET_UP_SUPERVISOR"


async def _stop_when_orphaned(stop: asyncio.Event) -> None:
    parent = os.getppid()
    while not stop.is_set():
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            stop.set()


def _run_detached_supervisor() -> int:
    """Run this same command again as the supervisor, in a session of its own, and relay
    SIGINT/SIGTERM to it as one SIGTERM; returns its exit code.

    Ctrl-C in a terminal signals the whole foreground process group. The embedded broker is a
    child process that would get it too and stop before the workers drain (every worker then
    logs "connection closed" while it settles). Detached, the supervisor, the broker and the
    workers see only the SIGTERM relayed here, and the supervisor orders the stop: workers
    drain first, then the database and the broker stop.
    """
    import subprocess

    child = subprocess.Popen(
        [sys.executable, "-m", "shared.tools.cli.main", *sys.argv[1:]],
        env={**os.environ, _SUPERVISOR_ENV: "1"},
        start_new_session=True,
    )

    def relay(signum: int, frame: Any) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, relay)
    return child.wait()


@click.command()
@redis_url_option
@database_option
@home_option
@click.option(
    "--domain",
    "domains",
    multiple=True,
    type=click.Choice([d.name for d in DOMAINS]),
    envvar="FLEET_UP_DOMAINS",
    show_envvar=True,
    help="Run only these domains (repeatable).",
)
@click.option(
    "--autoscale/--no-autoscale",
    default=None,
    envvar="FLEET_AUTOSCALE",
    show_envvar=True,
    help="Scale each domain's worker processes from zero by KEDA's rules (default), or run one "
    "worker per domain all the time.",
)
@click.option(
    "--ui/--no-ui",
    default=None,
    envvar="FLEET_UI",
    show_envvar=True,
    help="Serve the web console too (default), on FLEET_UI_HOST:FLEET_UI_PORT; its address is "
    "printed and recorded in up.json.",
)
@click.option(
    "--shutdown-timeout",
    type=float,
    envvar="FLEET_SHUTDOWN_TIMEOUT",
    show_envvar=True,
    help="Seconds each worker may drain.",
)
def up(
    redis_url: str | None,
    database_url: str | None,
    home: str | None,
    domains: tuple[str, ...],
    autoscale: bool | None,
    ui: bool | None,
    shutdown_timeout: float | None,
) -> None:
    """Run the fleet locally: broker and database (embedded unless configured) and every
    domain worker."""
    if os.environ.get(_SUPERVISOR_ENV) != "1":
        sys.exit(_run_detached_supervisor())
    settings = make_settings(
        redis_url=redis_url,
        database_url=database_url,
        home=home,
        shutdown_timeout=shutdown_timeout,
        autoscale=autoscale,
        ui=ui,
    )
    if settings.ui:
        from shared.tools.console.security import check_bind

        token = settings.ui_token.get_secret_value() if settings.ui_token is not None else None
        try:
            check_bind(settings.ui_host, token)
        except ConfigError as exc:
            raise click.UsageError(f"{exc} (or run `fleet up --no-ui`)") from None
    settings.home.mkdir(parents=True, exist_ok=True)
    existing = read_up_state(settings.home)
    if existing is not None:
        raise click.UsageError(
            f"`fleet up` is already running (pid {existing['pid']}, {existing['redis_url']})"
        )
    selected = [get_domain(d) for d in domains] or list(DOMAINS)
    broker: EmbeddedBroker | None = None
    url = settings.redis_url or ""
    if not url:
        broker = EmbeddedBroker(settings.home / "valkey", persist=True)
        url = broker.start()
    database: EmbeddedDatabase | None = None
    try:
        if not settings.database_url:
            database = EmbeddedDatabase(settings.home / "postgres")
            settings = settings.model_copy(update={"database_url": database.start()})
            _local_secrets_key(settings)
        asyncio.run(_prepare_database(settings))
        asyncio.run(
            _supervise(
                settings,
                url,
                [d.name for d in selected],
                embedded=broker is not None,
                autoscale=settings.autoscale,
            )
        )
    finally:
        settings.state_file.unlink(missing_ok=True)
        if database is not None:
            database.stop()
        if broker is not None:
            broker.stop()
    click.echo("fleet stopped", err=True)


def _local_secrets_key(settings: Settings) -> None:
    """With the embedded database and no FLEET_SECRETS_KEY: the key file under FLEET_HOME, so
    `fleet secrets set` works on a laptop with nothing configured."""
    from shared.registry.secret_keys import ensure_key_file

    if settings.secrets_key is not None:
        return
    path, created = ensure_key_file(settings)
    click.echo(
        f"secrets: key {'created' if created else 'kept'} in {path} (mode 0600; FLEET_SECRETS_KEY "
        "overrides it); store credentials with `fleet secrets set NAME`",
        err=True,
    )


async def _prepare_database(settings: Settings) -> None:
    """Migrate the registry database and sync every built-in into it."""
    from shared.assemble import load_functions
    from shared.registry.database import connect
    from shared.registry.migrator import migrate
    from shared.registry.sync import sync_builtins

    url = settings.database_url or ""
    applied = await migrate(url, log_applied=False)
    load_functions(extra_modules=settings.extra_modules)
    connection = await connect(url, timeout=settings.database_timeout)
    try:
        report = await sync_builtins(connection)
    finally:
        await connection.close()
    click.echo(
        f"registry: {url} ({len(applied)} migrations applied, {len(report.inserted)} built-ins added, "
        f"{len(report.updated)} updated)",
        err=True,
    )


async def _supervise(
    settings: Settings, url: str, domains: list[str], *, embedded: bool, autoscale: bool
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The `fleet up` command that started us relays signals; if it is killed outright, stop
    # rather than run on with nobody to stop us.
    orphan_watch = asyncio.create_task(_stop_when_orphaned(stop))
    env = {
        **os.environ,
        _SUPERVISOR_ENV: "",
        "FLEET_REDIS_URL": url,
        "FLEET_HOME": str(settings.home),
        "FLEET_DATABASE_URL": settings.database_url or "",
    }
    if autoscale:
        # Scaled-in workers leave what they had pending idle for the others to reclaim: reclaim
        # passes every second here (the cluster keeps FLEET_REDELIVER_INTERVAL).
        env["FLEET_REDELIVER_INTERVAL"] = str(min(settings.redeliver_interval, 1.0))
    where = f"embedded, data in {settings.home / 'valkey'}" if embedded else "external"
    console = await _start_console(settings.model_copy(update={"redis_url": url})) if settings.ui else None
    ui_url = console[1] if console is not None else None
    try:
        if autoscale:
            await _autoscaled(settings, url, domains, env, embedded, where, stop, ui_url)
        else:
            await _one_per_domain(settings, url, domains, env, embedded, where, stop, ui_url)
    finally:
        orphan_watch.cancel()
        if console is not None:
            await console[0].cleanup()


async def _start_console(settings: Settings) -> tuple[Any, str]:
    """Serve the console in this process (the supervisor's event loop); its runner and address.
    A taken port is not worth failing the fleet for: any free one is used instead."""
    from shared.tools.console.serve import start_console

    try:
        return await start_console(settings, local=True)
    except OSError as exc:
        if settings.ui_port == 0:
            raise
        runner, url = await start_console(settings, port=0, local=True)
        click.echo(f"console: port {settings.ui_port} is taken ({exc.strerror}); serving on {url}", err=True)
        return runner, url


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


async def _spawn_worker(
    env: dict[str, str], domain: str, consumer: str, urls: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """Start one worker process; with ``urls`` (probes on) it gets a free metrics port of its
    own, recorded there by consumer name (``metrics`` in up.json)."""
    env = {**env, "FLEET_CONSUMER_NAME": consumer}
    if urls is not None:
        settings = Settings()
        port = _free_port(settings.metrics_host)
        env["FLEET_METRICS_PORT"] = str(port)
        urls[consumer] = f"http://{settings.metrics_host}:{port}"
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.tools.cli.main",
        "worker",
        domain,
        "--transport",
        "redis",
        env=env,
        # Workers get SIGTERM from us, not Ctrl-C from the terminal: we order the drain.
        start_new_session=True,
    )


async def _autoscaled(
    settings: Settings,
    url: str,
    domains: list[str],
    env: dict[str, str],
    embedded: bool,
    where: str,
    stop: asyncio.Event,
    ui_url: str | None = None,
) -> None:
    from shared.tools.scaling.autoscaler import Autoscaler
    from shared.transports.redis import connect

    redis = connect(url)
    scaler: Autoscaler | None = None
    urls: dict[str, str] | None = {} if settings.metrics_port else None

    def changed() -> None:
        if scaler is not None:
            _write_state(settings, url, scaler.processes(), embedded, urls, ui_url)

    async def spawn(domain: str, consumer: str) -> Any:
        return await _spawn_worker(env, domain, consumer, urls)

    try:
        scaler = Autoscaler(settings, [get_domain(d) for d in domains], redis, spawn, on_change=changed)
        changed()
        lines = []
        for name, pool in scaler.pools.items():
            spec = pool.spec
            lines.append(
                f"  {name:<10} 0 processes (min {spec.min_replicas}, max {spec.max_replicas})  "
                f"topic {settings.topic_for(name)}\n"
            )
        click.echo(
            f"fleet up: broker {url} ({where}); workers start when requests arrive\n"
            + "".join(lines)
            + f"  results on {settings.results_topic}; state in {settings.state_file}\n"
            + _console_line(ui_url)
            + "watch: fleet status --watch\n"
            + 'try:  fleet invoke system/echo --input \'{"hello": "world"}\'   (Ctrl-C stops)',
            err=True,
        )
        await scaler.run(stop)
        click.echo("workers drained", err=True)
    finally:
        await redis.aclose()


async def _one_per_domain(
    settings: Settings,
    url: str,
    domains: list[str],
    env: dict[str, str],
    embedded: bool,
    where: str,
    stop: asyncio.Event,
    ui_url: str | None = None,
) -> None:
    procs: dict[str, asyncio.subprocess.Process] = {}
    # Deterministic (the delay is printed); each domain's crashes wait longer and longer.
    backoff = {d: Backoff(RESTART_BACKOFF_INITIAL, RESTART_BACKOFF_MAX, jitter=0) for d in domains}
    urls: dict[str, str] | None = {} if settings.metrics_port else None

    async def spawn(domain: str) -> None:
        procs[domain] = await _spawn_worker(env, domain, f"{settings.consumer_name}-{domain}", urls)

    def state() -> dict[str, dict[str, int]]:
        return {d: {f"{settings.consumer_name}-{d}": p.pid} for d, p in procs.items()}

    for domain in domains:
        await spawn(domain)
    _write_state(settings, url, state(), embedded, urls, ui_url)
    click.echo(
        f"fleet up: broker {url} ({where}); one worker per domain (--no-autoscale)\n"
        + "".join(f"  worker {d:<10} pid {procs[d].pid}  topic {settings.topic_for(d)}\n" for d in domains)
        + f"  results on {settings.results_topic}; state in {settings.state_file}\n"
        + _console_line(ui_url)
        + 'try:  fleet invoke system/echo --input \'{"hello": "world"}\'   (Ctrl-C stops)',
        err=True,
    )
    while not stop.is_set():
        waits = {asyncio.ensure_future(p.wait()): d for d, p in procs.items()}
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait([stopper, *waits], return_when=asyncio.FIRST_COMPLETED)
        for fut in waits:
            fut.cancel()
        stopper.cancel()
        if stop.is_set():
            break
        for fut in done:
            exited = waits.get(fut)
            if exited is None:
                continue
            domain = exited
            code = procs[domain].returncode
            delay = backoff[domain].next()
            click.echo(f"worker {domain} exited with {code}; restarting in {delay:g}s", err=True)
            await asyncio.sleep(delay)
            if not stop.is_set():
                await spawn(domain)
                _write_state(settings, url, state(), embedded, urls, ui_url)
    click.echo("draining workers...", err=True)
    for proc in procs.values():
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    grace = settings.shutdown_timeout + 5
    try:
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs.values())), grace)
    except TimeoutError:
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
        await asyncio.gather(*(p.wait() for p in procs.values()))


def _console_line(ui_url: str | None) -> str:
    return f"  console: {ui_url}\n" if ui_url else ""


def _write_state(
    settings: Settings,
    url: str,
    workers: dict[str, dict[str, int]],
    embedded: bool,
    urls: dict[str, str] | None = None,
    ui_url: str | None = None,
) -> None:
    running = {consumer for by_consumer in workers.values() for consumer in by_consumer}
    state = {
        # The command people and scripts signal (it relays to this supervisor, "supervisor_pid").
        "pid": os.getppid() if os.environ.get(_SUPERVISOR_ENV) == "1" else os.getpid(),
        "supervisor_pid": os.getpid(),
        "redis_url": url,
        "embedded_broker": embedded,
        "database_url": settings.database_url,
        # Domain → consumer name → pid of the worker processes running now.
        "workers": workers,
        # Consumer name -> its /healthz, /readyz and /metrics (FLEET_METRICS_PORT per process).
        "metrics": {c: u for c, u in (urls or {}).items() if c in running},
        # The web console this process serves (None: `--no-ui`).
        "ui_url": ui_url,
        "started_at": time.time(),
    }
    tmp = settings.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(settings.state_file)
