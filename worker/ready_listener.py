"""The fast doorbell (issue 11): each signing process listens on a Redis channel for new ready requests.

A Celery message costs a new request about 5 ms between the API's commit and a worker's claim: the API's
publish, the worker's main process reading it, the hand-over to a pool process. Instead, the API first
PUBLISHes on ``shared.tasks.ready_channel`` (no payload: ids never matter, the claim takes what is ready),
and a thread in every pool process, subscribed to it, claims at once exactly as a doorbell chunk does
(``worker.issuance.issue_ready``: oldest ready single requests, ``FOR UPDATE SKIP LOCKED``, one
transaction). PUBLISH answers how many subscribers heard it; only when none did does the API fall back to
the doorbell message (``api.broker``), so a request is never left to a channel nobody listens to, and one
made while every worker is down waits on the broker for the first worker to start, as before.

Nothing here is durable, and nothing needs to be (DESIGN.md invariant 1): a ring that is heard and then
lost (the thread or its process dies mid-round) leaves the requests pending, or processing under a lease,
and the reconciler takes them again. The thread has its own event loop, database pool and CA key cache,
so it never shares one with the Celery task that its process may be running at the same time.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis

from shared.config import Settings, get_settings
from shared.tasks import is_redis, ready_channel
from worker import issuance
from worker.ca_keys import CaKeyCache
from worker.runtime import Runtime

log = logging.getLogger("kms.worker")
# After a failure (Redis or the database unreachable), the thread waits this long before it listens again.
RETRY_SECONDS = 1.0
INTERRUPTIONS: tuple[type[BaseException], ...] = (redis.RedisError, *issuance.TRANSIENT_DB)


def enabled(settings: Settings) -> bool:
    return settings.ready_listener and is_redis(settings.broker_url)


class ReadyListener:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kms-ready-listener", daemon=True)
        self._runtime: Runtime | None = None
        self._cache: CaKeyCache | None = None
        self._redis: redis.Redis | None = None
        self._channel = ready_channel(settings.broker_url)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Let the round under way finish (its requests are stored or given back), then stop listening."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except INTERRUPTIONS as exc:  # listen again after a pause; the rows wait
                log.warning("ready listener interrupted; listening again", extra={
                    "error": f"{type(exc).__name__}: {exc}"})
                self._stop.wait(RETRY_SECONDS)
            except Exception:  # a defect: said loudly, and the thread goes on (the reconciler covers its rows)
                log.exception("ready listener failed; listening again")
                self._stop.wait(RETRY_SECONDS)

    def _listen(self) -> None:
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.settings.broker_url, socket_connect_timeout=2,
                                               health_check_interval=30)
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(self._channel)
            while not self._stop.is_set():
                if pubsub.get_message(timeout=1.0) is None:
                    continue
                while pubsub.get_message(timeout=0) is not None:
                    pass  # rings heard while the last round ran: one round claims for all of them
                self._claim()
        finally:
            pubsub.close()

    def _claim(self) -> None:
        """One round of ready claims. A full one rings again first (as a doorbell chunk does): the other
        processes hear it and share the backlog, and so does this one, for its next round."""
        if self._runtime is None:
            # One round at a time, on one connection: a second PostgreSQL connection per pool process, no more.
            self._runtime = Runtime(self.settings, pool_max=1)
            self._cache = CaKeyCache(self._runtime.ca_keyring, self.settings.ca_key_cache_seconds)
        rt, cache = self._runtime, self._cache
        assert cache is not None
        rt.run(issuance.issue_ready(rt, cache, [], ring_again=self._ring))

    def _ring(self) -> None:
        try:
            if self._redis is not None:
                self._redis.publish(self._channel, b"")
        except redis.RedisError:
            pass  # the other processes wait for the next ring; the reconciler covers a lost one


_listener: ReadyListener | None = None


def start_in_this_process(**_: Any) -> None:
    """worker_process_init: every pool process (after the fork) listens."""
    global _listener
    settings = get_settings()
    if _listener is None and enabled(settings):
        _listener = ReadyListener(settings)
        _listener.start()


def stop_in_this_process(**_: Any) -> None:
    """worker_process_shutdown: a warm shutdown lets the listener's round finish first."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
