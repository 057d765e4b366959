"""``post-hooks``: a shell command run after a change, bounded by its timeout.

As upstream, the command runs with ``$SHELL -c`` (``/bin/sh`` when unset) and a 30 s timeout unless it
names one. Unlike upstream, the agent waits for it (so a hook that reloads a server has finished before
the next change), kills its whole process group when the timeout passes, logs its exit status and the
start of its output, and never hands it the client secret. The hook learns what happened from its
environment::

    KMS_AGENT_EVENT            issuance | renewal | failure
    KMS_AGENT_REASON           failure only: revoked, expired, failed (and the server's message)
    KMS_AGENT_CERTIFICATE_NAME how the logs name the certificate
    KMS_AGENT_CERTIFICATE_ID, KMS_AGENT_SERIAL_NUMBER
    KMS_AGENT_CERTIFICATE_PATH, KMS_AGENT_PRIVATE_KEY_PATH, KMS_AGENT_CHAIN_PATH (empty when not written)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
import time

from client.agent.config import Hook

log = logging.getLogger("kms.agent.hooks")
OUTPUT_LIMIT = 4096
KILL_GRACE_SECONDS = 2.0
# Never inherited by a hook: the credentials the agent logs in with.
SECRET_VARIABLES = ("INFISICAL_UNIVERSAL_CLIENT_SECRET", "INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "KMS_CLIENT_SECRET",
                    "INFISICAL_AGENT_CONFIG_BASE64")


async def run_hook(hook: Hook, environment: dict[str, str], *, certificate: str) -> int | None:
    """Runs ``hook``; returns its exit status (None when it timed out or could not start)."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARIABLES}
    env.update(environment)
    shell = os.environ.get("SHELL") or "/bin/sh"
    event = environment.get("KMS_AGENT_EVENT", "")
    started = time.monotonic()
    fields = {"certificate": certificate, "hookEvent": event}
    # Output goes to a file, not a pipe: a hook that leaves a daemon behind (which keeps its stdout)
    # has still finished when its shell exits.
    with tempfile.TemporaryFile() as output:
        try:
            proc = await asyncio.create_subprocess_exec(
                shell, "-c", hook.command, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=output,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            log.error("post-hook could not start: %s", exc, extra=fields)
            return None
        try:
            await asyncio.wait_for(proc.wait(), timeout=hook.timeout)
        except TimeoutError:
            await _kill(proc)
            log.error("post-hook timed out after %gs and was killed", hook.timeout,
                      extra={**fields, "timeoutSeconds": hook.timeout})
            return None
        except asyncio.CancelledError:
            await _kill(proc)
            raise
        output.seek(0)
        text = output.read(OUTPUT_LIMIT).decode(errors="replace").rstrip()
    elapsed = round(time.monotonic() - started, 3)
    extra = {**fields, "exitCode": proc.returncode, "seconds": elapsed, "output": text}
    if proc.returncode == 0:
        log.info("post-hook ran", extra=extra)
    else:
        log.error("post-hook failed with exit status %s", proc.returncode, extra=extra)
    return proc.returncode


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """The hook's whole process group: a shell's children (``sleep``, a reload script) too."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), timeout=KILL_GRACE_SECONDS)
            return
        except TimeoutError:
            continue
