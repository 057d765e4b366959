"""``kms-pki agent --config FILE [--once] [--verbose]``: every configured certificate, each in a loop of
its own, until SIGTERM or SIGINT (exit 0).

While the API cannot be reached (no answer, 5xx, 429) a certificate's loop waits and tries again with
exponential backoff and jitter (``infisical.retry-strategy``: ``base-delay`` 2 s doubling up to
``max-delay`` 5 min, each wait drawn between half and all of that, never shorter than a ``Retry-After``),
and its files stay as they are. A final answer (a refused or failed request, a revoked certificate) is
retried every ``failure-retry-interval``, at most ``max-failure-retries`` times.

``--once`` does what is due now for each certificate (issue, renew, follow, replace), waits for it, and
exits; an unreachable API is tried ``retry-strategy.max-retries`` times (default 3). Exit codes (with
several certificates, the highest of theirs):

    0 every certificate is on disk, valid, unrevoked and made for its config
    1 an unexpected error          2 the config is unusable          3 the identity cannot log in
    4 the API could not be reached 5 a request was refused or failed 6 revoked or expired, not replaced
    7 a request was still pending after ``--wait`` seconds (default 120)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from pathlib import Path

from client.agent import logs
from client.agent.certificate import CertificateAgent, Refused
from client.agent.config import AgentConfig, ConfigError, RetryStrategy, read_config
from client.agent.logs import Named
from client.agent.session import AuthError, Session, Unreachable
from client.agent.store import StoreError

log = logging.getLogger("kms.agent")
EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_AUTH, EXIT_UNREACHABLE, EXIT_REFUSED, EXIT_REVOKED, EXIT_PENDING = range(8)
KIND_EXIT = {"failed": EXIT_REFUSED, "revoked": EXIT_REVOKED, "expired": EXIT_REVOKED, "pending": EXIT_PENDING}
MAX_SLEEP_SECONDS = 60.0  # the files on disk are looked at at least this often
MAX_STEPS_ONCE = 20
MAX_STEPS_AT_ONCE = 10
ONCE_WAIT_SECONDS = 120.0


def main(config_path: Path | None, *, once: bool, verbose: bool, once_wait: float = ONCE_WAIT_SECONDS) -> int:
    logs.configure(verbose)
    try:
        config = read_config(config_path)
    except ConfigError as exc:
        log.error("the config cannot be used: %s", exc, extra={"config": str(config_path), "exitCode": EXIT_CONFIG})
        return EXIT_CONFIG
    log.info("agent starting", extra={"address": config.address, "version": config.version, "once": once,
                                      "certificates": [c.name for c in config.certificates]})
    if config.ignored:
        log.warning("these keys of the upstream agent's config are not used here", extra={"ignored": config.ignored})
    try:
        return asyncio.run(run(config, once_wait=once_wait if once else None))
    except KeyboardInterrupt:
        return EXIT_OK


async def run(config: AgentConfig, *, once_wait: float | None) -> int:
    """Every certificate's loop until a signal; with ``once_wait`` (``--once``) one pass, whose exit code
    it returns."""
    async with Session(config) as session:
        agents = [CertificateAgent(c, session, once_wait=once_wait) for c in config.certificates]
        if once_wait is not None:
            codes = await asyncio.gather(*(run_once(a, config.retry) for a in agents))
            code = max(codes)
            log.info("agent done", extra={"exitCode": code})
            return code
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tasks = [asyncio.create_task(run_forever(a, config.retry, stop)) for a in agents]
        await stop.wait()
        log.info("agent stopping")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        log.info("agent stopped")
        return EXIT_OK


class Backoff:
    def __init__(self, retry: RetryStrategy) -> None:
        self.retry = retry
        self.attempts = 0

    def next(self, retry_after: float | None = None) -> float:
        self.attempts += 1
        ceiling = min(self.retry.max_delay, self.retry.base_delay * 2 ** (self.attempts - 1))
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after:
            delay = max(delay, min(retry_after, self.retry.max_delay))
        return delay


async def run_forever(agent: CertificateAgent, retry: RetryStrategy, stop: asyncio.Event) -> None:
    backoff = Backoff(retry)
    named = Named(log, certificate=agent.config.name)
    at_once = 0  # steps in a row that had more to do at once
    while not stop.is_set():
        try:
            delay = await agent.step()
            at_once = at_once + 1 if delay <= 0 else 0
            if at_once > MAX_STEPS_AT_ONCE:
                # Never a busy loop, whatever the cause: a few steps in a row are normal (send, wait, write).
                named.warning("still due after several steps in a row; pausing", extra={"steps": at_once})
                delay = 1.0
            if backoff.attempts:
                named.info("the API answers again", extra={"failedAttempts": backoff.attempts})
                backoff = Backoff(retry)
        except Unreachable as exc:
            delay = backoff.next(exc.retry_after)
            named.warning("the API cannot be reached; the files on disk stay as they are",
                          extra={"error": str(exc), "attempt": backoff.attempts, "retryInSeconds": round(delay, 2)})
        except AuthError as exc:
            delay = backoff.next()
            named.error(str(exc), extra={"attempt": backoff.attempts, "retryInSeconds": round(delay, 2)})
        except (Refused, StoreError) as exc:
            try:
                delay = await agent.record_failure(exc)
            except StoreError as again:
                named.error(str(again))
                delay = backoff.next()
        except Exception:
            delay = backoff.next()
            named.exception("unexpected error", extra={"retryInSeconds": round(delay, 2)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=min(delay, MAX_SLEEP_SECONDS))


async def run_once(agent: CertificateAgent, retry: RetryStrategy) -> int:
    backoff = Backoff(retry)
    named = Named(log, certificate=agent.config.name)
    try:
        for _ in range(MAX_STEPS_ONCE):
            try:
                if await agent.step() > 0:
                    break
            except Unreachable as exc:
                if backoff.attempts >= retry.max_retries:
                    named.error("the API cannot be reached; the files on disk stay as they are",
                                extra={"error": str(exc), "attempts": backoff.attempts + 1,
                                       "exitCode": EXIT_UNREACHABLE})
                    return EXIT_UNREACHABLE
                delay = backoff.next(exc.retry_after)
                named.warning("the API cannot be reached; trying again",
                              extra={"error": str(exc), "attempt": backoff.attempts, "retryInSeconds": round(delay, 2)})
                await asyncio.sleep(delay)
    except AuthError as exc:
        named.error(str(exc), extra={"exitCode": EXIT_AUTH})
        return EXIT_AUTH
    except (Refused, StoreError) as exc:
        code = KIND_EXIT.get(exc.kind, EXIT_REFUSED) if isinstance(exc, Refused) else EXIT_REFUSED
        try:
            await agent.record_failure(exc)
        except StoreError as again:
            named.error(str(again))
        named.error("not done: %s", exc, extra={"exitCode": code})
        return code
    except Exception:
        named.exception("unexpected error", extra={"exitCode": EXIT_ERROR})
        return EXIT_ERROR
    problem = agent.healthy()
    if problem is not None:
        code = KIND_EXIT.get(problem.kind, EXIT_REFUSED)
        named.error("not done: %s", problem, extra={"exitCode": code})
        return code
    installed = agent.current()
    assert installed is not None
    named.info("the certificate on disk is valid", extra={"serialNumber": installed.meta.get("serialNumber"),
                                                          "notAfter": installed.meta.get("notAfter"), "exitCode": 0})
    return EXIT_OK
