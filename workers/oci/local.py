"""The local backend: an OCI function's ``command`` as a subprocess (the default under `fleet up`).

Same protocol and error codes as the Kubernetes backend (``workers/oci/protocol.py``):

* the command runs in ``working_dir`` (a directory on this machine; unset: a fresh temporary
  directory) in its own process group, stdin closed;
* its environment is built from scratch — ``PATH`` and locale variables of the worker, ``HOME``
  and ``TMPDIR`` pointing at a per-run temporary directory, the function's ``container_env``,
  its credentials (as environment variables named by :func:`credential_env`, never on the command
  line) and ``INPUT`` / ``FLEET_*``. Nothing else of the worker's environment leaks in;
* on timeout, and when the execution is cancelled, the whole process group is killed
  (SIGTERM, then SIGKILL after a short grace) and reaped before the call returns;
* an image without ``command`` cannot run here: ``backend_unavailable`` (not retryable).

There is no isolation beyond a separate process: the local backend is for development.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import structlog

from shared.functions import ExecutionContext
from shared.settings import Settings
from workers.oci.protocol import (
    OciFunction,
    RunOutcome,
    backend_unavailable,
    credential_env,
    function_env,
    interpret,
    run_secrets,
)

__all__ = ["LocalBackend"]

log = structlog.get_logger("fleet.oci.local")

#: Worker variables a local function inherits (everything else is built from scratch).
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT")
#: Most stdout kept (the result line is the last one; earlier bytes are dropped first).
MAX_STDOUT = 8 * 1024 * 1024
#: Most stderr kept (the log tail).
MAX_STDERR = 256 * 1024
#: Seconds between SIGTERM and SIGKILL of a timed-out or cancelled function.
KILL_GRACE = 2.0


async def _read_tail(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Everything ``stream`` yields, keeping only the last ``limit`` bytes."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        kept += chunk
        if len(kept) > limit:
            del kept[: len(kept) - limit]
    return bytes(kept)


class LocalBackend:
    """Runs OCI functions as local subprocesses (see module docstring)."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def close(self) -> None:
        """Nothing to release (each run owns its process)."""

    async def run(self, fn: OciFunction, input_json: str, ctx: ExecutionContext) -> dict[str, Any]:
        """Run ``fn`` once with ``input_json``; its output, or an ``ExecutionFailed``."""
        if not fn.command:
            raise backend_unavailable(
                f"{fn.slug} has no command: the local backend runs a function's command as a subprocess "
                f"and cannot run the image {fn.image_ref!r} by itself; register a command (and a local "
                "working_dir) or use FLEET_OCI_BACKEND=kubernetes",
                retryable=False,
                backend=self.name,
                image=fn.image_ref,
            )
        if fn.working_dir is not None and not await asyncio.to_thread(Path(fn.working_dir).is_dir):
            raise backend_unavailable(
                f"{fn.slug}'s working_dir {fn.working_dir!r} is not a directory on this machine; the local "
                "backend runs the command there (register the function with its local checkout, e.g. the "
                "function.local.yaml `fleet new` writes)",
                retryable=False,
                backend=self.name,
                working_dir=fn.working_dir,
            )
        names = credential_env(fn.credentials)
        with tempfile.TemporaryDirectory(prefix="fleet-oci-") as scratch:
            env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
            env.update({"HOME": scratch, "TMPDIR": scratch})
            env.update(function_env(fn, input_json, ctx))
            env.update({names[key]: value for key, value in ctx.credentials.items() if key in names})
            outcome = await self._run_process(fn, env, cwd=fn.working_dir or scratch)
        return interpret(fn, outcome, tail_lines=self._settings.oci_log_tail_lines, secrets=run_secrets(ctx))

    async def _run_process(self, fn: OciFunction, env: dict[str, str], cwd: str) -> RunOutcome:
        try:
            process = await asyncio.create_subprocess_exec(
                *fn.command,
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError) as exc:
            raise backend_unavailable(
                f"{fn.slug}'s command {fn.command[0]!r} cannot be started here: {exc.strerror}",
                retryable=False,
                backend=self.name,
                command=list(fn.command),
            ) from None
        assert process.stdout is not None
        assert process.stderr is not None
        readers = asyncio.gather(
            _read_tail(process.stdout, MAX_STDOUT), _read_tail(process.stderr, MAX_STDERR)
        )
        timed_out = False
        try:
            try:
                async with asyncio.timeout(fn.timeout_seconds):
                    stdout, stderr = await asyncio.shield(readers)
                    await process.wait()
            except TimeoutError:
                timed_out = True
                await asyncio.shield(self._kill(process))
                try:
                    # A descendant that left the process group may still hold the pipes open.
                    stdout, stderr = await asyncio.wait_for(asyncio.shield(readers), KILL_GRACE)
                except TimeoutError:
                    stdout, stderr = b"", b""
        finally:
            if process.returncode is None:
                # Cancelled (the runtime's timeout or a shutdown): take the process group down
                # even if we are cancelled again meanwhile.
                killer = asyncio.ensure_future(self._kill(process))
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(killer)
            if not readers.done():
                readers.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await readers
                # Pipes still held open by an escaped descendant: close our ends now rather
                # than leave the transport to the garbage collector.
                transport = getattr(process, "_transport", None)
                if transport is not None:
                    transport.close()
        out, err = stdout.decode(errors="replace"), stderr.decode(errors="replace")
        code = process.returncode
        reason = f"killed by signal {-code}" if code is not None and code < 0 else None
        return RunOutcome(
            exit_code=None if timed_out else code,
            stdout=out,
            log=err or out,
            timed_out=timed_out,
            reason=reason,
        )

    @staticmethod
    async def _kill(process: asyncio.subprocess.Process) -> None:
        """SIGTERM the process group, SIGKILL it after :data:`KILL_GRACE`, reap the process."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
            try:
                async with asyncio.timeout(KILL_GRACE):
                    await process.wait()
                # The leader is gone; make sure no child of it survives either.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                return
            except TimeoutError:
                continue
        await process.wait()
